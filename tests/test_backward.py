"""Each backward mode pinned to its definition (issue 2, section 5)."""
import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import tables
from fdgpu.reference import color, sampling
from fdgpu.reference.dct import block_dct, block_idct, blocks_to_plane, fdct_islow, idct_islow, plane_to_blocks
from fdgpu.reference.jpeg import Geometry
from fdgpu.reference.quantize import round_half_away

SUBS = list(fdgpu.SUBSAMPLINGS)
MODES = list(fdgpu.BACKWARDS)


# ---------------------------------------------------------------- an independent evaluation of L (numpy + scipy)
def _L_numpy(x: np.ndarray, subsampling: str) -> np.ndarray:
    """The pipeline with every rounding and clamp removed, written from the JFIF / libjpeg definitions:
    (C, H, W) float64 -> (C, H, W)."""
    from scipy.fft import dctn, idctn

    c, h, w = x.shape
    hs, vs = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}[subsampling] if c == 3 else (1, 1)
    hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
    hc, wc = -(-h // vs), -(-w // hs)

    def codec(p):  # DCT, (identity) quantization, IDCT on every block of a padded plane
        b = p.reshape(p.shape[0] // 8, 8, p.shape[1] // 8, 8).transpose(0, 2, 1, 3)
        r = idctn(dctn(b - 128, norm="ortho", axes=(2, 3)), norm="ortho", axes=(2, 3)) + 128
        return r.transpose(0, 2, 1, 3).reshape(p.shape)

    u = np.pad(255.0 * x, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
    if c == 1:
        return codec(u[0])[None, :h, :w] / 255
    m = np.array([[0.299, 0.587, 0.114], [-0.16874, -0.33126, 0.5], [0.5, -0.41869, -0.08131]])
    ycc = np.einsum("ck,khw->chw", m, u) + np.array([0, 128, 128])[:, None, None]
    y = codec(ycc[0])[:h, :w]
    ch = ycc[1:, : hc * vs].reshape(2, hc, vs, wp // hs, hs).mean(axis=(2, 4))
    ch = np.pad(ch, ((0, 0), (0, hp // vs - hc), (0, 0)), mode="edge")
    ch = np.stack([codec(p) for p in ch])[:, :hc, :wc]
    up = np.zeros((2, hc * vs, wc * hs))
    for k in range(2):
        for i in range(hc * vs):
            for j in range(wc * hs):
                if hs == 1:
                    up[k, i, j] = ch[k, i, j]
                    continue
                ci, cj = i // vs, j // hs
                if wc <= 2:  # libjpeg-turbo replicates narrow planes
                    up[k, i, j] = ch[k, ci, cj]
                    continue
                fj = min(max(cj + (1 if j % 2 else -1), 0), wc - 1)
                if vs == 1:
                    up[k, i, j] = 0.75 * ch[k, ci, cj] + 0.25 * ch[k, ci, fj]
                else:
                    fi = min(max(ci + (1 if i % 2 else -1), 0), hc - 1)
                    up[k, i, j] = (9 * ch[k, ci, cj] + 3 * ch[k, fi, cj] + 3 * ch[k, ci, fj] + ch[k, fi, fj]) / 16
    cb, cr = up[0, :h, :w] - 128, up[1, :h, :w] - 128
    rgb = np.stack([y + 1.402 * cr, y - 0.34414 * cb - 0.71414 * cr, y + 1.772 * cb])
    return rgb / 255


def _ste_vjp(v: torch.Tensor, subsampling: str) -> torch.Tensor:
    x = torch.rand(v.shape, dtype=torch.float64, requires_grad=True)
    fdgpu.jpeg(x, 50, subsampling=subsampling, backward="ste").backward(v)
    return x.grad


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 6, 9), (3, 9, 6), (3, 4, 4)], ids=lambda s: "x".join(map(str, s)))
def test_ste_is_the_transpose_of_L_full_jacobian(subsampling, shape):
    """Build the Jacobian of the independent numpy L column by column and compare with our VJP row by row."""
    n_in = int(np.prod(shape))
    basis = np.eye(n_in).reshape(n_in, *shape)
    jac = np.stack([_L_numpy(b, subsampling).ravel() for b in basis], axis=1)  # [out, in]
    g = torch.Generator().manual_seed(0)
    v = torch.randn((2,) + shape, generator=g, dtype=torch.float64)
    ours = _ste_vjp(v, subsampling)
    for k in range(2):
        np.testing.assert_allclose(ours[k].numpy().ravel(), jac.T @ v[k].numpy().ravel(), atol=1e-10)


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(3, 37, 53), (3, 17, 33), (3, 1, 1), (1, 13, 21)],
                         ids=lambda s: "x".join(map(str, s)))
def test_ste_adjoint_identity(subsampling, shape):
    """<L^T v, u> = <v, L u> with L evaluated independently (numpy/scipy) on larger odd shapes."""
    g = torch.Generator().manual_seed(1)
    u = torch.randn(shape, generator=g, dtype=torch.float64)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    lhs = float((torch.from_numpy(_L_numpy(u.numpy(), subsampling)) * v).sum())
    rhs = float((_ste_vjp(v.unsqueeze(0), subsampling)[0] * u).sum())
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


# ---------------------------------------------------------------- soft: gradcheck of the surrogate pipeline
class _Chain:
    """Builds the surrogate pipeline: every rounding/clamp (and the integer DCTs) is replaced by its linear map plus
    the offset it had at x0 (straight-through, frozen), coefficient rounding by round(z0) + (z - round(z0))**3 (Shin &
    Song), where z0 is the integer forward DCT's coefficient over 8Q, as libjpeg-turbo's quantizer sees it."""

    def __init__(self):
        self.offsets, self.replay, self.i = [], False, 0

    def _next(self, make):
        if not self.replay:
            self.offsets.append(make())
        self.i += 1
        return self.offsets[self.i - 1]

    def st(self, exact_fn, linear_fn, a):
        off = self._next(lambda: (exact_fn(a) - linear_fn(a)).detach())
        return linear_fn(a) + off

    def soft(self, z):
        r0 = self._next(lambda: round_half_away(z).detach())
        return r0 + (z - r0) ** 3

    def codec(self, p, t):
        """Blocks of one plane ``p`` through DCT, quantization with table ``t`` and IDCT. z is the integer DCT
        output over 8Q (what the quantizer divides), differentiated as the orthonormal DCT over Q."""
        q = t.reshape(-1, 1, 64, 1, 1)
        z = self.st(lambda a: plane_to_blocks(fdct_islow(a)) / (8 * q), lambda a: block_dct(a - 128) / q, p)
        return self.decode(self.soft(z) * q)

    def decode(self, c):
        # the integer IDCT with its range limit, straight-through around the orthonormal one
        return self.st(lambda a: idct_islow(blocks_to_plane(round_half_away(a))), lambda a: block_idct(a) + 128, c)

    def run(self, x, lt, ct, subsampling):
        self.i = 0
        n, ch, h, w = x.shape
        g = Geometry.of(h, w, ch, subsampling)
        u = self.st(lambda a: (a * 255 + 0.5).floor().clamp(0, 255), lambda a: a * 255, x)
        u = sampling.pad_replicate(u, g.hp, g.wp)
        if ch == 1:
            return self.codec(u, lt)[..., :h, :w] / 255
        ycc = self.st(color.rgb_to_ycbcr, color.rgb_to_ycbcr_linear, u)
        chroma = self.st(lambda a: sampling.downsample(a, g.hs, g.vs, True),
                         lambda a: sampling.downsample(a, g.hs, g.vs, False), ycc[:, 1:, : g.hc * g.vs])
        chroma = sampling.pad_replicate(chroma, g.hp // g.vs, g.wp // g.hs)
        y = self.codec(ycc[:, :1], lt)[..., :h, :w]
        c = self.codec(chroma, ct)[..., : g.hc, : g.wc]
        c = self.st(lambda a: sampling.upsample(a, g.hs, g.vs, h, w, True),
                    lambda a: sampling.upsample(a, g.hs, g.vs, h, w, False), c)
        yc = torch.cat([y, c], dim=1)
        rgb = self.st(lambda a: color.ycbcr_to_rgb(a[:, 0], a[:, 1:], True),
                      lambda a: color.ycbcr_to_rgb(a[:, 0], a[:, 1:], False), yc)
        return rgb / 255


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(1, 3, 9, 11), (2, 1, 7, 10)], ids=["rgb", "gray"])
def test_soft_matches_gradcheck_of_the_surrogate(subsampling, shape):
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64)
    lt, ct = tables.ijg(30)
    lt, ct = lt.double(), ct.double()
    chain = _Chain()
    chain.run(x0, lt, ct, subsampling)  # record the offsets at x0
    chain.replay = True

    def surrogate(x):
        return chain.run(x, lt, ct, subsampling)

    xs = x0.clone().requires_grad_()
    assert torch.autograd.gradcheck(surrogate, (xs,), eps=1e-6, atol=1e-7, rtol=1e-5)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad(surrogate(xs), xs, v)
    xl = x0.clone().requires_grad_()
    fdgpu.requantize(xl, lt, ct, subsampling=subsampling, backward="soft").backward(v)
    torch.testing.assert_close(xl.grad, expected, atol=1e-10, rtol=1e-8)
    # and it really differs from ste (the rounding weights matter)
    assert not torch.allclose(xl.grad, _ste_vjp(v, subsampling))


# ---------------------------------------------------------------- bpda and exact
@pytest.mark.parametrize("subsampling", SUBS)
def test_bpda_is_identity(subsampling):
    x = torch.rand(2, 3, 13, 17, requires_grad=True)
    v = torch.randn(2, 3, 13, 17)
    fdgpu.jpeg(x, 40, subsampling=subsampling, backward="bpda").backward(v)
    assert torch.equal(x.grad, v)


def test_bpda_identity_keeps_dtype():
    x = torch.rand(1, 3, 8, 8, dtype=torch.float16, requires_grad=True)
    v = torch.randn(1, 3, 8, 8, dtype=torch.float16)
    fdgpu.feature_distillation(x, 1.0, backward="bpda").backward(v)
    assert x.grad.dtype == torch.float16 and torch.equal(x.grad, v)


@pytest.mark.parametrize("subsampling", SUBS)
def test_exact_is_autograd_of_the_forward_and_masks(subsampling):
    """'exact' differentiates the forward as computed; every path goes through a rounding, so the gradient is 0."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 11, 19, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 11, 19, generator=g, dtype=torch.float64)
    y = fdgpu.jpeg(x, 60, subsampling=subsampling, backward="exact")
    assert y.grad_fn is not None and "JPEGFunction" not in type(y.grad_fn).__name__
    (gx,) = torch.autograd.grad(y, x, v)
    assert torch.equal(gx, torch.zeros_like(gx))
    for mode in ("ste", "soft", "bpda"):
        assert torch.equal(fdgpu.jpeg(x.detach(), 60, subsampling=subsampling, backward=mode), y.detach())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("quality", [1, 100])
def test_no_nan_or_inf_gradients(mode, quality):
    for fill in ("rand", "zeros", "ones", "half"):
        x = {"rand": torch.rand(2, 3, 19, 23), "zeros": torch.zeros(2, 3, 19, 23), "ones": torch.ones(2, 3, 19, 23),
             "half": torch.full((2, 3, 19, 23), 127.5 / 255)}[fill].requires_grad_()
        y = fdgpu.jpeg(x, quality, backward=mode)
        y.backward(torch.randn_like(y))
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all(), (mode, quality, fill)


def test_forward_identical_in_all_modes():
    x = torch.rand(3, 3, 21, 30)
    outs = [fdgpu.feature_distillation(x, 2.0, backward=m) for m in MODES]
    for o in outs[1:]:
        assert torch.equal(o, outs[0])

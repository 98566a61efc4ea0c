"""Gradients with respect to the quantization tables and the quality (issue 9, item 3), in every backward mode."""
import pytest
import torch

import fdgpu
from fdgpu import tables
from fdgpu.reference.dct import block_dct, fdct_islow, plane_to_blocks

from .test_backward import _Chain as _XChain


class _Chain(_XChain):
    """tests/test_backward.py's frozen surrogate pipeline, with the quotient's dependence on the tables made exact:
    ``z = t / 8Q`` with the integer DCT output ``t`` (not Q) frozen, so ``dz/dQ = -z/Q`` as in the definition of
    the table gradient (the parent freezes ``z``'s offset from the float DCT over ``Q`` instead, which is right for
    ``x`` but adds the offset's missing ``1/Q`` to ``dz/dQ``)."""

    def codec(self, p, t):
        q = t.reshape(-1, 1, 64, 1, 1)
        c = self.st(lambda a: plane_to_blocks(fdct_islow(a)) / 8, lambda a: block_dct(a - 128), p)
        return self.decode(self.soft(c / q) * q)


SUBS = list(fdgpu.SUBSAMPLINGS)
BASE = {"luma": torch.tensor(tables.STD_LUMA, dtype=torch.float64),
        "chroma": torch.tensor(tables.STD_CHROMA, dtype=torch.float64)}


class _SteChain(_Chain):
    """The same frozen pipeline with LSQ's quantizer ``Q * round_ste(c / Q)`` (Esser et al. 2020): autograd of it
    gives d c'/d Q = round(z) - z, an evaluation independent of the layer's explicit adjoint."""

    def soft(self, z):
        r0 = self._next(lambda: z.detach().sign() * (z.detach().abs() + 0.5).floor())
        return z + (r0 - z).detach()


def _setup(shape, per_image, seed=0, quality=30):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64)
    lt, ct = (t.double() for t in tables.ijg(quality))
    if per_image:  # different tables per image
        lt = lt * torch.linspace(0.8, 1.3, shape[0], dtype=torch.float64).view(-1, 1, 1)
        ct = ct * torch.linspace(1.2, 0.9, shape[0], dtype=torch.float64).view(-1, 1, 1)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    return x0, lt, ct, v


def _chain_grads(chain_cls, x0, lt, ct, v, subsampling, check=False):
    chain = chain_cls()
    chain.run(x0, lt, ct, subsampling)  # record the frozen offsets at (x0, tables)
    chain.replay = True
    lr, cr = lt.clone().requires_grad_(), ct.clone().requires_grad_()
    if check:
        # fast_mode: the Jacobian checked along random directions (a few evaluations instead of 2 per entry)
        assert torch.autograd.gradcheck(lambda a, b: chain.run(x0, a, b, subsampling), (lr, cr), eps=1e-6,
                                        atol=1e-7, rtol=1e-5, fast_mode=True)
    return torch.autograd.grad(chain.run(x0, lr, cr, subsampling), (lr, cr), v, allow_unused=True)


def _layer_grads(mode, x0, lt, ct, v, subsampling):
    lr, cr = lt.clone().requires_grad_(), ct.clone().requires_grad_()
    y = fdgpu.requantize(x0, lr, cr, subsampling=subsampling, backward=mode)
    return torch.autograd.grad(y, (lr, cr), v, allow_unused=True)


@pytest.mark.parametrize("per_image", [False, True], ids=["shared", "per-image"])
@pytest.mark.parametrize("subsampling", SUBS)
def test_soft_table_grad_matches_gradcheck_of_the_surrogate(subsampling, per_image):
    x0, lt, ct, v = _setup((2, 3, 11, 19), per_image)
    expected = _chain_grads(_Chain, x0, lt, ct, v, subsampling, check=not per_image and subsampling == "4:2:0")
    got = _layer_grads("soft", x0, lt, ct, v, subsampling)
    for name, a, b in zip(("luma", "chroma"), got, expected):
        assert a.shape == lt.shape
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=name)
        assert a.abs().sum() > 0, name


@pytest.mark.parametrize("per_image", [False, True], ids=["shared", "per-image"])
@pytest.mark.parametrize("subsampling", SUBS)
def test_ste_table_grad_is_lsq(subsampling, per_image):
    x0, lt, ct, v = _setup((2, 3, 13, 10), per_image, seed=1)
    expected = _chain_grads(_SteChain, x0, lt, ct, v, subsampling)
    got = _layer_grads("ste", x0, lt, ct, v, subsampling)
    for name, a, b in zip(("luma", "chroma"), got, expected):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8, msg=name)
        assert a.abs().sum() > 0, name
    # and the soft estimate is a different one
    assert not torch.allclose(got[0], _layer_grads("soft", x0, lt, ct, v, subsampling)[0])


def test_grayscale_uses_only_the_luma_table():
    x0, lt, ct, v = _setup((2, 1, 9, 12), False, seed=2)
    gl, gc = _layer_grads("soft", x0, lt, ct, v, "4:2:0")
    el, _ = _chain_grads(_Chain, x0, lt, ct, v, "4:2:0")
    torch.testing.assert_close(gl, el, atol=1e-10, rtol=1e-8)
    assert torch.equal(gc, torch.zeros_like(gc))


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_per_image_tables_give_per_image_grads(mode):
    x0, lt, ct, v = _setup((3, 3, 16, 16), True, seed=3)
    gl, gc = _layer_grads(mode, x0, lt, ct, v, "4:2:0")
    for b in range(3):
        ol, oc = _layer_grads(mode, x0[b:b + 1], lt[b], ct[b], v[b:b + 1], "4:2:0")
        torch.testing.assert_close(gl[b], ol, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(gc[b], oc, atol=1e-12, rtol=1e-10)
    # a shared table sums them
    sl, _ = _layer_grads(mode, x0, lt[0], ct[0], v, "4:2:0")
    per = torch.stack([_layer_grads(mode, x0[b:b + 1], lt[0], ct[0], v[b:b + 1], "4:2:0")[0] for b in range(3)])
    torch.testing.assert_close(sl, per.sum(0), atol=1e-12, rtol=1e-10)


def test_exact_and_bpda_table_grads():
    x0, lt, ct, v = _setup((1, 3, 16, 16), False, seed=4)
    gl, gc = _layer_grads("exact", x0, lt, ct, v, "4:2:0")  # autograd of the forward: rounding masks everything
    assert torch.equal(gl, torch.zeros_like(gl)) and torch.equal(gc, torch.zeros_like(gc))
    lr = lt.clone().requires_grad_()
    y = fdgpu.requantize(x0, lr, ct, backward="bpda")
    assert not y.requires_grad or torch.autograd.grad(y, lr, v, allow_unused=True)[0] is None


@pytest.mark.parametrize("mode", ["ste", "soft"])
@pytest.mark.parametrize("q", [[10.0, 70.0], [37.5], 55.0], ids=["per-image", "one", "0-d"])
def test_quality_grad_through_the_ijg_scaling(mode, q):
    """d loss / d q = sum over entries of d loss / d T * d T / d q, with the floors and clamps straight-through:
    dT/dq = base / 100 * (-5000 / q^2 below 50, -2 from 50)."""
    g = torch.Generator().manual_seed(5)
    qt = torch.tensor(q, dtype=torch.float64)
    n = qt.numel()
    x = torch.rand(n, 3, 16, 16, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    qr = qt.clone().requires_grad_()
    (got,) = torch.autograd.grad(fdgpu.jpeg(x, qr, backward=mode), qr, v)
    lt, ct = (t.double() for t in tables.ijg(qt))
    gl, gc = _layer_grads(mode, x, lt, ct, v, "4:2:0")
    dscale = torch.where(qt < 50, -5000.0 / qt ** 2, torch.full_like(qt, -2.0))
    per = [(grad.reshape(-1, 64) * BASE[k].reshape(1, 64) / 100).sum(1) for grad, k in ((gl, "luma"), (gc, "chroma"))]
    expected = ((per[0] + per[1]) * dscale.reshape(-1)).reshape(qt.shape)
    assert got.shape == qt.shape
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-9)
    assert (got != 0).all()


@pytest.mark.parametrize("mode", fdgpu.BACKWARDS)
@pytest.mark.parametrize("quality", [1.0, 100.0])
def test_no_nan_or_inf_in_quality_and_table_grads(mode, quality):
    for fill in (torch.rand, torch.zeros, torch.ones):
        x = fill(2, 3, 19, 23).requires_grad_()
        q = torch.full((2,), quality, requires_grad=True)
        y = fdgpu.jpeg(x, q, backward=mode)
        y.backward(torch.randn_like(y))
        assert torch.isfinite(x.grad).all()
        assert (q.grad is None) if mode == "bpda" else torch.isfinite(q.grad).all()
        lt = tables.fd(1.0).requires_grad_()
        fdgpu.requantize(x.detach(), lt, backward=mode).sum().backward() if mode != "bpda" else None
        assert mode == "bpda" or torch.isfinite(lt.grad).all()


def test_triton_table_grads_match_the_reference():
    pytest.importorskip("triton")
    from fdgpu import kernels
    if not kernels.AVAILABLE:
        pytest.skip("Triton kernels unavailable")
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 16, 16, generator=g, requires_grad=True)
    v = torch.randn(x.shape, generator=g)
    lt, ct = tables.ijg(torch.tensor([20.0, 60.0]))
    out = {}
    for backend in ("torch", "triton"):
        lr, cr = lt.clone().requires_grad_(), ct.clone().requires_grad_()
        y = fdgpu.requantize(x, lr, cr, backward="soft", backend=backend)
        out[backend] = torch.autograd.grad(y, (x, lr, cr), v)
    # the kernels reduce the table gradients themselves: the same factors, fp32 sums in another order (the
    # tolerance and its reason: tests/test_kernels.py, TABLE_GRAD_ATOL, where grad_x is compared too)
    for i in (1, 2):
        a, b = out["triton"][i], out["torch"][i]
        assert a.shape == (2, 8, 8) and torch.isfinite(a).all()
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    assert torch.isfinite(out["triton"][0]).all()

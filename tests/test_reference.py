"""Stage-by-stage checks of the torch reference against independent oracles: scipy's DCT, libjpeg's integer
formulas written out in numpy, Pillow's libjpeg-turbo decoder, and dot-product tests of every adjoint."""
import io

import numpy as np
import pytest
import torch

from fdgpu.reference import color, dct, quantize, sampling
from fdgpu.reference.color import RGB_TO_YCC_BIAS, RGB_TO_YCC_FIX, YCC_TO_RGB_FIX

from ._helpers import PIL_SUBSAMPLING

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_libjpeg_fixed_point_constants():
    # jccolor.c / jdcolor.c FIX() values
    assert RGB_TO_YCC_FIX == ((19595, 38470, 7471), (-11059, -21709, 32768), (32768, -27439, -5329))
    assert YCC_TO_RGB_FIX == ((0, 91881), (-22554, -46802), (116130, 0))


def test_block_dct_matches_scipy_and_inverts():
    sfft = pytest.importorskip("scipy.fft")
    g = torch.Generator().manual_seed(0)
    p = torch.randn(2, 24, 40, generator=g, dtype=torch.float64) * 50
    c = dct.block_dct(p)
    assert c.shape == (2, 64, 3, 5)
    blocks = p.numpy().reshape(2, 3, 8, 5, 8).transpose(0, 1, 3, 2, 4)
    ref = sfft.dctn(blocks, type=2, norm="ortho", axes=(-2, -1))      # [2, 3, 5, 8, 8]
    ours = c.numpy().reshape(2, 8, 8, 3, 5).transpose(0, 3, 4, 1, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-9, rtol=1e-12)
    np.testing.assert_allclose(dct.block_idct(c).numpy(), p.numpy(), atol=1e-9)
    np.testing.assert_allclose(dct.dct_matrix(torch.float64) @ dct.dct_matrix(torch.float64).T, np.eye(8),
                               atol=1e-12)


# ---------------------------------------------------------------- libjpeg-turbo's integer DCT and quantizer
def test_islow_constants_and_matrices():
    """The 13-bit constants are FIX(c) = round(c * 2**13); the pass matrices are 2**13 * sqrt(8) times the
    orthonormal DCT matrix (scipy) to within the rounding of those constants, and the inverse is the transpose."""
    sfft = pytest.importorskip("scipy.fft")
    for name in dir(dct):
        if name.startswith("FIX_"):
            c = float(name[4:].replace("_", "."))
            assert getattr(dct, name) == int(c * 8192 + 0.5), name
    f, gi = np.array(dct.FDCT_MATRIX), np.array(dct.IDCT_MATRIX)
    d = sfft.dct(np.eye(8), type=2, norm="ortho", axis=0)
    assert np.abs(f - 8192 * np.sqrt(8) * d).max() < 2.0
    assert np.array_equal(gi, f.T)
    assert dct.FDCT_SHIFTS == (11, 15) and dct.IDCT_SHIFTS == (11, 18)


def _descale_int(v, n):
    return (v + (1 << (n - 1))) >> n


def _butterfly_2d(blocks, pass_1d, first_axis, shifts):
    """The 1-D butterflies run on int64 tensors with integer shifts, as libjpeg runs them: (B, 8, 8) -> (B, 8, 8)."""
    def run(b, axis, n):
        cols = [b.select(axis, k) for k in range(8)]
        return torch.stack([_descale_int(v, n) for v in pass_1d(cols)], dim=axis)
    b = run(blocks, first_axis, shifts[0])
    return run(b, 3 - first_axis, shifts[1])


def test_islow_matmul_passes_equal_integer_butterflies():
    """The matmul passes (float32 split halves, float64; any BLAS order) give exactly the int64 butterflies,
    extremes included."""
    g = torch.Generator().manual_seed(5)
    p = torch.randint(0, 256, (6, 8, 8), generator=g)
    p[0], p[1] = 0, 255
    p[2] = torch.tensor([0, 255] * 4).repeat(8, 1)
    p[3] = p[2].t()
    planes = p.view(2, 3, 8, 8).permute(0, 2, 1, 3).reshape(2, 8, 24)        # blocks side by side
    ours = dct.fdct_islow(planes.float())                                      # [2, 8, 24] coefficient plane
    ref = _butterfly_2d(p - 128, dct.islow_fdct_1d, 2, dct.FDCT_SHIFTS)        # rows (axis 2) first
    assert torch.equal(ours.view(2, 8, 3, 8).permute(0, 2, 1, 3).reshape(6, 8, 8), ref.float())
    c = torch.randint(-2048, 2049, (6, 8, 8), generator=g)
    c[1] = 0
    c[1, 0, 0] = -2048
    c[2] = 2048 * torch.tensor([1, -1] * 4).repeat(8, 1) * torch.tensor([1, -1] * 4).view(8, 1)
    ours = dct.idct_islow(c.view(2, 3, 8, 8).permute(0, 2, 1, 3).reshape(2, 8, 24).float())
    ref = (_butterfly_2d(c, dct.islow_idct_1d, 1, dct.IDCT_SHIFTS) + 128).clamp(0, 255)  # columns first
    assert torch.equal(ours.view(2, 8, 3, 8).permute(0, 2, 1, 3).reshape(6, 8, 8), ref.double())


def test_fdct_islow_is_8x_the_orthonormal_dct():
    """Sanity against scipy: the integer transform is 8x the real DCT to within its fixed-point error."""
    sfft = pytest.importorskip("scipy.fft")
    g = torch.Generator().manual_seed(6)
    p = torch.randint(0, 256, (4, 16, 24), generator=g).float()
    ours = dct.fdct_islow(p).numpy().reshape(4, 2, 8, 3, 8).transpose(0, 1, 3, 2, 4)
    ref = 8 * sfft.dctn((p.numpy() - 128).reshape(4, 2, 8, 3, 8).transpose(0, 1, 3, 2, 4), norm="ortho",
                        axes=(-2, -1))
    assert np.abs(ours - ref).max() < 3.0


def _libjpeg_reciprocal(t, q):
    """jcdctmgr.c's compute_reciprocal + quantize for divisor 8 q (16-bit DCTELEM), written out in numpy int64."""
    d = 8 * q
    r = 16 + d.bit_length() - 1
    fq, fr = divmod(1 << r, d)
    corr = d // 2
    if fr == 0:
        fq, r = fq >> 1, r - 1
    elif fr <= d // 2:
        corr += 1
    else:
        fq += 1
    mag = ((np.abs(t) + corr) * fq) >> r
    return np.where(t < 0, -mag, mag)


def test_quantizer_equals_libjpeg_reciprocal_for_every_step():
    """Every step 1..255 and every coefficient in -2**14..2**14-1 (the FDCT's range, |t| <= 8192, with margin)."""
    t = np.arange(-(1 << 14), 1 << 14, dtype=np.int64)
    steps = torch.arange(1, 256, dtype=torch.float32).view(255, 1, 1).expand(255, 8, 8)
    tt = torch.from_numpy(t).float().view(1, 1, 256, 128).expand(255, 1, 256, 128)
    c, _ = quantize.quantize_dequantize(tt, steps)
    ours = (c.double() / torch.arange(1.0, 256, dtype=torch.float64).view(255, 1, 1, 1)).reshape(255, -1).numpy()
    for q in range(1, 256):
        assert np.array_equal(ours[q - 1], _libjpeg_reciprocal(t, q)), f"step {q}"


def test_quantizer_non_integer_steps_follow_exact_rational_rounding():
    """Non-integer steps: r = round-half-away(t / 8Q) and round-half-away(r Q), checked in exact rationals,
    including exact ties."""
    from fractions import Fraction

    def rha(v):  # round half away from zero of a Fraction
        m = (abs(v) + Fraction(1, 2)).__floor__()
        return m if v >= 0 else -m

    qs = torch.tensor([1.5, 2.25, 1.1, 39.9, 254.75, 3.0], dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    t = torch.randint(-8192, 8193, (6, 1, 32, 32), generator=g).float()
    t[0, 0, 0, :8] = torch.tensor([6.0, -6, 18, -18, 30, 42, -54, 66])    # exact ties of 8 * 1.5 = 12
    table = qs.view(6, 1, 1).expand(6, 8, 8)
    c, w = quantize.quantize_dequantize(t, table, need_weight=True)
    for i in range(6):
        q = Fraction(float(qs[i]))
        for v, out in zip(t[i].flatten().tolist()[::7], c[i].flatten().tolist()[::7]):
            assert out == rha(rha(Fraction(int(v)) / (8 * q)) * q), (float(q), v, out)
    assert torch.equal(c, c.round()) and w is not None and float(quantize.soft_weight(w).max()) <= 0.75  # w: z


def test_rgb_to_ycbcr_exact_equals_integer_libjpeg_formula():
    # every 5th level of each channel plus the extremes, against jccolor.c written with int64 shifts
    levels = np.unique(np.r_[np.arange(0, 256, 5), 255])
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([r, g, b]).reshape(3, -1).astype(np.int64)
    fix = np.array(RGB_TO_YCC_FIX, np.int64)
    ref = (fix @ rgb + np.array(RGB_TO_YCC_BIAS, np.int64)[:, None]) >> 16
    u = torch.from_numpy(rgb.astype(np.float32)).view(1, 3, -1, 1)
    ours = color.rgb_to_ycbcr(u).view(3, -1).numpy()
    assert np.array_equal(ours, ref.astype(np.float32))
    assert ours.min() >= 0 and ours.max() <= 255


def test_ycbcr_to_rgb_exact_equals_pillow_decoder(tmp_path):
    """Decode real JPEGs with Pillow twice: to YCbCr (no colour conversion) and to RGB; our fixed-point conversion
    of the former must give the latter bit for bit (4:4:4 so that no upsampling is involved)."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for q in (20, 75, 100):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=q, subsampling=PIL_SUBSAMPLING["4:4:4"])
        im = Image.open(io.BytesIO(buf.getvalue()))
        im.draft("YCbCr", im.size)
        ycc = torch.from_numpy(np.asarray(im).astype(np.float32)).permute(2, 0, 1)[None]
        rgb_ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        rgb = color.ycbcr_to_rgb(ycc[:, 0], ycc[:, 1:])[0].permute(1, 2, 0).numpy()
        assert np.array_equal(rgb, rgb_ref.astype(np.float32)), f"quality {q}"


def _downsample_libjpeg(c, hs, vs):
    """jcsample.c h2v1/h2v2_downsample written as loops: (H, W) int -> (H / vs, W / hs)."""
    h, w = c.shape
    out = np.zeros((h // vs, w // hs), np.int64)
    for r in range(h // vs):
        bias = 1 if vs == 2 else 0
        for k in range(w // hs):
            s = c[vs * r: vs * r + vs, 2 * k: 2 * k + 2].sum()
            out[r, k] = (s + bias) >> (2 if vs == 2 else 1)
            bias = (bias ^ 3) if vs == 2 else (bias ^ 1)
    return out


@pytest.mark.parametrize("hs, vs", [(2, 1), (2, 2)])
def test_downsample_exact_equals_libjpeg_loops(hs, vs):
    rng = np.random.default_rng(2)
    c = rng.integers(0, 256, (6, 10))
    ours = sampling.downsample(torch.from_numpy(c).float().view(1, 1, 6, 10), hs, vs)[0, 0].numpy()
    assert np.array_equal(ours, _downsample_libjpeg(c, hs, vs))


def _fancy_libjpeg(c, vs):
    """jdsample.c h2v1_fancy_upsample / h2v2_fancy_upsample written as C-style loops (output not cropped)."""
    hc, wc = c.shape
    c = c.astype(np.int64)
    if vs == 1:
        out = np.zeros((hc, 2 * wc), np.int64)
        for r in range(hc):
            row = c[r]
            out[r, 0] = row[0]
            out[r, 1] = (row[0] * 3 + row[1] + 2) >> 2
            for k in range(1, wc - 1):
                out[r, 2 * k] = (row[k] * 3 + row[k - 1] + 1) >> 2
                out[r, 2 * k + 1] = (row[k] * 3 + row[k + 1] + 2) >> 2
            out[r, 2 * wc - 2] = (row[wc - 1] * 3 + row[wc - 2] + 1) >> 2
            out[r, 2 * wc - 1] = row[wc - 1]
        return out
    out = np.zeros((2 * hc, 2 * wc), np.int64)
    for r in range(hc):
        for v in range(2):
            far = c[max(r - 1, 0)] if v == 0 else c[min(r + 1, hc - 1)]
            cs = c[r] * 3 + far
            o = out[2 * r + v]
            o[0] = (cs[0] * 4 + 8) >> 4
            o[1] = (cs[0] * 3 + cs[1] + 7) >> 4
            for k in range(1, wc - 1):
                o[2 * k] = (cs[k] * 3 + cs[k - 1] + 8) >> 4
                o[2 * k + 1] = (cs[k] * 3 + cs[k + 1] + 7) >> 4
            o[2 * wc - 2] = (cs[wc - 1] * 3 + cs[wc - 2] + 8) >> 4
            o[2 * wc - 1] = (cs[wc - 1] * 4 + 7) >> 4
    return out


@pytest.mark.parametrize("vs", [1, 2])
@pytest.mark.parametrize("hc, wc", [(1, 3), (3, 3), (4, 7), (5, 12)])
def test_upsample_exact_equals_libjpeg_loops(vs, hc, wc):
    rng = np.random.default_rng(3)
    c = rng.integers(0, 256, (hc, wc))
    ref = _fancy_libjpeg(c, vs)
    for h, w in [(ref.shape[0], ref.shape[1]), (ref.shape[0] - (vs - 1), ref.shape[1] - 1)]:
        ours = sampling.upsample(torch.from_numpy(c).float().view(1, 1, hc, wc), 2, vs, h, w)[0, 0].numpy()
        assert np.array_equal(ours, ref[:h, :w])


def test_upsample_narrow_planes_replicate():
    # libjpeg-turbo uses plain replication for chroma planes at most 2 samples wide
    c = torch.tensor([[[[10.0, 200.0], [50.0, 90.0]]]])
    out = sampling.upsample(c, 2, 2, 3, 4)
    assert torch.equal(out[0, 0], torch.tensor([[10.0, 10, 200, 200], [10, 10, 200, 200], [50, 50, 90, 90]]))


def _dot_test(forward, adjoint, in_shape, out_shape):
    g = torch.Generator().manual_seed(4)
    u = torch.randn(in_shape, generator=g, dtype=torch.float64)
    v = torch.randn(out_shape, generator=g, dtype=torch.float64)
    lhs = (forward(u) * v).sum().item()
    rhs = (adjoint(v) * u).sum().item()
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (lhs, rhs)


@pytest.mark.parametrize("h, w, hp, wp", [(5, 7, 8, 16), (8, 8, 8, 8), (1, 1, 16, 16), (9, 3, 16, 8)])
def test_pad_replicate_adjoint(h, w, hp, wp):
    _dot_test(lambda u: sampling.pad_replicate(u, hp, wp), lambda v: sampling.pad_replicate_adjoint(v, h, w),
              (2, 3, h, w), (2, 3, hp, wp))


@pytest.mark.parametrize("hs, vs", [(2, 1), (2, 2)])
def test_downsample_adjoint(hs, vs):
    _dot_test(lambda u: sampling.downsample(u, hs, vs, exact=False), lambda v: sampling.downsample_adjoint(v, hs, vs),
              (1, 2, 6 * vs, 10), (1, 2, 6, 10 // hs))


@pytest.mark.parametrize("hs, vs", [(2, 1), (2, 2)])
@pytest.mark.parametrize("hc, wc, crop", [(3, 5, 0), (3, 5, 1), (1, 4, 1), (4, 2, 0), (2, 1, 1)])
def test_upsample_adjoint(hs, vs, hc, wc, crop):
    h, w = hc * vs - (crop if vs == 2 else 0), wc * hs - crop
    _dot_test(lambda u: sampling.upsample(u, hs, vs, h, w, exact=False),
              lambda v: sampling.upsample_adjoint(v, hs, vs, hc, wc), (1, 2, hc, wc), (1, 2, h, w))


def test_colour_adjoints():
    offset = torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64).view(1, 3, 1, 1)  # affine part
    _dot_test(lambda u: color.rgb_to_ycbcr_linear(u) - offset, color.rgb_to_ycbcr_adjoint, (2, 3, 4, 5), (2, 3, 4, 5))

    def fwd(u):
        return color.ycbcr_to_rgb(u[:, 0], u[:, 1:] + 128, exact=False)

    def adj(v):
        gy, gc = color.ycbcr_to_rgb_adjoint(v)
        return torch.cat([gy.unsqueeze(1), gc], dim=1)

    _dot_test(fwd, adj, (2, 3, 4, 5), (2, 3, 4, 5))


def test_pil_subsampling_codes_give_the_factors():
    """Each subsampling's Pillow code (fdgpu.choices) writes a file whose luma sampling factors are its chroma
    factors (libjpeg: chroma 1x1, luma h x v), so the oracle tests compare like with like."""
    Image = pytest.importorskip("PIL.Image")
    assert set(PIL_SUBSAMPLING) == set(sampling.FACTORS)
    for name, code in PIL_SUBSAMPLING.items():
        buf = io.BytesIO()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, "JPEG", subsampling=code)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            (_, h, v, _), *chroma = im.layer
        assert (h, v) == sampling.FACTORS[name] and all(c[1:3] == (1, 1) for c in chroma), (name, im.layer)

"""fdgpu.encode / fdgpu.decode: the coefficient domain. decode(encode(x)) is the round trip bit for bit, the
coefficients are libjpeg-turbo's (jpeglib reading the files Pillow writes), and both halves' gradients are the
adjoints of their real-valued pipelines (independent numpy/scipy evaluations)."""
import io

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import tables
from fdgpu.reference import color, sampling
from fdgpu.reference.dct import block_idct
from fdgpu.reference.jpeg import Geometry

from ._helpers import pillow_encode, to_uint8

SUBS = list(fdgpu.SUBSAMPLINGS)
SHAPES = [(1, 3, 17, 23), (2, 3, 40, 33), (3, 1, 9, 30), (1, 3, 1, 1), (1, 3, 70, 18)]
ids = lambda s: "x".join(map(str, s))  # noqa: E731


# ---------------------------------------------------------------- decode(encode(x)) is the round trip
@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_decode_of_encode_is_jpeg(subsampling, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    for q in (1, 35, 75, 100):
        c = fdgpu.encode(x, q, subsampling=subsampling)
        assert torch.equal(fdgpu.decode(c), fdgpu.jpeg(x, q, subsampling=subsampling)), q


@pytest.mark.parametrize("subsampling", SUBS)
def test_decode_of_encode_is_requantize_tables(subsampling):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 26, 19, generator=g, dtype=torch.float64)
    per_image = torch.randint(1, 120, (3, 8, 8), generator=g).double()
    cases = [(tables.fd(1.0), None), (tables.fd(2.5), tables.fd(1.5)), (per_image, per_image.flip(0)),
             (torch.rand(8, 8, generator=g, dtype=torch.float64) * 30 + 1, None)]  # fractional steps
    for lt, ct in cases:
        c = fdgpu.encode(x, luma_table=lt, chroma_table=ct, subsampling=subsampling)
        expected = fdgpu.requantize(x, lt, ct, subsampling=subsampling)
        y = fdgpu.decode(c)
        assert y.dtype == torch.float64 and torch.equal(y, expected)


def test_per_image_quality_and_rgb_color():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(4, 3, 15, 21, generator=g)
    q = torch.tensor([3.0, 40.0, 77.0, 100.0])
    assert torch.equal(fdgpu.decode(fdgpu.encode(x, q)), fdgpu.jpeg(x, q))
    t = tables.fd(1.0, variant="official")
    c = fdgpu.encode(x, luma_table=t, color="rgb")
    assert c.color == "rgb" and len(c.components) == 3 and c.components[0].shape == (4, 2, 3, 8, 8)
    assert torch.equal(fdgpu.decode(c), fdgpu.requantize(x, t, color="rgb"))


def test_leading_dims_and_default_quality():
    x = torch.rand(2, 2, 3, 10, 10)
    c = fdgpu.encode(x)
    assert c.batch_size == 4
    assert torch.equal(fdgpu.decode(c), fdgpu.jpeg(x, 75).reshape(4, 3, 10, 10))


# ---------------------------------------------------------------- the coefficients are libjpeg-turbo's
@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(3, 21, 37), (3, 64, 48), (1, 13, 29), (3, 5, 3)], ids=ids)
def test_coefficients_equal_jpeglib_of_pillow_file(subsampling, shape, tmp_path):
    jpeglib = pytest.importorskip("jpeglib", reason="jpeglib (the 'jpeg' extra) reads a file's coefficients")
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.rand(shape, generator=g) * 255).round() / 255
    for k, q in enumerate((10, 50, 90)):
        path = tmp_path / f"{k}.jpg"
        path.write_bytes(pillow_encode(to_uint8(x), q, subsampling))
        d = jpeglib.read_dct(str(path))
        c = fdgpu.encode(x.unsqueeze(0), q, subsampling=subsampling)
        ours = c.to_int16()
        theirs = [d.Y] + ([d.Cb, d.Cr] if shape[0] == 3 else [])
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert torch.equal(a[0], torch.from_numpy(b.astype(np.int16))), (q, a.shape, b.shape)
        for k2, t in enumerate(c.tables):
            assert torch.equal(t[0], torch.from_numpy(d.get_component_qt(k2).astype(np.float32)))


# ---------------------------------------------------------------- Coefficients
def test_coefficients_shapes_and_views():
    c = fdgpu.encode(torch.rand(2, 3, 20, 30), 75)
    assert [tuple(t.shape) for t in c.components] == [(2, 3, 4, 8, 8), (2, 2, 2, 8, 8), (2, 2, 2, 8, 8)]
    assert [tuple(t.shape) for t in c.tables] == [(2, 8, 8)] * 3
    assert c.sampling_factors == ((2, 2), (1, 1), (1, 1)) and c.size == (20, 30)
    assert all(t.dtype == torch.int16 for t in c.to_int16())
    one = c[1]
    assert one.batch_size == 1 and torch.equal(fdgpu.decode(one), fdgpu.decode(c)[1:])
    leaves, spec = torch.utils._pytree.tree_flatten(c)
    assert len(leaves) == 6
    back = torch.utils._pytree.tree_unflatten(leaves, spec)
    assert back.size == c.size and torch.equal(fdgpu.decode(back), fdgpu.decode(c))


def test_bad_input_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="backward: expected 'ste', 'soft' or 'exact', got 'bpda'"):
        fdgpu.encode(x, 50, backward="bpda")
    with pytest.raises(ValueError, match="expected either quality or luma_table"):
        fdgpu.encode(x, 50, luma_table=tables.fd(1.0))
    with pytest.raises(ValueError, match="backend: expected one of 'auto', 'torch', 'cpu', 'triton', got 'gpu'"):
        fdgpu.encode(x, 50, backend="gpu")
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\]"):
        fdgpu.encode(x * 3, 50)
    c = fdgpu.encode(x, 50)
    with pytest.raises(TypeError, match="coefficients: expected fdgpu.Coefficients"):
        fdgpu.decode(x)
    bad = fdgpu.Coefficients((c.components[0] + 0.5,) + c.components[1:], c.tables, c.size)
    with pytest.raises(ValueError, match=r"components\[0\]: expected integer coefficients"):
        fdgpu.decode(bad)
    bad = fdgpu.Coefficients((c.components[0] * 1000,) + c.components[1:], c.tables, c.size)
    with pytest.raises(ValueError, match=r"components\[0\]: expected dequantized coefficients"):
        fdgpu.decode(bad)
    bad = fdgpu.Coefficients(c.components, c.tables, (17, 16))
    with pytest.raises(ValueError, match=r"components\[0\]: expected shape \(1, 3, 2, 8, 8\)"):
        fdgpu.decode(bad)
    bad = fdgpu.Coefficients(c.components, (c.tables[0] * 0,) + c.tables[1:], c.size)
    with pytest.raises(ValueError, match=r"tables\[0\]: expected finite entries >= 1"):
        fdgpu.decode(bad)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_composed_gradients_are_the_round_trips(subsampling, mode):
    """decode(encode(x)) differentiates as the round trip: x in both modes, the tables in ste (soft's surrogate
    value r + (z - r)**3 lies between the halves: decode sees the rounded r, so its table term differs)."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 19, 27, generator=g, dtype=torch.float64, requires_grad=True)
    lt, ct = (t.double().requires_grad_() for t in tables.ijg(40))
    v = torch.randn(2, 3, 19, 27, generator=g, dtype=torch.float64)
    y = fdgpu.requantize(x, lt, ct, subsampling=subsampling, backward=mode)
    expected = torch.autograd.grad(y, (x, lt, ct), v)
    c = fdgpu.encode(x, luma_table=lt, chroma_table=ct, subsampling=subsampling, backward=mode)
    y2 = fdgpu.decode(c, backward=mode)
    assert torch.equal(y2, y)
    ours = torch.autograd.grad(y2, (x, lt, ct), v)
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-12, atol=1e-12)
    if mode == "ste":
        torch.testing.assert_close(ours[1], expected[1], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(ours[2], expected[2], rtol=1e-10, atol=1e-14)


def _decode_linear_numpy(r, q, subsampling, h, w):
    """The decoder with every rounding and clamp removed, from the JFIF definitions (scipy's orthonormal IDCT):
    per-component (rows, cols, 8, 8) coefficients and (8, 8) tables -> (C, H, W) float64."""
    from scipy.fft import idctn

    planes = []
    for rk, qk in zip(r, q):
        b = idctn(rk * qk, norm="ortho", axes=(2, 3)) + 128          # (rows, cols, 8, 8)
        planes.append(b.transpose(0, 2, 1, 3).reshape(8 * rk.shape[0], 8 * rk.shape[1]))
    if len(planes) == 1:
        return planes[0][None, :h, :w] / 255
    hs, vs = fdgpu.choices.FACTORS[subsampling]
    hc, wc = -(-h // vs), -(-w // hs)
    up = np.zeros((2, hc * vs, wc * hs))
    for k in range(2):
        ch = planes[k + 1][:hc, :wc]
        for i in range(hc * vs):
            for j in range(wc * hs):
                ci, cj = i // vs, j // hs
                if hs == 1 or wc <= 2:
                    up[k, i, j] = ch[ci, cj]
                    continue
                fj = min(max(cj + (1 if j % 2 else -1), 0), wc - 1)
                if vs == 1:
                    up[k, i, j] = 0.75 * ch[ci, cj] + 0.25 * ch[ci, fj]
                else:
                    fi = min(max(ci + (1 if i % 2 else -1), 0), hc - 1)
                    up[k, i, j] = (9 * ch[ci, cj] + 3 * ch[fi, cj] + 3 * ch[ci, fj] + ch[fi, fj]) / 16
    y, cb, cr = planes[0][:h, :w], up[0, :h, :w] - 128, up[1, :h, :w] - 128
    return np.stack([y + 1.402 * cr, y - 0.34414 * cb - 0.71414 * cr, y + 1.772 * cb]) / 255


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(3, 19, 27), (1, 13, 10), (3, 9, 4)], ids=ids)
def test_decode_gradient_is_the_adjoint_of_its_linear_map(subsampling, shape):
    """<J^T v, u> = <v, J u> for the coefficients and the tables, J evaluated independently (numpy/scipy)."""
    g = torch.Generator().manual_seed(8)
    c = fdgpu.encode(torch.rand((1,) + shape, generator=g, dtype=torch.float64), 30, subsampling=subsampling)
    comps = [t.clone().requires_grad_() for t in c.components]
    tabs = [t.clone().requires_grad_() for t in c.tables]
    y = fdgpu.decode(fdgpu.Coefficients(tuple(comps), tuple(tabs), c.size, c.subsampling, c.color))
    v = torch.randn(y.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(y, comps + tabs, v)
    r = [t[0].numpy() for t in c.components]
    q = [t[0].numpy() for t in c.tables]
    h, w = c.size

    def lin(rr, qq):  # the map minus its offset (the 128 level shift): linear in each argument separately
        return _decode_linear_numpy(rr, qq, subsampling, h, w) - _decode_linear_numpy(
            [0 * a for a in rr], qq, subsampling, h, w)
    vn = v[0].numpy()
    for k in range(len(r)):
        u = np.random.default_rng(k).standard_normal(r[k].shape)
        du = [u if i == k else 0 * a for i, a in enumerate(r)]
        lhs = float((lin(du, q) * vn).sum())
        rhs = float((grads[k][0].numpy() * u).sum())
        assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs)), (k, lhs, rhs)
        # the table: y - 128-offset is sum_k L_k(r_k * Q_k), so its derivative along e in table k is L_k(r_k * e)
        e = np.random.default_rng(10 + k).standard_normal((8, 8))
        lhs = float((lin(r, [e if i == k else 0 * a for i, a in enumerate(q)]) * vn).sum())
        rhs = float((grads[len(r) + k][0].numpy() * e).sum())
        assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs)), ("table", k, lhs, rhs)


def test_decode_gradcheck_of_the_real_valued_pipeline():
    """gradcheck (float64) of the decoder's real-valued pipeline written with the reference's real-valued stages,
    and fdgpu.decode's gradient equal to its autograd."""
    g = torch.Generator().manual_seed(9)
    h, w, sub = 13, 19, "4:2:0"
    geo = Geometry.of(h, w, 3, sub)
    c = fdgpu.encode(torch.rand(1, 3, h, w, generator=g, dtype=torch.float64), 50, subsampling=sub)

    def real_decoder(y, cb, cr, ty, tc):
        def plane(r, t, hb, wb):
            rr = torch.nn.functional.pad(r, (0, 0, 0, 0, 0, wb - r.shape[2], 0, hb - r.shape[1]))
            blocks = (rr * t.view(-1, 1, 1, 8, 8)).reshape(1, hb * wb, 64).transpose(1, 2).reshape(1, 64, hb, wb)
            return block_idct(blocks) + 128
        yp = plane(y, ty, geo.hp // 8, geo.wp // 8)[:, :h, :w]
        cp = torch.stack([plane(k, tc, geo.hp // 16, geo.wp // 16)[:, : geo.hc, : geo.wc] for k in (cb, cr)], 1)
        up = sampling.upsample(cp, geo.hs, geo.vs, h, w, exact=False)
        return color.ycbcr_to_rgb(yp, up, exact=False) / 255

    args = [c.components[0], c.components[1], c.components[2], c.tables[0], c.tables[1]]
    args = [a.clone().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(real_decoder, args, eps=1e-6, atol=1e-7, fast_mode=True)
    v = torch.randn(1, 3, h, w, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad(real_decoder(*args), args, v)
    comps = [a.clone().requires_grad_() for a in args[:3]]
    tabs = [a.clone().requires_grad_() for a in args[3:]]
    y = fdgpu.decode(fdgpu.Coefficients(tuple(comps), (tabs[0], tabs[1], tabs[1]), c.size, sub))
    ours = torch.autograd.grad(y, comps + tabs, v)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("subsampling", SUBS)
def test_encode_gradient_is_the_adjoint_of_its_linear_map(subsampling):
    """ste: <J^T v, u> = <v, J u>, J the encoder without roundings (numpy/scipy: JFIF colour, box downsampling,
    edge padding, orthonormal DCT over the steps)."""
    from scipy.fft import dctn

    g = torch.Generator().manual_seed(11)
    shape = (3, 21, 18)
    x = torch.rand((1,) + shape, generator=g, dtype=torch.float64, requires_grad=True)
    lt, ct = (t.double() for t in tables.ijg(60))
    c = fdgpu.encode(x, luma_table=lt, chroma_table=ct, subsampling=subsampling)
    vs_ = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in c.components]
    (gx,) = torch.autograd.grad(c.components, x, vs_)
    h, w = shape[1:]
    hs, vs = fdgpu.choices.FACTORS[subsampling]
    hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
    hc = -(-h // vs)

    def J(u):  # (3, H, W) -> per component (rows, cols, 8, 8)
        p = np.pad(255.0 * u, ((0, 0), (0, hp - h), (0, wp - w)), mode="edge")
        m = np.array([[0.299, 0.587, 0.114], [-0.16874, -0.33126, 0.5], [0.5, -0.41869, -0.08131]])
        ycc = np.einsum("ck,khw->chw", m, p)
        ch = ycc[1:, : hc * vs].reshape(2, hc, vs, wp // hs, hs).mean(axis=(2, 4))
        ch = np.pad(ch, ((0, 0), (0, hp // vs - hc), (0, 0)), mode="edge")
        out = []
        for k, (pl, t) in enumerate([(ycc[0], lt), (ch[0], ct), (ch[1], ct)]):
            b = pl.reshape(pl.shape[0] // 8, 8, pl.shape[1] // 8, 8).transpose(0, 2, 1, 3)
            rows, cols = c.block_grid(k)
            out.append(dctn(b, norm="ortho", axes=(2, 3))[:rows, :cols] / t.numpy())
        return out
    u = np.random.default_rng(0).standard_normal(shape)
    lhs = sum(float((a * b[0].numpy()).sum()) for a, b in zip(J(u), vs_))
    rhs = float((gx[0].numpy() * u).sum())
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


def test_exact_mode_gives_zero():
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    c = fdgpu.encode(x, 50, backward="exact")
    (gx,) = torch.autograd.grad(fdgpu.decode(c, backward="exact").sum(), x)
    assert torch.equal(gx, torch.zeros_like(gx))


def test_pillow_decodes_what_decode_says():
    """The coefficients of the image Pillow encodes, decoded: Pillow's own pixels (uint8.float() / 255)."""
    from PIL import Image

    g = torch.Generator().manual_seed(12)
    x = (torch.rand(3, 29, 31, generator=g) * 255).round() / 255
    data = pillow_encode(to_uint8(x), 60, "4:2:0")
    with Image.open(io.BytesIO(data)) as im:
        pil = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(fdgpu.decode(fdgpu.encode(x.unsqueeze(0), 60))[0], pil)


# ---------------------------------------------------------------- the C library's halves
def _library():
    from fdgpu.backends import _library as lib

    fns = lib.library()
    if fns is None:
        pytest.skip(f"the C library is unavailable: {lib.status()}")
    return fns


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape,dtype", [((2, 3, 17, 23), torch.float32), ((1, 1, 9, 30), torch.float64),
                                         ((3, 3, 70, 18), torch.float64), ((1, 3, 1, 1), torch.float32)],
                         ids=["2x3x17x23-f32", "1x1x9x30-f64", "3x3x70x18-f64", "1x3x1x1-f32"])
def test_c_halves_equal_the_reference(subsampling, shape, dtype):
    """fdgpu_encode / fdgpu_decode (the round trip's own C stage functions) give the torch reference's bits."""
    from fdgpu.backends import cpu
    from fdgpu.reference import jpeg as ref

    _library()
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g, dtype=dtype)
    n = shape[0]
    per_image = torch.randint(1, 256, (n, 8, 8), generator=g).to(dtype)
    cases = [tuple(t.to(dtype) for t in tables.ijg(q)) for q in (1, 90)] + [(per_image, per_image.flip(-1))]
    for lt, ct in cases:
        c_out = cpu.encode(x, lt, ct, subsampling)
        (qy, qc), _ = ref.encode(x, lt, ct, subsampling)
        assert torch.equal(c_out[0], qy.to(dtype))
        assert (qc is None and c_out[1] is None) or torch.equal(c_out[1], qc.to(dtype))
        # per-image tables, as Coefficients hold them; Cr with its own (smaller steps keep |r Q| in range)
        cr = (ct - 1).clamp(min=1)
        tabs = tuple(t.expand(n, 8, 8) for t in ((lt, ct, cr) if shape[1] == 3 else (lt, lt, lt)))
        h, w = shape[-2:]
        assert torch.equal(cpu.decode(c_out[0], c_out[1], tabs, subsampling, h, w),
                           ref.decode(qy, qc, tabs, subsampling, h, w, dtype))


@pytest.mark.parametrize("backend", ["cpu", "torch", "auto"])
def test_public_halves_on_each_backend(backend):
    """encode/decode(backend=...) give the same bits on the C library and the torch reference, fractional steps
    (the reference's float64 quantizer under backend='cpu') included."""
    if backend == "cpu":
        _library()
    g = torch.Generator().manual_seed(13)
    x = torch.rand(2, 3, 19, 26, generator=g)
    for kw in ({"quality": 40}, {"luma_table": tables.fd(1.5), "chroma_table": tables.fd(2.25)}):
        c = fdgpu.encode(x, **kw, backend=backend)
        ref = fdgpu.encode(x, **kw, backend="torch")
        assert all(torch.equal(a, b) for a, b in zip(c.components, ref.components))
        assert torch.equal(fdgpu.decode(c, backend=backend), fdgpu.decode(ref, backend="torch"))


def test_c_decode_checks_its_input():
    from fdgpu.backends import cpu

    fns = _library()
    c = fdgpu.encode(torch.rand(1, 3, 16, 16), 50)
    qy = c.components[0].permute(0, 1, 3, 2, 4).reshape(1, 1, 16, 16).contiguous()
    qc = torch.stack([t.permute(0, 1, 3, 2, 4).reshape(1, 8, 8) for t in c.components[1:]], 1).contiguous()
    tabs = c.tables
    ok = cpu.decode(qy, qc, tabs, "4:2:0", 16, 16)
    assert torch.equal(ok, fdgpu.decode(c))
    for bad in (qy + 0.5, qy * 1000, qy * float("nan")):
        with pytest.raises(ValueError, match=r"\|coefficient x step\| <= 2048"):
            cpu.decode(bad, qc, tabs, "4:2:0", 16, 16)
    with pytest.raises(ValueError, match=r"\|coefficient x step\| <= 2048"):  # validate=False reaches the C check
        fdgpu.decode(fdgpu.Coefficients((c.components[0] + 0.5,) + c.components[1:], tabs, c.size), validate=False)
    out = torch.full((1, 3, 16, 16), -1.0)
    t = tabs[0].contiguous()
    good = (qy.data_ptr(), qc.data_ptr(), 0, out.data_ptr(), 1, 3, 16, 16, 2, 2, 0, 1)
    tail = (t.data_ptr(), t.data_ptr(), t.data_ptr(), 0, 64, qy.numel(), qc.numel())
    encode, decode, error = fns[4], fns[5], fns[3]  # fdgpu_encode, fdgpu_decode, fdgpu_error
    assert decode(*good, *tail) == 0
    out.fill_(-1.0)
    for k, v, why in ((4, 0, "n: expected"), (5, 2, "ch: expected"), (6, 0, "h, w: expected"),
                      (8, 3, "hs, vs: expected"), (9, 3, "hs, vs: expected"), (11, 2, "i0, i1: expected")):
        args = list(good)
        args[k] = v
        assert decode(*args, *tail) == 3 and error().decode().startswith(why), (k, v)
    assert decode(*good, None, *tail[1:]) == 3 and "non-NULL" in error().decode()
    assert decode(*good, *tail[:4], 7, *tail[5:]) == 3 and error().decode().startswith("table_stride")
    assert decode(*good, *tail[:5], qy.numel() - 1, qc.numel()) == 3 and error().decode().startswith("qy:")
    assert decode(*good, *tail[:6], qc.numel() // 4) == 3 and error().decode().startswith("qc:")  # too short
    assert torch.equal(out, torch.full_like(out, -1.0))  # nothing written
    assert encode(qy.data_ptr(), 0, 1, 3, 16, 16, 2, 2, 0, 2, t.data_ptr(), t.data_ptr(), 0, 64, qy.data_ptr(),
                  qc.data_ptr(), qy.numel(), qc.numel()) == 3 and error().decode().startswith("i0, i1")


@pytest.mark.parametrize("channels", [3, 1])
def test_empty_batch(channels):
    x = torch.rand(0, channels, 9, 11, requires_grad=True)
    c = fdgpu.encode(x, 50)
    assert len(c.components) == (3 if channels == 3 else 1) and c.components[0].shape == (0, 2, 2, 8, 8)
    y = fdgpu.decode(c)
    assert y.shape == (0, channels, 9, 11) and torch.equal(y, fdgpu.jpeg(x.detach(), 50))
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_compile_smoke():
    """torch.compile traces encode and decode into one graph (fullgraph) of their custom ops."""
    x = torch.rand(2, 3, 16, 24)
    fn = torch.compile(lambda t: fdgpu.decode(fdgpu.encode(t, 50, validate=False), validate=False),
                       backend="aot_eager", fullgraph=True)
    assert torch.equal(fn(x), fdgpu.jpeg(x, 50))


# ---------------------------------------------------------------- the Triton kernels' halves
def _triton():
    import os

    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the Triton backend needs CUDA or TRITON_INTERPRET=1")
    kernels = pytest.importorskip("fdgpu.kernels", reason="triton is not installed")
    if not kernels.AVAILABLE:
        pytest.skip("triton is not installed")


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 9, 30), (1, 3, 70, 41), (1, 3, 1, 1)], ids=ids)
def test_triton_halves_equal_the_reference(subsampling, shape):
    """_jpeg_encode_kernel / _jpeg_decode_kernel (the forward kernels' stage functions) give the reference's bits:
    IJG, per-image and fractional steps, Cr with its own table, and arbitrary coefficients up to |r Q| = 2048
    (the decoder's 64-bit second pass)."""
    _triton()
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    n = shape[0]
    per_image = torch.randint(1, 256, (n, 8, 8), generator=g).float()
    cases = [{"quality": 75}, {"luma_table": per_image, "chroma_table": per_image.flip(-1)},
             {"luma_table": tables.fd(1.5)}]
    for kw in cases if shape[0] == 2 else cases[:1]:  # (the interpreter is slow: the table cases on one shape)
        c = fdgpu.encode(x, **kw, subsampling=subsampling, backend="triton")
        ref = fdgpu.encode(x, **kw, subsampling=subsampling, backend="torch")
        assert all(torch.equal(a, b) for a, b in zip(c.components, ref.components)), kw
        assert torch.equal(fdgpu.decode(c, backend="triton"), fdgpu.decode(ref, backend="torch")), kw
    # any decodable coefficients: random integers with |r Q| <= 2048, Cb and Cr with tables of their own
    ref = fdgpu.encode(x, 50, subsampling=subsampling, backend="torch")
    tabs = tuple(torch.randint(1, 40, (n, 8, 8), generator=g).float() for _ in ref.tables)
    comps = tuple(torch.round((torch.rand(t.shape, generator=g) * 2 - 1) * (2048 // q.amax().item()))
                  for t, q in zip(ref.components, tabs))
    wild = fdgpu.Coefficients(comps, tabs, ref.size, ref.subsampling, ref.color)
    assert torch.equal(fdgpu.decode(wild, backend="triton"), fdgpu.decode(wild, backend="torch"))


def test_triton_decodes_files_as_pillow():
    _triton()
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("jpeglib")
    g = torch.Generator().manual_seed(14)
    x = (torch.rand(3, 37, 29, generator=g) * 255).round() / 255
    for sub, q in (("4:2:0", 30), ("4:4:4", 90)):
        data = pillow_encode(to_uint8(x), q, sub)
        with Image.open(io.BytesIO(data)) as im:
            pil = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
        assert torch.equal(fdgpu.decode(fdgpu.io.read_jpeg(data), backend="triton")[0], pil)

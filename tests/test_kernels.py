"""Triton kernels against their torch reference twins, forward and every backward mode.

Without a GPU the kernels run through Triton's interpreter (``TRITON_INTERPRET=1``, set before triton is imported:
by ``conftest.py``, and again here for safety). Shapes stay small: the interpreter runs every program in Python.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton", reason="triton is not installed (pip install 'fdgpu[triton]')")

import fdgpu  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from fdgpu import kernels, tables  # noqa: E402
from fdgpu.reference import jpeg as ref  # noqa: E402

from ._helpers import compare  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if DEVICE == "cpu" and not INTERPRETED:  # pragma: no cover - triton imported earlier without the interpreter
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1: the kernels cannot run", allow_module_level=True)

SUBSAMPLINGS = tuple(fdgpu.SUBSAMPLINGS)
# (N, C, H, W): odd sizes (not multiples of 8 or 16), B = 1, a batch, grayscale, a plane at most 2 chroma samples
# wide (libjpeg then replicates instead of the triangle filter), a single MCU.
SHAPES = [(1, 3, 37, 53), (2, 3, 64, 48), (1, 1, 37, 53), (1, 3, 5, 3), (1, 3, 16, 16)]
LARGE = (1, 3, 203, 205)  # wider and taller than every kernel's tile (16 x 64 px at most), odd both ways
# Relative RMSE tolerated between fp32 gradients of the kernels and of the reference (different summation orders).
# The forward is integer arithmetic on both sides: compared with torch.equal, never a tolerance.
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}  # half: the gradient's own rounding


def _rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).square().mean().sqrt() / b.square().mean().sqrt().clamp_min(1e-300)).item()


def soft_tolerance(g32, g64):
    """The soft weight 3 (z - round z)^2 has slope up to 3 in z = c / Q, so with small steps (FD's 1 and 2, IJG
    q >= 90) the fp32 rounding of the DCT coefficients alone moves the fp32 reference's gradient 2-4e-5 (relative
    RMSE) away from its float64 evaluation. Two fp32 implementations, each that close to the truth, can differ by
    twice as much: the tolerance is max(1e-5, 2 x the reference's own fp32 error)."""
    return max(GRAD_RTOL[torch.float32], 2 * _rel(g32, g64))


def _ids(shape):
    return "x".join(map(str, shape))


# every shape with every subsampling, except grayscale, which has no chroma to subsample: covered once, with 4:2:0
SHAPE_CASES = [(shape, sub) for shape in SHAPES for sub in SUBSAMPLINGS if shape[1] == 3 or sub == "4:2:0"]
SHAPE_IDS = [f"{_ids(shape)}-{sub}" for shape, sub in SHAPE_CASES]


class _NaNTorch:
    """Stands in for ``torch`` inside the launchers: outputs start as NaN (float) or 0xA5 (uint8) so that a value
    the kernels never write shows up."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty_like(t, **kw):
        return torch.full_like(t, math.nan, **kw)

    @staticmethod
    def empty(size, dtype=torch.float32, device=None):
        return torch.full(size, math.nan if dtype.is_floating_point else 0xA5, dtype=dtype, device=device)


@pytest.fixture
def nan_outputs(monkeypatch):
    from fdgpu.kernels import launch
    monkeypatch.setattr(launch, "torch", _NaNTorch())


def _image(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g).to(DEVICE)


def _tables(n, kind):
    if kind == "ijg":
        lt, ct = tables.ijg(50)
    elif kind == "fd":
        lt = ct = tables.fd(1.0)
    else:  # per-sample: one quality per image
        lt, ct = tables.ijg(torch.linspace(20, 90, n))
    return lt.to(DEVICE).float().contiguous(), ct.to(DEVICE).float().contiguous()


def _all_outputs(x, g, lt, ct, subsampling):
    """The forward and both backward modes with table gradients, flat: (y, soft x/luma/chroma, ste x/luma/chroma)."""
    return ((kernels.forward(x, lt, ct, subsampling),) + kernels.backward(g, x, lt, ct, subsampling, "soft", True)
            + kernels.backward(g, x, lt, ct, subsampling, "ste", True))


# Table gradients, kernels vs reference: the same factors dc'/dQ bit for bit (the same operations on the same
# quotients), but the DCT of the gradient (Triton's separable fp32 passes vs the reference's 64x64 matmul) and the
# sum over blocks (per tile, then over tiles, vs one torch sum) are fp32 sums in other orders. Measured differences
# are below 5e-7 of the table's largest entry; the tolerance is 1e-5 of it (a wrong plane, factor, block or scale
# is off by far more).
TABLE_GRAD_ATOL = 1e-5


def assert_table_grad_close(name, actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (name, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{name}: NaN/Inf"
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= TABLE_GRAD_ATOL * scale, f"{name}: max abs err {err:.3g} > {TABLE_GRAD_ATOL:g} x {scale:.3g}"


def test_available_and_importable():
    assert kernels.AVAILABLE is True
    assert callable(kernels.forward) and callable(kernels.backward)


def test_imports_without_triton():
    """The package imports when triton is missing; AVAILABLE is then False and the torch path is used."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import tests._source_checkout  # fdgpu.kernels without pip install\n"
            "import fdgpu, fdgpu.kernels as k, torch\n"
            "assert k.AVAILABLE is False\n"
            "print(fdgpu.jpeg(torch.rand(3, 8, 8), 50).shape)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ launchers
def _image8(shape, seed=0):
    """An image on the 1/255 grid (what Pillow can be given): a smooth ramp plus noise, so that both small and
    large coefficients occur."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    ramp = (torch.arange(h).view(h, 1) * 3 + torch.arange(w).view(1, w) * 2).float() % 256
    noise = torch.randint(-40, 41, shape, generator=g).float()
    return ((ramp + noise).clamp(0, 255) / 255).to(DEVICE)


def _to_unit(img):
    """uint8 HWC (or HW) -> (C, H, W) ``v / 255`` in float32, as users convert decoded images: the very float the
    pipeline stores for level v."""
    t = torch.from_numpy(np.array(img)).float() / 255
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def _pillow(x, lt, ct, subsampling):
    """Pillow's (libjpeg-turbo's) save + load of every image of ``x`` with the integer tables ``lt``, ``ct``
    ((8, 8) or one per image), as a tensor on the 1/255 grid."""
    from ._helpers import pillow_roundtrip, to_uint8
    out = []
    for i in range(x.shape[0]):
        ti = [(t[i] if t.dim() == 3 else t).flatten().round().int().tolist() for t in (lt, ct)]
        img = to_uint8(x[i].cpu())
        out.append(_to_unit(pillow_roundtrip(img, subsampling=subsampling, qtables=ti[:1] if img.ndim == 2 else ti)))
    return torch.stack(out).to(x.device)


def _assert_equal(name, actual, expected):
    assert not torch.isnan(actual).any(), f"{name}: NaN in result (an output the kernel never wrote?)"
    if not torch.equal(actual, expected):
        raise AssertionError(compare(name, actual, expected))


PILLOW_CASES = [(s, sub) for s in SHAPES for sub in SUBSAMPLINGS if s[1] == 3 or sub == "4:2:0"] + \
    [((1, 3, 1, 1), "4:2:0"), ((3, 3, 17, 9), "4:2:2"), (LARGE, "4:2:0"), (LARGE, "4:4:4"), ((1, 1, 201, 203), "4:2:0"),
     ((1, 3, 22, 38), "4:2:0"), ((1, 3, 22, 38), "4:2:2")]  # even sides, not whole MCUs: padded luma rows


@pytest.mark.parametrize("shape,subsampling", PILLOW_CASES, ids=[f"{_ids(s)}-{sub}" for s, sub in PILLOW_CASES])
def test_forward_matches_pillow(nan_outputs, shape, subsampling):
    """The kernels compute libjpeg-turbo's integers: bit-identical to Pillow's save + load, one IJG quality per
    image (per-image tables) from 2 to 97."""
    x = _image8(shape, seed=sum(shape))
    q = torch.tensor([2.0, 50.0, 97.0])[: shape[0]] if shape[0] > 1 else torch.tensor([75.0])
    lt, ct = (t.to(DEVICE).float() for t in tables.ijg(q))
    y = kernels.forward(x, lt, ct, subsampling)
    _assert_equal(f"forward {_ids(shape)} {subsampling} vs Pillow", y, _pillow(x, lt, ct, subsampling))


@pytest.mark.parametrize("kind", ["fd", "random", "q1", "q100"])
def test_forward_tables_match_pillow(nan_outputs, kind):
    """FD's table (steps 1 and 40), random integer tables 1..255 and the extremes (q1: steps 255, q100: steps
    1), passed to Pillow as ``qtables``."""
    x = _image8((2, 3, 21, 27), seed=1)
    if kind == "fd":
        lt = ct = tables.fd(1.0)
    elif kind == "random":
        g = torch.Generator().manual_seed(2)
        lt, ct = (torch.randint(1, 256, (2, 8, 8), generator=g).float() for _ in range(2))
    else:
        lt, ct = tables.ijg(int(kind[1:]))
    lt, ct = lt.to(DEVICE).float(), ct.to(DEVICE).float()
    for sub in ("4:4:4", "4:2:0"):
        y = kernels.forward(x, lt, ct, sub)
        _assert_equal(f"forward {kind} {sub} vs Pillow", y, _pillow(x, lt, ct, sub))


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0", "gray"])
def test_forward_matches_simplejpeg(nan_outputs, subsampling):
    """A second libjpeg-turbo binding (simplejpeg, its own build of the library): the equality is libjpeg-turbo's,
    not Pillow's. simplejpeg takes a quality (IJG tables), not tables, and its encoder (the TurboJPEG API) picks
    the accurate integer DCT only from quality 96 up (below, its fast DCT; measured: 17-53 % identical values at
    q50-95, 100 % at 96 and 100 on this image), so qualities 96-100 are compared."""
    simplejpeg = pytest.importorskip("simplejpeg", reason="simplejpeg is not installed (pip install simplejpeg)")
    from ._helpers import to_uint8
    gray = subsampling == "gray"
    x = _image8((1, 1 if gray else 3, 29, 43), seed=5)
    img = np.ascontiguousarray(to_uint8(x[0].cpu()))
    for q in (96, 98, 100):
        data = simplejpeg.encode_jpeg(img[..., None] if gray else img, quality=q, colorspace="GRAY" if gray else "RGB",
                                      colorsubsampling="Gray" if gray else subsampling.replace(":", ""))
        dec = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB", fastdct=False, fastupsample=False)
        lt, ct = (t.to(DEVICE) for t in tables.ijg(q))
        y = kernels.forward(x, lt, ct, "4:2:0" if gray else subsampling)
        want = _to_unit(dec[..., 0] if gray else dec).to(DEVICE)
        _assert_equal(f"forward q{q} {subsampling} vs simplejpeg", y[0], want)


@pytest.mark.parametrize("shape, subsampling", SHAPE_CASES, ids=SHAPE_IDS)
def test_forward_matches_reference(nan_outputs, shape, subsampling):
    x = _image(shape)
    lt, ct = _tables(shape[0], "ijg")
    y = kernels.forward(x, lt, ct, subsampling)
    _assert_equal(f"forward {_ids(shape)} {subsampling}", y, ref.forward(x, lt, ct, subsampling)[0])


@pytest.mark.parametrize("kind", ["fd", "per-sample", "fractional"])
@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
def test_forward_tables(nan_outputs, kind, subsampling):
    """FD tables (steps 1 and 40), per-sample tables (a table pointer with a batch stride) and non-integer steps
    (fractional FD strengths: the float64 branch of the quantizer)."""
    x = _image((3, 3, 21, 27), seed=1)
    if kind == "fractional":
        lt = (1 + 39 * torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(9))).to(DEVICE)
        ct = tables.fd(1.37).float().to(DEVICE)
    else:
        lt, ct = _tables(3, kind)
    y = kernels.forward(x, lt, ct, subsampling)
    _assert_equal(f"forward {kind} {subsampling}", y, ref.forward(x, lt, ct, subsampling)[0])


def _floor_div8q_fp32(abs_t, q, half=0.5, ulps=0):
    """``_floor_div8q``'s operations in torch (IEEE fp32 on every device): int64 ``|t|`` and steps ``q``, with the
    correctly rounded reciprocal of ``8q`` moved by ``ulps`` representable values (the GPU's is within 2 ulp)."""
    qf = q.to(torch.float32)
    rcp = torch.ones_like(qf) / (8.0 * qf)
    for _ in range(abs(ulps)):
        rcp = torch.nextafter(rcp, torch.full_like(rcp, math.inf if ulps > 0 else 0.0))
    return torch.floor((abs_t.to(torch.float32) + (4.0 * qf + half)) * rcp).to(torch.int64)


def test_floor_div8q_exact():
    """The quantizer's floor division by a per-column fp32 reciprocal is integer division for every step 1..2^16 and
    every ``|t| < 2^15`` (``n = |t| + 4q``), with the correctly rounded reciprocal and with every one up to 4 ulp
    away (the GPU's division is within 2): checked at both sides of every quotient boundary (``n = 8qk - 1`` and
    ``8qk``) and at both ends of the range, which covers every ``n`` because the computed quotient is monotone in
    ``n`` (every operation rounds monotonically)."""
    q = torch.arange(1, 2 ** 16 + 1, dtype=torch.int64)
    n_lo, n_hi = 4 * q, 2 ** 15 - 1 + 4 * q
    k_max = n_hi // (8 * q)                                     # boundaries 8qk inside [n_lo, n_hi]: k = 1..k_max
    qq = torch.repeat_interleave(q, k_max)
    k = torch.arange(len(qq)) - torch.repeat_interleave(torch.cumsum(k_max, 0) - k_max, k_max) + 1
    n = torch.cat([8 * qq * k - 1, 8 * qq * k, n_lo, n_hi])
    qs = torch.cat([qq, qq, q, q])
    assert len(n) > 200_000 and bool((n >= 4 * qs).all()) and bool((n <= 2 ** 15 - 1 + 4 * qs).all())
    for ulps in range(-4, 5):
        assert torch.equal(_floor_div8q_fp32(n - 4 * qs, qs, ulps=ulps), n // (8 * qs)), ulps
    # without the half, exact multiples can round below the integer: the boundaries catch it
    assert not torch.equal(_floor_div8q_fp32(n - 4 * qs, qs, half=0.0), n // (8 * qs))


@triton.jit
def _div255_kernel(p_v, p_o):
    o = tl.arange(0, 256)
    tl.store(p_o + o, kernels.jpeg._div255(tl.load(p_v + o)))


def test_div255_exhaustive():
    """The kernels' ``v / 255`` in three fp32 operations (``_div255``) is torch's correctly rounded ``v / 255`` for
    every 8-bit level: in a kernel, and as the same operations in torch (IEEE fp32 on every device)."""
    from fdgpu.kernels import jpeg
    v = torch.arange(256, dtype=torch.float32, device=DEVICE)
    out = torch.full_like(v, math.nan)
    _div255_kernel[(1,)](v, out)
    assert torch.equal(out, v / 255)
    assert torch.equal(v * jpeg._K255_HI.value + v * jpeg._K255_LO.value, v / 255)
    assert not torch.equal(v * (1 / 255), v / 255)  # the plain reciprocal is not: the test can fail


@pytest.mark.parametrize("mode", ["ste", "soft"])
@pytest.mark.parametrize("shape, subsampling", SHAPE_CASES, ids=SHAPE_IDS)
def test_backward_matches_reference(nan_outputs, shape, subsampling, mode):
    x = _image(shape, seed=3)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    lt, ct = _tables(shape[0], "per-sample" if shape[0] > 1 else "ijg")
    soft = mode == "soft"
    _, weights = ref.forward(x, lt, ct, subsampling, need_weight=soft)
    gx = kernels.backward(grad, x, lt, ct, subsampling, mode, False)[0]
    gx_ref = ref.backward(grad, weights if soft else None, subsampling)
    tol = GRAD_RTOL[torch.float32]
    if soft:
        _, w64 = ref.forward(x.double(), lt.double(), ct.double(), subsampling, need_weight=True)
        tol = soft_tolerance(gx_ref, ref.backward(grad.double(), w64, subsampling))
    compare(f"{mode} backward {_ids(shape)} {subsampling}", gx, gx_ref, rel_rmse=tol)


@pytest.mark.parametrize("subsampling,mode", [("4:2:0", "soft")])
def test_backward_large_image(nan_outputs, subsampling, mode):
    """An image wider and taller than every tile (203 x 205): the chroma gather, the chroma soft kernel and the
    luma/colour backward across tile seams, and the fold of the padding at both far edges."""
    x = _image(LARGE, seed=21)
    grad = torch.randn(LARGE, generator=torch.Generator().manual_seed(22)).to(DEVICE)
    lt, ct = _tables(1, "ijg")
    soft = mode == "soft"
    _, weights = ref.forward(x, lt, ct, subsampling, need_weight=soft)
    gx = kernels.backward(grad, x, lt, ct, subsampling, mode, False)[0]
    compare(f"{mode} backward {_ids(LARGE)} {subsampling}", gx,
            ref.backward(grad, weights if soft else None, subsampling), rel_rmse=GRAD_RTOL[torch.float32])


# ------------------------------------------------------------------------------------------------ table gradients
TABLE_CASES = [((2, 3, 21, 37), "4:2:0", "per-image"), ((2, 3, 21, 37), "4:2:2", "per-image"),
               ((2, 3, 21, 37), "4:4:4", "shared"), ((1, 1, 21, 37), "4:2:0", "shared"),
               ((3, 3, 13, 11), "4:2:0", "fractional")]


def _grad_tables(n, kind):
    if kind == "fractional":  # non-integer steps: the float64 quotient; a shared luma and per-image chroma table
        return (tables.fd(1.37).float().to(DEVICE),
                (1 + 39 * torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(9))).to(DEVICE))
    return _tables(n, "per-sample" if kind == "per-image" else "ijg")


@pytest.mark.parametrize("mode", ["ste", "soft"])
@pytest.mark.parametrize("shape,subsampling,kind", TABLE_CASES,
                         ids=[f"{_ids(s)}-{sub}-{k}" for s, sub, k in TABLE_CASES])
def test_table_grads_match_reference(nan_outputs, shape, subsampling, kind, mode):
    """The kernels' table gradients, per image ``(N, 8, 8)`` and shared ``(8, 8)``, against the reference's, odd
    sizes (padding in both directions), grayscale (no chroma gradient: exactly zero) and non-integer steps; asking
    for them leaves grad_x bit for bit as it was."""
    x = _image(shape, seed=41)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(42)).to(DEVICE)
    lt, ct = _grad_tables(shape[0], kind)
    gx, gl, gc = kernels.backward(g, x, lt, ct, subsampling, mode, True)
    assert torch.equal(gx, kernels.backward(g, x, lt, ct, subsampling, mode, False)[0])
    _, state = ref.forward(x, lt, ct, subsampling, need_weight=True)
    _, rl, rc = ref.backward(g, state, subsampling, mode, (lt, ct))
    assert_table_grad_close(f"{mode} luma", gl, rl)
    assert_table_grad_close(f"{mode} chroma", gc, rc)
    assert rl.abs().max() > 0 and (shape[1] == 1) == (rc.abs().max() == 0)


@pytest.mark.parametrize("mode", ["soft"])  # the ste factor is the other branch of the same kernel: covered above
def test_table_grads_large_image(nan_outputs, mode):
    """An image larger than every tile (203 x 205, 4:2:0): the partials of many tiles and of every plane summed."""
    x = _image(LARGE, seed=43)
    g = torch.randn(LARGE, generator=torch.Generator().manual_seed(44)).to(DEVICE)
    lt, ct = _tables(1, "ijg")
    _, gl, gc = kernels.backward(g, x, lt, ct, "4:2:0", mode, True)
    _, state = ref.forward(x, lt, ct, "4:2:0", need_weight=True)
    _, rl, rc = ref.backward(g, state, "4:2:0", mode, (lt, ct))
    assert_table_grad_close(f"{mode} luma", gl, rl)
    assert_table_grad_close(f"{mode} chroma", gc, rc)


def test_table_grads_deterministic_and_shared_is_per_image_sum(nan_outputs):
    """No atomics: two runs give the same bits; a shared table's gradient is exactly the batch sum of the per-image
    gradients of the same steps (the same partials, summed in the same order)."""
    x = _image((3, 3, 11, 13), seed=45)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(46)).to(DEVICE)
    lt, ct = _tables(3, "ijg")
    for mode in ("ste", "soft"):
        shared = kernels.backward(g, x, lt, ct, "4:2:0", mode, True)
        again = kernels.backward(g, x, lt, ct, "4:2:0", mode, True)
        per = kernels.backward(g, x, lt.expand(3, 8, 8).contiguous(), ct.expand(3, 8, 8).contiguous(), "4:2:0",
                               mode, True)
        assert all(torch.equal(a, b) for a, b in zip(shared, again)), mode
        assert torch.equal(shared[0], per[0]), mode
        assert per[1].shape == (3, 8, 8) and torch.equal(shared[1], per[1].sum(0)), mode
        assert torch.equal(shared[2], per[2].sum(0)), mode


# ------------------------------------------------------------------------------------------------ public API
API_CASES = [
    # (label, shape, dtype, subsampling, table kind)
    ("1x3x37x53", (1, 3, 37, 53), torch.float32, "4:2:0", "q"),
    ("2x3x64x48-422", (2, 3, 64, 48), torch.float32, "4:2:2", "q"),
    ("3d-444", (3, 29, 31), torch.float32, "4:4:4", "q"),
    ("gray", (2, 1, 24, 19), torch.float32, "4:2:0", "q"),
    ("per-sample-q", (3, 3, 20, 26), torch.float32, "4:2:0", "q-tensor"),
    ("fd", (2, 3, 33, 18), torch.float32, "4:2:0", "fd"),
    ("fp16", (1, 3, 9, 11), torch.float16, "4:2:0", "q"),
    ("bf16", (3, 3, 10, 9), torch.bfloat16, "4:4:4", "q-tensor"),
]


def _api(x, backend, mode, subsampling, kind):
    if kind == "fd":
        return fdgpu.feature_distillation(x, 2.0, subsampling=subsampling, backward=mode, backend=backend)
    q = torch.tensor([30.0, 60.0, 90.0]) if kind == "q-tensor" else 60
    return fdgpu.jpeg(x, q, subsampling=subsampling, backward=mode, backend=backend)


@pytest.mark.parametrize("mode", fdgpu.BACKWARDS)
@pytest.mark.parametrize("label,shape,dtype,subsampling,kind", API_CASES, ids=[c[0] for c in API_CASES])
def test_public_api_triton_backend(label, shape, dtype, subsampling, kind, mode):
    x0 = _image(shape, seed=5).to(dtype)
    gy = torch.randn(shape, generator=torch.Generator().manual_seed(6)).to(DEVICE, dtype)
    outs = {}
    for backend in ("triton", "torch"):
        x = x0.clone().requires_grad_(True)
        y = _api(x, backend, mode, subsampling, kind)
        assert y.dtype == dtype and y.shape == x.shape
        y.backward(gy)
        outs[backend] = (y, x.grad)
    _assert_equal(f"{label} {mode} forward", outs["triton"][0], outs["torch"][0])
    # The gradients are computed in fp32 (fp16 input is upcast), then cast to the input dtype.
    tol = GRAD_RTOL[dtype]
    if mode == "soft" and dtype == torch.float32:
        x = x0.double().requires_grad_(True)
        _api(x, "torch", mode, subsampling, kind).backward(gy.double())
        tol = soft_tolerance(outs["torch"][1], x.grad)
    compare(f"{label} {mode} grad", outs["triton"][1], outs["torch"][1], rel_rmse=tol)


def test_public_api_channels_last():
    x = _image((2, 3, 20, 20), seed=7).to(memory_format=torch.channels_last)
    y = fdgpu.jpeg(x, 50, backend="triton")
    _assert_equal("channels_last", y, fdgpu.jpeg(x.contiguous(), 50, backend="torch"))


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_public_api_gradient_layouts(layout, mode):
    """Incoming gradients that are channels_last or a strided view give the gradient of their contiguous copy
    (bit for bit: the same kernels on the same values), and the torch backend's."""
    x0 = _image((2, 3, 18, 22), seed=23)
    big = torch.randn(2, 3, 18, 44, generator=torch.Generator().manual_seed(24)).to(DEVICE)
    gy = big[..., :22].contiguous(memory_format=torch.channels_last) if layout == "channels_last" else big[..., ::2]
    assert not gy.is_contiguous()
    grads = []
    for g, backend in ((gy, "triton"), (gy.contiguous(), "triton"), (gy, "torch")):
        x = x0.clone().requires_grad_(True)
        fdgpu.jpeg(x, 40, backward=mode, backend=backend).backward(g)
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1]), f"{layout} {mode}: differs from the contiguous gradient's"
    compare(f"{layout} {mode} vs torch", grads[0], grads[2], rel_rmse=GRAD_RTOL[torch.float32])


def test_soft_gradient_is_not_ste():
    """Sanity: the soft backward really weights coefficients (it differs from ste); no NaN or Inf at q = 1 and 100,
    table gradients included."""
    x = _image((1, 3, 16, 24), seed=8)
    g = torch.randn_like(x)
    for q in (1, 100):
        lt, ct = (t.to(DEVICE) for t in tables.ijg(q))
        gs, gl, gc = kernels.backward(g, x, lt, ct, "4:2:0", "soft", True)
        assert all(torch.isfinite(t).all() for t in (gs, gl, gc)), q
        ge, gl, gc = kernels.backward(g, x, lt, ct, "4:2:0", "ste", True)
        assert all(torch.isfinite(t).all() for t in (ge, gl, gc)), q
    assert (gs - ge).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------ launch defects
def _layouts(n):
    """(label, luma table, the same steps as a contiguous float32 table) for tables of unusual layout."""
    lt = tables.ijg(35)[0].float()
    per = torch.stack([tables.ijg(q)[0] for q in (20, 60, 90)[:n]]).float()
    return [
        ("transposed", lt.t(), lt.t().contiguous()),
        ("expanded", lt.expand(n, 8, 8), lt),
        ("per-image-transposed", per.transpose(1, 2), per.transpose(1, 2).contiguous()),
        ("per-image-expanded-rows", per[:, :1].expand(n, 8, 8), per[:, :1].expand(n, 8, 8).contiguous()),
        ("fp64", lt.double(), lt),
        ("cpu-resident", lt.cpu(), lt),
    ]


@pytest.mark.parametrize("backend,subsampling", [("triton", "4:2:0"), ("torch", "4:2:0"), ("torch", "4:4:4")])
def test_table_layouts(backend, subsampling):
    """A table of any strides, dtype or device means its values: transposed (8, 8) views, expanded (B, 8, 8)
    views (batch stride 0), per-image tables, float64 and CPU-resident tables give the output of the same steps
    as a contiguous float32 table on the input's device."""
    n = 2
    x = _image((n, 3, 16, 16), seed=11)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(12)).to(DEVICE)
    for label, odd, plain in _layouts(n):
        outs = []
        for t in (odd, plain if label == "cpu-resident" else plain.to(DEVICE)):
            xi = x.clone().requires_grad_(True)
            y = fdgpu.requantize(xi, t, t.t() if t.dim() == 2 else t.transpose(1, 2), subsampling=subsampling,
                                 backward="soft", backend=backend)
            y.backward(g)
            outs.append((y.detach(), xi.grad))
        assert torch.equal(outs[0][0], outs[1][0]), f"{backend} {label}: forward differs"
        assert torch.equal(outs[0][1], outs[1][1]), f"{backend} {label}: soft gradient differs"


@pytest.mark.parametrize("label", ["transposed", "expanded", "per-image-transposed", "fp64"])
def test_launcher_table_layouts(nan_outputs, label):
    """The launchers themselves (no validation above them) read tables of any layout."""
    n = 2
    _, odd, plain = next(c for c in _layouts(n) if c[0] == label)
    x = _image((n, 3, 11, 17), seed=13)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(14)).to(DEVICE)
    plain, odd = plain.to(DEVICE).float(), odd.to(DEVICE)
    for sub in ("4:4:4", "4:2:2"):
        assert torch.equal(kernels.forward(x, plain, None, sub), kernels.forward(x, odd, None, sub)), \
            f"{label} {sub}: forward differs"
        want = kernels.backward(g, x, plain, None, sub, "soft", True)
        got = kernels.backward(g, x, odd, None, sub, "soft", True)
        assert torch.equal(got[0], want[0]), f"{label} {sub}: backward"
        for a, b in zip(got[1:], want[1:]):
            # an expanded (n, 8, 8) view gets per-image gradients: their batch sum is the shared table's, exactly
            a = a.sum(0) if a.shape != b.shape else a
            assert a.dtype == odd.dtype and torch.equal(a.float(), b), f"{label} {sub}: table gradient"


CUDA_GRID_X, CUDA_GRID_YZ = 2 ** 31 - 1, 65535


@pytest.mark.parametrize("shape", [(65536, 3, 32, 32), (65536, 1, 32, 32), (3_000_000, 3, 224, 224),
                                   (1, 3, 65536 * 17, 16), (2, 3, 40000, 40000), (1, 3, 1, 2 ** 28)],
                         ids=_ids)
@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
def test_grids_within_cuda_limits(shape, subsampling):
    """Every grid the launchers would use stays inside CUDA's limits (x < 2^31, y, z <= 65,535), and the chunks
    of images cover the batch once, in order. Checked on the launch plan: these batches are too large to run here
    (65,536 CIFAR images put the batch on grid axis z before: 'invalid argument' on a GPU)."""
    from fdgpu.kernels import launch
    n, ch, h, w = shape
    plans = dict(launch.forward_plan(n, ch, h, w, subsampling))
    for mode in launch.MODES:
        plans.update({f"{k} {mode}": v for k, v in launch.backward_plan(n, ch, h, w, subsampling, mode, True).items()})
    assert plans
    for name, p in plans.items():
        start = 0
        for i, j, (gx, gy, gz) in p.chunks:
            assert i == start and j > i, f"{name}: chunks {p.chunks[:3]}..."
            assert 0 < gx <= CUDA_GRID_X and 0 < gy <= CUDA_GRID_YZ and 0 < gz <= CUDA_GRID_YZ, (name, gx, gy, gz)
            assert gx == (j - i) * p.nt, name
            start = j
        assert start == n, f"{name}: the chunks cover {start} of {n} images"


def test_grid_too_large_for_one_image_is_a_clear_error():
    from fdgpu.kernels import launch
    with pytest.raises(ValueError, match="grid limit"):
        launch.launch_chunks(1, 2 ** 31)
    assert launch.launch_chunks(5, 1000, limit=2500) == [(0, 2, (2000, 1, 1)), (2, 4, (2000, 1, 1)),
                                                         (4, 5, (1000, 1, 1))]


def test_batch_chunking_runs(monkeypatch, nan_outputs):
    """With a tiny grid limit the launchers split the batch into several launches (and per-image tables with it):
    the result is that of one launch."""
    from fdgpu.kernels import launch
    x = _image((3, 3, 16, 24), seed=15)
    lt, ct = _tables(3, "per-sample")
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(16)).to(DEVICE)
    want = {sub: _all_outputs(x, g, lt, ct, sub) for sub in ("4:4:4", "4:2:0")}
    real = launch.launch_chunks
    calls = []

    def small(n, per_image, limit=launch.MAX_GRID_X):
        calls.append(n)
        return real(n, per_image, limit=per_image)  # one image per launch
    monkeypatch.setattr(launch, "launch_chunks", small)
    launch.clear_plans()  # the plans of these shapes were cached with the real chunks just above
    try:
        for sub in ("4:4:4", "4:2:0"):
            for i, (a, b) in enumerate(zip(_all_outputs(x, g, lt, ct, sub), want[sub])):
                assert torch.equal(a, b), (sub, i)
    finally:
        launch.clear_plans()
    assert calls


def test_launch_under_the_tensors_device(monkeypatch):
    """Every kernel is launched inside ``torch.cuda.device(t.device)`` of its tensors (Triton launches on the
    current device). Mocked here: the guard records the device it was entered for, each kernel checks that it runs
    inside it."""
    from fdgpu.kernels import launch
    dev = torch.device("cuda", 1)
    guard = launch._device_guard(torch.empty(0, device="meta"))
    assert not isinstance(guard, torch.cuda.device)  # no CUDA context for other devices
    fake = type("T", (), {"device": dev})()
    guard = launch._device_guard(fake)
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1

    inside = []

    class Guard:
        def __init__(self, t):
            self.device = t.device

        def __enter__(self):
            inside.append(self.device)

        def __exit__(self, *a):
            inside.pop()

    launched = []

    class Checked:
        def __init__(self, name, k):
            self.name, self.k = name, k

        def __getitem__(self, grid):
            def run(*args, **kw):
                assert inside, f"{self.name} launched outside the device guard"
                launched.append(self.name)
                return self.k[grid](*args, **kw)
            return run

    monkeypatch.setattr(launch, "_device_guard", Guard)
    for name in dir(launch):
        if name.startswith("_jpeg_") and name.endswith("_kernel"):
            monkeypatch.setattr(launch, name, Checked(name, getattr(launch, name)))
    x = _image((1, 3, 9, 17), seed=17)
    lt, ct = _tables(1, "ijg")
    for sub in SUBSAMPLINGS:
        _all_outputs(x, torch.ones_like(x), lt, ct, sub)
        qy, qc = launch.encode(x, lt, ct, sub)  # the halves
        launch.decode(qy, qc, (lt, ct, ct), sub, *x.shape[-2:])
    assert not inside and set(launched) == {n for n in dir(launch) if n.startswith("_jpeg_")}


def test_size_classes():
    """Tiles per size class: a 32 x 32 image at 4:2:0 codes exactly its 24 blocks (16 luma + 2 x 4 chroma) in
    one-MCU programs (6 blocks each), where 16-block tiles would code 96; a 224 x 224 one exactly its 1,176 (784 luma
    + 2 x 196 chroma: 16-block tiles would code 1,344) and its upsampler covers exactly its pixels; the
    table-gradient kernel of larger images keeps 16-block tiles."""
    from fdgpu.kernels import launch
    assert launch.size_class(32, 32) == "small" and launch.size_class(33, 8) == "large"
    p = launch.forward_plan(1, 3, 32, 32, "4:2:0")["_jpeg_fwd_sub_kernel"]
    assert 6 * p.nt * p.tile[0] * p.tile[1] == 24 and p.warps == 2
    plan = launch.forward_plan(1, 3, 224, 224, "4:2:0")
    p, up = plan["_jpeg_fwd_sub_kernel"], plan["_jpeg_up_kernel"]
    assert 6 * p.nt * p.tile[0] * p.tile[1] == 1176 and p.warps == 2
    assert up.nt * up.tile[0] * up.tile[1] == 224 * 224
    p = launch.backward_plan(1, 3, 224, 224, "4:2:0", "ste", True)["_jpeg_bwd_table_kernel"]
    assert p.tile[0] * p.tile[1] == 16 and p.warps == 8


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:0"])
def test_size_classes_agree(monkeypatch, nan_outputs, subsampling):
    """The same image through the small and the large tiles: identical forward and gradients."""
    from fdgpu.kernels import launch
    x = _image((2, 3, 19, 27), seed=31)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(32)).to(DEVICE)
    lt, ct = _tables(2, "per-sample")
    outs = []
    for small_max in (0, 64):
        monkeypatch.setattr(launch, "SMALL_MAX", small_max)
        assert launch.size_class(19, 27) == ("small" if small_max else "large")
        outs.append(_all_outputs(x, g, lt, ct, subsampling))
    whats = ("forward", "soft x", "soft luma", "soft chroma", "ste x", "ste luma", "ste chroma")
    for a, b, what in zip(outs[0], outs[1], whats):
        if what.endswith(("luma", "chroma")):
            # the table gradient is a sum over blocks, partitioned by the tiles: another order of the same sum
            assert_table_grad_close(f"{subsampling} {what}", a, b)
        else:
            assert torch.equal(a, b), f"{subsampling} {what}: small and large tiles differ"

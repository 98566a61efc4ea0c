"""The cpu backend (fdgpu/backends/csrc/fused.c) against the torch reference it must equal bit for bit, and the
fallback to the reference where it does not apply (no compiler, fractional or huge steps, autograd recording)."""
import pytest
import torch

import fdgpu
from fdgpu.backends import _library, cpu
from fdgpu.reference import jpeg as ref_jpeg

pytestmark = pytest.mark.skipif(_library.library() is None, reason=f"compiled CPU path: {_library.status()}")


def _images(n, ch, h, w, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # half smooth (realistic coefficient statistics), half noise (large high-frequency coefficients)
    small = torch.rand(n, ch, max(1, h // 6), max(1, w // 6), generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    noise = torch.rand(n, ch, h, w, generator=g, dtype=torch.float64)
    return torch.where(torch.arange(n).view(n, 1, 1, 1) % 2 == 0, smooth, noise).to(dtype)


def _both(x, lt, ct, sub, need_weight=True):
    got = cpu.fused_forward(x, lt, ct, sub, need_weight=need_weight)
    assert got is not None, "the fused path declined a case it handles"
    want = ref_jpeg.forward(x, lt, ct, sub, need_weight=need_weight)
    return got, want


def _assert_equal(got, want):
    (y, (zy, zc)), (yr, (zry, zrc)) = got, want
    assert y.dtype == yr.dtype and torch.equal(y, yr)
    if zry is not None:
        assert zy.dtype == zry.dtype and torch.equal(zy, zry)
    if zrc is not None:
        assert torch.equal(zc, zrc)


@pytest.mark.parametrize("sub", list(fdgpu.SUBSAMPLINGS))
@pytest.mark.parametrize("shape", [(3, 3, 37, 45), (2, 3, 17, 8), (1, 3, 1, 1), (2, 3, 2, 5), (1, 3, 9, 3),
                                   (2, 1, 21, 30)])
def test_equals_reference_odd_shapes_and_qualities(sub, shape):
    x = _images(*shape)
    for q in (1, 10, 50, 75, 95, 100):
        lt, ct = fdgpu.tables.ijg(q)
        _assert_equal(*_both(x, lt, ct, sub))


@pytest.mark.parametrize("shape", [(37, 3, 32, 32), (21, 3, 13, 21), (9, 1, 30, 17), (5, 3, 64, 64)])
def test_equals_reference_small_images_stacked(shape):
    # small images without saved quotients share codec passes (planes stacked, fused.c STACK_BLOCKS); an odd count
    # leaves a partial stack at the end
    x = _images(*shape)
    for sub in fdgpu.SUBSAMPLINGS:
        lt, ct = fdgpu.tables.ijg(80)
        _assert_equal(*_both(x, lt, ct, sub, need_weight=False))
        _assert_equal(*_both(x.double(), lt, ct, sub, need_weight=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_reference_dtypes_and_out_of_range_inputs(dtype):
    x = _images(2, 3, 19, 26, dtype) * 1.4 - 0.2  # values outside [0, 1] are clamped as 8-bit samples
    x[0, 0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5 / 255])  # validate=False inputs
    lt, ct = fdgpu.tables.ijg(60)
    _assert_equal(*_both(x, lt.to(dtype), ct.to(dtype), "4:2:0"))


@pytest.mark.parametrize("strength", [1, 3, 10, 800])  # 10: steps 400 and 800 (64-bit inverse DCT sums)
def test_equals_reference_fd_tables(strength):
    x = _images(2, 3, 24, 40)
    t = fdgpu.tables.fd(strength)
    for sub in ("4:2:0", "4:4:4"):
        _assert_equal(*_both(x, t, t, sub))


def test_equals_reference_per_image_tables_and_shared_float64_table():
    x = _images(3, 3, 16, 24)
    lt = torch.stack([fdgpu.tables.ijg(q)[0] for q in (20, 70, 99)])
    ct = torch.stack([fdgpu.tables.fd(s) for s in (1, 2, 3)])
    _assert_equal(*_both(x, lt, ct, "4:2:0"))
    lt64, ct64 = (t.double() for t in fdgpu.tables.ijg(30))
    _assert_equal(*_both(x, lt64, ct64, "4:2:2"))


def test_equals_reference_batch_over_several_workers(monkeypatch):
    # more values than INLINE_VALUES: the batch is split over the pool's workers
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(cpu, "INLINE_VALUES", 1)
        x = _images(9, 3, 24, 37)
        lt, ct = fdgpu.tables.ijg(75)
        _assert_equal(*_both(x, lt, ct, "4:2:0"))
    finally:
        torch.set_num_threads(before)


def test_layer_uses_it_and_equals_reference_through_the_layer():
    x = _images(2, 3, 20, 28).requires_grad_()
    y = fdgpu.jpeg(x, 75, backward="soft")
    assert _library.status() == "loaded"
    lt, ct = fdgpu.tables.ijg(75)
    assert torch.equal(y.detach(), ref_jpeg.forward(x.detach(), lt, ct, "4:2:0")[0])


def test_declines_what_only_the_reference_handles():
    x = _images(1, 3, 16, 16)
    lt, ct = fdgpu.tables.ijg(50)
    assert cpu.fused_forward(x, fdgpu.tables.fd(1.5), ct, "4:2:0") is None      # fractional steps
    assert cpu.fused_forward(x, lt, fdgpu.tables.fd(1000.0), "4:2:0") is None   # steps over 32768
    assert cpu.fused_forward(x.half(), lt, ct, "4:2:0") is None                  # dtype
    with torch.enable_grad():                                                # autograd records the ops
        assert cpu.fused_forward(x.clone().requires_grad_(), lt, ct, "4:2:0") is None
    # and the cpu backend gives the reference's answer for the steps (by its definition, with the reference's ops)
    for t in (fdgpu.tables.fd(1.5), fdgpu.tables.fd(1000.0)):
        assert torch.equal(fdgpu.requantize(x, t, backend="cpu"), ref_jpeg.forward(x, t, t, "4:2:0")[0])


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    monkeypatch.setenv("FDGPU_CACHE", str(tmp_path))
    monkeypatch.setattr(_library, "MANIFEST", tmp_path / "none.json")  # a package installed without its library
    _library._reset()
    yield tmp_path
    monkeypatch.undo()
    _library._reset()


def test_no_compiler_falls_back_to_the_reference(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "fdgpu-no-such-compiler")
    x = _images(2, 3, 20, 28)
    lt, ct = fdgpu.tables.ijg(75)
    assert cpu.fused_forward(x, lt, ct, "4:2:0") is None
    assert "no C compiler found" in _library.status()  # FDGPU_BUILD=1 (tests/_paths.py) cannot compile it
    fdgpu.backends._reset_warning()
    with pytest.warns(fdgpu.backends.BackendFallbackWarning, match="no C compiler"):
        y = fdgpu.jpeg(x, 75)  # backend="auto": the torch reference, with a warning
    assert torch.equal(y, ref_jpeg.forward(x, lt, ct, "4:2:0")[0])
    assert not list(fresh_library.iterdir())  # nothing half-written in the cache


def test_disabled_by_environment(fresh_library, monkeypatch):
    monkeypatch.setenv("FDGPU_FUSED", "0")
    x = _images(1, 3, 8, 8)
    lt, ct = fdgpu.tables.ijg(75)
    assert cpu.fused_forward(x, lt, ct, "4:2:0") is None
    assert _library.status() == "unavailable: FDGPU_FUSED=0"


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("sub", list(fdgpu.SUBSAMPLINGS))
@pytest.mark.parametrize("shape", [(3, 3, 37, 45), (2, 3, 2, 5), (1, 3, 9, 3), (2, 1, 21, 30)])
@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_backward_equals_reference_to_rounding(sub, shape, mode):
    # The compiled backward sums in another order than the torch reference: both are compared with the float64
    # reference, and the compiled one must be as close to it as float rounding allows (float64: to 1e-13; float32:
    # within 4x the torch float32 path's own error, and 1e-6).
    x = _images(*shape)
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    lt, ct = fdgpu.tables.ijg(50)
    for dtype in (torch.float32, torch.float64):
        xd, gd = x.to(dtype), g.to(dtype)
        state = ref_jpeg.forward(xd, lt.to(dtype), ct.to(dtype), sub, need_weight=True)[1] if mode == "soft" else None
        got = cpu.fused_backward(gd, state, sub, mode)
        assert got is not None and got.dtype == dtype and got.shape == gd.shape
        s64 = tuple(None if t is None else t.double() for t in state) if state is not None else None
        exact = ref_jpeg.backward(g.double(), s64, sub, mode)
        if dtype == torch.float64:
            assert _rel(got, exact) < 1e-13
        else:
            torch_err = _rel(ref_jpeg.backward(gd, state, sub, mode), exact)
            assert _rel(got, exact) < max(4 * torch_err, 1e-6)


def test_backward_through_the_layer_and_declines():
    x = _images(2, 3, 20, 28)
    g = torch.randn(2, 3, 20, 28, generator=torch.Generator().manual_seed(4))
    for mode in ("ste", "soft"):
        xr = x.clone().requires_grad_()
        (fdgpu.jpeg(xr, 75, backward=mode) * g).sum().backward()
        lt, ct = fdgpu.tables.ijg(75)
        state = ref_jpeg.forward(x, lt, ct, "4:2:0", need_weight=True)[1] if mode == "soft" else None
        assert torch.equal(xr.grad, cpu.fused_backward(g, state, "4:2:0", mode))
    assert cpu.fused_backward(g, None, "4:2:0", "soft") is None        # soft needs the saved quotients
    assert cpu.fused_backward(g, None, "4:2:0", "exact") is None       # autograd of the forward: the reference's

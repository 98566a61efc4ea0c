"""validate=True without a host sync where one would hurt: on CUDA tensors and under torch.compile the value checks
are device-side assertions (torch._assert_async), so a default layer compiles with fullgraph=True and can be
captured in a CUDA graph; on the CPU they stay one host read with the exact messages (tests/test_boundary.py).

Without a GPU the CUDA path is exercised on fake CUDA tensors (FakeTensorMode: shapes and devices, no data) and,
for its results, on CPU tensors with the device-side form switched on."""
import itertools
import math

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import fdgpu
from fdgpu import _checks, functional
from fdgpu.coefficients import _coef_error

ASSERT = torch.ops.aten._assert_async.msg
HOST_READ = torch.ops.aten._local_scalar_dense.default


class _Recorder(TorchDispatchMode):
    """Records the messages of device-side assertions and fails on any host read of a tensor value (item, bool,
    tolist, ... all reach ``_local_scalar_dense``; a read inside ``_assert_async``'s own CPU kernel is not seen)."""

    def __init__(self):
        super().__init__()
        self.messages = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is HOST_READ:
            raise AssertionError("host read of a tensor value")
        if func is ASSERT:
            self.messages.append(args[1])
        return func(*args, **(kwargs or {}))


def _calls(x, quality):
    return {"jpeg": lambda: fdgpu.jpeg(x, 50),
            "jpeg per-image quality": lambda: fdgpu.jpeg(x, quality),
            "requantize": lambda: fdgpu.requantize(x, fdgpu.tables.fd(2.0).to(x.device), torch.ones(8, 8,
                                                                                                   device=x.device)),
            "feature_distillation": lambda: fdgpu.feature_distillation(x, 1.0, backward="soft")}


# the checks each call asserts: x, then its tables / quality (tables built from a checked quality or strength are
# valid by construction: not checked again)
EXPECTED = {"jpeg": ["x"], "jpeg per-image quality": ["x", "quality"],
            "requantize": ["x", "luma_table", "chroma_table"], "feature_distillation": ["x"]}


@pytest.fixture
def fresh_table_cache(monkeypatch):
    # built tables are cached per device: keep fake CUDA tables out of the real cache
    monkeypatch.setattr(functional, "_TABLE_CACHE", {})


def _fake_cuda_calls(x, lt, q):
    # (fake tensors cannot be built from data on a fake CUDA device, so the IJG tables of a quality are not
    # built here: requantize takes fake tables, the quality check runs on its own; the device-side test below
    # covers fdgpu.jpeg end to end)
    return {"requantize": (lambda: fdgpu.requantize(x, lt, lt), ["x", "luma_table", "chroma_table"]),
            "feature_distillation": (lambda: fdgpu.feature_distillation(x, 1.0, backward="soft"), ["x"]),
            "quality": (lambda: fdgpu.tables.check_quality(q), ["quality"])}


@pytest.mark.parametrize("name", ["requantize", "feature_distillation", "quality"])
def test_cuda_tensors_assert_on_device_without_host_reads(fresh_table_cache, name):
    """Fake CUDA tensors: every value check of the call is one _assert_async naming its argument, nothing is read on
    the host (a real CUDA tensor would sync there), and the call runs to its op."""
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(2, 3, 16, 16, device="cuda")
        lt = torch.empty(2, 8, 8, device="cuda")
        q = torch.empty(2, device="cuda")
        call, expected = _fake_cuda_calls(x, lt, q)[name]
        with _Recorder() as rec:
            y = call()
    assert y.device.type == "cuda"
    assert sorted(m.split(":")[0] for m in rec.messages) == sorted(expected), rec.messages
    assert all(_checks.DEVICE_NOTE in m for m in rec.messages)


@pytest.fixture
def device_side(monkeypatch):
    """CPU tensors take the device-side form of the checks (as CUDA tensors do)."""
    monkeypatch.setattr(_checks, "on_device", lambda device: True)


def test_device_side_form_passes_good_inputs_unchanged(device_side):
    x = torch.rand(2, 3, 19, 21, generator=torch.Generator().manual_seed(0))
    q = torch.tensor([30.0, 90.0])
    for name, call in _calls(x, q).items():
        with _Recorder() as rec:
            y = call()
        assert sorted(m.split(":")[0] for m in rec.messages) == sorted(EXPECTED[name]), rec.messages
        assert torch.equal(y, call()), name


BAD = [("x NaN", "x", lambda x, q: fdgpu.jpeg(x.masked_fill(x > 0.9, math.nan), 50)),
       ("x 0..255", "x", lambda x, q: fdgpu.jpeg(x * 255, 50)),
       ("x -Inf", "x", lambda x, q: fdgpu.jpeg(x.masked_fill(x > 0.9, -math.inf), 50)),
       ("step below 1", "luma_table", lambda x, q: fdgpu.requantize(x, torch.full((8, 8), 0.5))),
       ("step Inf", "chroma_table", lambda x, q: fdgpu.requantize(x, torch.ones(8, 8), torch.full((8, 8), math.inf))),
       ("quality 101", "quality", lambda x, q: fdgpu.jpeg(x, q.fill_(101.0))),
       ("quality NaN", "quality", lambda x, q: fdgpu.jpeg(x, q.fill_(math.nan))),
       ("tables.ijg quality 0", "quality", lambda x, q: fdgpu.tables.ijg(q.fill_(0.0)))]


@pytest.mark.parametrize("label,name,call", BAD, ids=[b[0] for b in BAD])
def test_device_side_form_rejects_bad_values_naming_the_argument(device_side, label, name, call):
    x = torch.rand(2, 3, 19, 21, generator=torch.Generator().manual_seed(1))
    with pytest.raises(RuntimeError, match=f"^{name}: expected .*validate=False"):
        call(x, torch.tensor([30.0, 90.0]))


EDGES = [math.nan, -math.inf, -1.0, -2e-6, -1e-6, 0.0, 0.5, 1.0, 1 + 1e-6, 1 + 2e-6, 1.5, 100.0, 101.0, 2048.0,
         2049.0, 1.7976931348623157e308, math.inf]


@pytest.mark.parametrize("error", [_checks.x_error, _checks.table_error("t"), _checks.quality_error,
                                   _coef_error("c")], ids=["x", "table", "quality", "coefficients"])
def test_device_form_accepts_exactly_what_the_host_form_accepts(error):
    """The device-side bounds and the host-side error agree on every pair of edge values (NaN and Inf included)."""
    bounds, _ = error.device_form
    for a, b in itertools.product(EDGES, repeat=2):
        v = torch.tensor([a, b], dtype=torch.float64)
        inside = bool(((v[0] >= bounds[0][0]) & (v[0] <= bounds[0][1]) & (v[1] >= bounds[1][0])
                       & (v[1] <= bounds[1][1])))
        assert inside == (error(a, b) is None), (a, b)


def test_fullgraph_compile_of_a_default_layer():
    """torch.compile(fullgraph=True) of a model holding default layers (validate=True): one graph, the eager
    result, and the device-side check still rejects a bad input (a RuntimeError under compile on the CPU)."""
    torch.manual_seed(0)
    model = nn.Sequential(fdgpu.JPEG(50), fdgpu.FDJpeg(1.0), nn.Conv2d(3, 2, 3))
    x = torch.rand(2, 3, 16, 16)
    compiled = torch.compile(model, fullgraph=True)
    assert torch.equal(compiled(x), model(x))
    with pytest.raises(RuntimeError, match=r"^x: expected finite values in \[0, 1\].*validate=False"):
        compiled(x * 255)
    with pytest.raises(ValueError, match=r"^x: expected values in \[0, 1\], got min .* max 25"):
        model(x * 255)  # eager on the CPU: the exact message


def test_rgb_chroma_table_check_on_device(device_side):
    """color='rgb' takes one table: a different chroma_table is rejected without a host read on the device path
    (it used to be compared on the host even with validate=False), the same one accepted."""
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(3))
    t = fdgpu.tables.fd(2.0)
    with _Recorder():
        y = fdgpu.requantize(x, t, t.clone(), color="rgb")
    assert torch.equal(y, fdgpu.requantize(x, t, color="rgb"))
    with pytest.raises(RuntimeError, match=r"^chroma_table: expected None .*color='rgb'.*validate=False"):
        with _Recorder():
            fdgpu.requantize(x, t, t + 1, color="rgb")


def test_check_without_device_form_under_compile_says_validate_false(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)

    def custom_error(lo, hi):
        return None
    with pytest.raises(RuntimeError, match="has no device-side form and must read the host.*pass validate=False"):
        _checks.check_values([(torch.ones(3), _checks.minmax, custom_error)])


def _neighbours(v: float, dtype: torch.dtype):
    # v rounded to dtype and the values of dtype on either side of it
    c = torch.tensor(v, dtype=torch.float64).to(dtype)
    inf = torch.tensor(math.inf, dtype=dtype)
    return [c, torch.nextafter(c, inf), torch.nextafter(c, -inf)]


@pytest.mark.parametrize("form", ["comparisons", "statistics"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("error", [_checks.x_error, _checks.table_error("t")], ids=["x", "table"])
def test_device_form_of_a_value_range_is_exact_in_every_dtype(device_side, monkeypatch, form, dtype, error):
    """The device-side check of a [lo, hi] range, as comparisons in the tensor's own dtype (small tensors) and as
    min/max statistics (large ones): at every edge value and at its neighbours in that dtype (the bounds -1e-6,
    1 + 1e-6 and 1 fall between values of every dtype; the largest finite value), it accepts exactly what the host
    form accepts."""
    if form == "statistics":
        monkeypatch.setattr(_checks, "_COMPARE_MAX", 0)
    values = [t for v in EDGES + [-1e-6, 1 + 1e-6, 1.0] for t in _neighbours(v, dtype)]
    values.append(torch.tensor(torch.finfo(dtype).max, dtype=dtype))
    for v in values:
        host = error(float(v), float(v)) is None
        try:
            _checks.check_values([(v.reshape(1, 1), _checks.minmax, error)])
            device = True
        except RuntimeError:
            device = False
        assert device == host, (dtype, float(v))

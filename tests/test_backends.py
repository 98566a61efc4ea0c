"""The backends registry (fdgpu.backends): "cpu" gives the "torch" reference's bits through the public API, "auto"
picks it and warns once when it cannot, status() is plain data, and unusable backends are refused with reasons."""
import json
import warnings

import pytest
import torch

import fdgpu
from fdgpu import backends
from fdgpu.backends import _library
from fdgpu.choices import BACKENDS

needs_cpu = pytest.mark.skipif(not backends.get("cpu").available(),
                               reason=f"C library: {backends.get('cpu').unavailable()}")


def _images(n, ch, h, w, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, ch, max(1, h // 5), max(1, w // 5), generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    noise = torch.rand(n, ch, h, w, generator=g, dtype=torch.float64)
    return torch.where(torch.arange(n).view(n, 1, 1, 1) % 2 == 0, smooth, noise).to(dtype)


def test_registry_names_are_the_public_choices():
    assert list(backends.REGISTRY) == [b for b in BACKENDS if b != "auto"]
    assert fdgpu.ops.BACKENDS == tuple(backends.REGISTRY)


def test_status_is_plain_json_ready_data():
    st = backends.status()
    assert list(st) == list(backends.REGISTRY)
    for name, s in st.items():
        assert {"available", "reason", "devices", "dtypes", "table_grads"} <= set(s), name
        assert isinstance(s["available"], bool)
        assert (s["reason"] is None) == s["available"], name
    assert st["torch"]["available"]
    if st["cpu"]["available"]:
        assert st["cpu"]["library"] == _library.info()["library"] and st["cpu"]["library"].endswith(".so")
    json.loads(json.dumps(st))  # plain values only
    assert backends.summary(st).startswith("backends: torch")


@needs_cpu
@pytest.mark.parametrize("shape,dtype", [((3, 3, 37, 45), torch.float32), ((2, 1, 21, 30), torch.float32),
                                         ((1, 3, 1, 1), torch.float64), ((2, 2, 3, 70, 19), torch.float16)],
                         ids=["rgb-odd", "gray", "1x1-f64", "5d-f16"])
def test_cpu_forward_equals_torch(shape, dtype):
    x = _images(int(torch.tensor(shape[:-3]).prod()), *shape[-3:]).reshape(shape).to(dtype)
    n = x[..., 0, 0, 0].numel()
    q = torch.linspace(5, 100, n)
    for f in (lambda b: fdgpu.jpeg(x, 75, backend=b),
              lambda b: fdgpu.jpeg(x, q, subsampling="4:2:2", backend=b),            # per-image tables
              lambda b: fdgpu.feature_distillation(x, 1.5, subsampling="4:4:4", backend=b),  # fractional steps
              lambda b: fdgpu.feature_distillation(x, 2.0, variant="official", backend=b)):  # RGB planes
        y_cpu, y_torch = f("cpu"), f("torch")
        assert y_cpu.dtype == y_torch.dtype == dtype
        assert torch.equal(y_cpu, y_torch)


@needs_cpu
def test_cpu_channels_last_and_auto_is_cpu():
    x = _images(2, 3, 29, 41).contiguous(memory_format=torch.channels_last)
    y = fdgpu.jpeg(x, 60, backend="cpu")
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, fdgpu.jpeg(x, 60, backend="torch"))
    assert backends.resolve("auto", x.device) == "cpu"
    assert torch.equal(fdgpu.jpeg(x, 60), y)


@needs_cpu
@pytest.mark.parametrize("mode", list(fdgpu.BACKWARDS))
def test_cpu_backward_and_table_gradients(mode):
    # x gradients: the library's sums in another order than the reference's (ste/soft without table gradients),
    # so compared with the float64 reference to float32 rounding; exact, bpda and table gradients are the
    # reference's computation on both backends: equal.
    x = _images(2, 3, 19, 26)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    grads = {}
    for b, dtype in (("cpu", torch.float32), ("torch", torch.float32), ("torch", torch.float64)):
        xr = x.to(dtype).clone().requires_grad_()
        tabs = fdgpu.Requantize(fdgpu.tables.fd(2.0).to(dtype), backward=mode, backend=b, learnable=True)
        (tabs(xr) * g.to(dtype)).sum().backward()
        xq = x.to(dtype).clone().requires_grad_()
        (fdgpu.jpeg(xq, 40, backward=mode, backend=b) * g.to(dtype)).sum().backward()
        grads[b, dtype] = (xr.grad, tabs.luma_table.grad, xq.grad)
    cpu, ref, ref64 = grads["cpu", torch.float32], grads["torch", torch.float32], grads["torch", torch.float64]
    assert torch.equal(cpu[0], ref[0])  # table gradients asked for: the reference's adjoint on both
    assert (cpu[1] is None) == (mode == "bpda") and (cpu[1] is None or torch.equal(cpu[1], ref[1]))
    if mode in ("ste", "soft"):
        err = ((cpu[2].double() - ref64[2]).norm() / ref64[2].norm()).item()
        ref_err = ((ref[2].double() - ref64[2]).norm() / ref64[2].norm()).item()
        assert err < max(4 * ref_err, 1e-6), (err, ref_err)
    else:
        assert torch.equal(cpu[2], ref[2])


@pytest.fixture
def no_library(monkeypatch, tmp_path):
    """No library in the package (a source install without a compiler), no C compiler and an empty cache: the C
    library cannot be loaded or built (FDGPU_BUILD=1 asks to build it)."""
    monkeypatch.setattr(_library, "MANIFEST", tmp_path / "none.json")
    monkeypatch.setenv("FDGPU_BUILD", "1")
    monkeypatch.setenv("FDGPU_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "fdgpu-no-such-compiler")
    _library._reset()
    backends._reset_warning()
    yield
    monkeypatch.undo()
    _library._reset()
    backends._reset_warning()


def test_auto_falls_back_with_one_warning(no_library):
    x = _images(2, 3, 20, 28)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = [fdgpu.JPEG(75)(x), fdgpu.feature_distillation(x, 1.0), fdgpu.jpeg(x, 75, backend="torch")]
    fallback = [w for w in caught if issubclass(w.category, backends.BackendFallbackWarning)]
    assert len(fallback) == 1, [str(w.message) for w in caught]
    text = str(fallback[0].message)
    assert "no C compiler" in text and _library.FIX in text and "backend='torch'" in text
    assert fallback[0].filename == __file__  # points at the caller's line
    assert torch.equal(ys[0], ys[2])
    assert backends.status()["cpu"] == {**backends.status()["cpu"], "available": False}
    assert "no C compiler" in backends.status()["cpu"]["reason"]


def test_auto_on_cuda_without_triton_warns_once(monkeypatch):
    """On a CUDA tensor ``auto`` runs Triton; without it, the torch reference with one warning per process that
    names the reason and the fix (no silent fallback to the slower path)."""
    import dataclasses
    monkeypatch.setitem(backends.REGISTRY, "triton", dataclasses.replace(
        backends.REGISTRY["triton"], unavailable=lambda: "Triton is not installed"))
    backends._reset_warning()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            picked = [backends.resolve("auto", "cuda") for _ in range(3)]
        assert picked == ["torch"] * 3
        fallback = [w for w in caught if issubclass(w.category, backends.BackendFallbackWarning)]
        assert len(fallback) == 1, [str(w.message) for w in caught]
        text = str(fallback[0].message)
        assert "CUDA tensors" in text and "Triton is not installed" in text and "pip install 'fdgpu[triton]'" in text
        assert "backend='torch'" in text
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert backends.resolve("torch", "cuda") == "torch"
    finally:
        backends._reset_warning()


def test_explicit_backends_warn_nothing(no_library):
    x = _images(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fdgpu.jpeg(x, 75, backend="torch")


def test_disabled_library_names_the_variable(no_library, monkeypatch):
    monkeypatch.setenv("FDGPU_FUSED", "0")
    with pytest.warns(backends.BackendFallbackWarning, match="FDGPU_FUSED=0"):
        fdgpu.jpeg(_images(1, 3, 8, 8), 75)


def test_unavailable_cpu_is_refused_with_reason(no_library):
    with pytest.raises(RuntimeError, match=r"backend='cpu' is unavailable: .*no C compiler") as err:
        fdgpu.jpeg(_images(1, 3, 8, 8), 75, backend="cpu")
    assert _library.FIX in str(err.value) and "backend='torch'" in str(err.value)


def test_backend_device_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend='cpu': expected a tensor on cpu, got device cuda"):
        backends.resolve("cpu", "cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend='triton': expected a tensor on cuda, got device cpu.*"
                                         "TRITON_INTERPRET=1"):
        backends.resolve("triton", "cpu")
    assert backends.resolve("torch", "meta") == "torch" and backends.resolve("auto", "meta") == "torch"
    with pytest.raises(ValueError, match="backend.*'cpu'"):
        fdgpu.jpeg(torch.rand(1, 3, 8, 8), 75, backend="c")


def test_a_new_backward_mode_is_one_record(monkeypatch):
    # A surrogate added as one record of fdgpu.choices.BACKWARD_MODES, without a kernel constant (here: soft's
    # formulas under another name), runs on every backend through the reference's adjoint: its gradients, of x and
    # of learnable tables, equal the torch backend's soft ones exactly.
    from fdgpu.choices import BACKWARD_MODES

    monkeypatch.setitem(BACKWARD_MODES, "soft-copy", BACKWARD_MODES["soft"]._replace(kernel=None))
    x = _images(2, 3, 19, 26)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))

    def grads(backend, mode):
        xr, xq = x.clone().requires_grad_(), x.clone().requires_grad_()
        tabs = fdgpu.Requantize(fdgpu.tables.fd(2.0), backward=mode, backend=backend, learnable=True)
        (tabs(xr) * g).sum().backward()
        (fdgpu.jpeg(xq, 40, backward=mode, backend=backend) * g).sum().backward()
        return xr.grad, tabs.luma_table.grad, tabs.chroma_table.grad, xq.grad

    want = grads("torch", "soft")
    for backend in [b for b in ("torch", "cpu", "triton") if backends.get(b).available()]:
        got = grads(backend, "soft-copy")
        assert all(torch.equal(a, b) for a, b in zip(got, want)), backend


def _bad_inputs():
    x = _images(3, 3, 21, 34)
    nan_one, inf, ninf = x.clone(), x.clone(), x.clone()
    nan_one[2, 0, 20, 33] = float("nan")
    inf[1, 0, 3, 4] = float("inf")
    ninf[0, 0, 0, 0] = -float("inf")
    return {"0..255": x * 255, "normalised": (x - 0.5) / 0.25, "overshoot": x / x.max() * 1.003,
            "undershoot": x - x.min() - 1e-3,
            "nan in the last image": nan_one, "+inf": inf, "-inf": ninf, "all nan": torch.full_like(x, float("nan")),
            "huge": x * 1e30}


def _error(f):
    try:
        f()
    except ValueError as e:
        return str(e)
    return None


@needs_cpu
@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_cpu_validation_in_the_library_gives_the_same_errors(case, monkeypatch):
    # validate=True on backend="cpu" checks x in the C library's read of it (no separate pass in torch): the same
    # ValueError, word for word, as the torch backend's checks; also split over the workers, for float64, float16,
    # grayscale, RGB planes, with per-image tables, and when the library declines (fractional steps: checked first)
    x = _bad_inputs()[case]
    calls = [lambda b, t: fdgpu.jpeg(t, 75, backend=b),
             lambda b, t: fdgpu.jpeg(t, torch.tensor([20.0, 50.0, 90.0]), subsampling="4:4:4", backend=b),
             lambda b, t: fdgpu.jpeg(t[:, :1], 75, backend=b),
             lambda b, t: fdgpu.feature_distillation(t, 1.5, backend=b),
             lambda b, t: fdgpu.feature_distillation(t, 2.0, variant="official", backend=b)]
    for dtype in (torch.float32, torch.float64, torch.float16):
        t = x.to(dtype)
        for call in calls:
            want = _error(lambda: call("torch", t))
            assert want is not None and want.startswith("x: expected")
            assert _error(lambda: call("cpu", t)) == want, (case, dtype)
    monkeypatch.setattr(fdgpu.backends.cpu, "INLINE_VALUES", 1)  # image ranges on several workers
    assert _error(lambda: fdgpu.jpeg(x, 75, backend="cpu")) == _error(lambda: fdgpu.jpeg(x, 75, backend="torch"))


@needs_cpu
def test_cpu_validation_reads_x_once_and_keeps_the_order_of_errors(monkeypatch):
    seen = []

    def counting_minmax(t):
        seen.append(tuple(t.shape))
        return minmax(t)
    from fdgpu._checks import minmax
    monkeypatch.setattr(fdgpu.functional, "minmax", counting_minmax)
    x = _images(2, 3, 16, 24)
    y = fdgpu.requantize(x, fdgpu.tables.fd(2.0), torch.full((8, 8), 3.0), backend="cpu")
    assert seen == [(8, 8), (8, 8)]  # the tables in torch, x in the library
    assert torch.equal(y, fdgpu.requantize(x, fdgpu.tables.fd(2.0), torch.full((8, 8), 3.0), backend="torch"))
    assert seen[2:] == [tuple(x.shape), (8, 8), (8, 8)]  # the torch backend: x in torch
    # a bad x and a bad table: the x error first, as the checks' order says, on both backends
    bad_t = torch.full((8, 8), 0.5)
    want = _error(lambda: fdgpu.requantize(x * 255, bad_t, backend="torch"))
    assert want.startswith("x: expected") and _error(lambda: fdgpu.requantize(x * 255, bad_t, backend="cpu")) == want
    want = _error(lambda: fdgpu.requantize(x, bad_t, backend="torch"))
    assert want.startswith("luma_table") and _error(lambda: fdgpu.requantize(x, bad_t, backend="cpu")) == want

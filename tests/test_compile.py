"""torch.compile (inductor, CPU) of models holding the layer: one graph (fullgraph=True), and the compiled model
matches eager exactly (outputs and gradients) in every backward mode; no host syncs with validate=False."""
import warnings

import pytest
import torch
from torch import nn

import fdgpu
import fdgpu.reference.jpeg

MODES = list(fdgpu.BACKWARDS)


def _cnn():
    # conv -> relu -> linear: every op is one that inductor runs as the same aten kernel (or an exact elementwise
    # op), so any difference from eager would come from the layer
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 18, 5))


@pytest.mark.parametrize("mode", MODES)
def test_fullgraph_inductor_matches_eager(mode):
    torch.manual_seed(0)
    seq = nn.Sequential(fdgpu.FDJpeg(1.0, backward=mode, validate=False), _cnn())
    jpeg = fdgpu.JPEG(60, backward=mode, validate=False)
    learn = fdgpu.JPEG(40, backward=mode, validate=False, learnable=True)
    tabs = fdgpu.Requantize(fdgpu.tables.fd(2.0), backward=mode, validate=False, learnable=True)

    def f(x, q):
        return seq(x), jpeg(x), learn(x), tabs(x), fdgpu.jpeg(x, q, backward=mode, validate=False)

    x = torch.rand(2, 3, 13, 18, requires_grad=True)
    q = torch.tensor([35.0, 80.0], requires_grad=True)
    params = [x, q, learn.quality, tabs.luma_table, tabs.chroma_table] + list(seq.parameters())
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(f(x, q))]

    def run(fn):
        outs = fn(x, q)
        loss = sum((o * w).sum() for o, w in zip(outs, weights))
        return outs, torch.autograd.grad(loss, params, allow_unused=True)

    eager_out, eager_grads = run(f)
    # inductor's channels-last conv layout changes the convolution's own rounding (nothing to do with fdgpu)
    with torch._inductor.config.patch(layout_optimization=False), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        compiled = torch.compile(f, fullgraph=True, backend="inductor")
        comp_out, comp_grads = run(compiled)
    assert not [m for m in w if "lru_cache" in str(m.message)]
    for a, b in zip(eager_out, comp_out):
        assert torch.equal(a, b)
    names = ["x", "q", "learn.quality", "luma", "chroma"] + [n for n, _ in seq.named_parameters()]
    for name, a, b in zip(names, eager_grads, comp_grads):
        assert (a is None) == (b is None), name
        assert a is None or torch.equal(a, b), name
    if mode == "bpda":  # tables and quality are constants of the identity backward
        assert eager_grads[1] is None and eager_grads[2] is None and eager_grads[3] is None
    else:
        assert eager_grads[0] is not None and eager_grads[1] is not None


def test_no_graph_breaks_with_validate_false():
    model = nn.Sequential(fdgpu.FDJpeg(1.0, validate=False), fdgpu.JPEG(50, validate=False), _cnn())
    explain = torch._dynamo.explain(model)(torch.rand(2, 3, 13, 18, requires_grad=True))
    assert explain.graph_break_count == 0 and explain.graph_count == 1


class _SyncCounter:
    """Counts the host reads of tensor values (item, tolist, bool, numpy, cpu) made through torch.Tensor by the
    layer's Python code (validation, table construction, dispatch), not inside the ops' implementations: the torch
    reference's quantizer reads a *CPU* table to choose its integer or real path (no sync: the table is on the
    host); tables on other devices are never read (test_reference_reads_no_device_tensor below)."""
    NAMES = ("item", "tolist", "__bool__", "numpy", "cpu", "__float__", "__int__")

    def __init__(self, monkeypatch):
        self.n, self.inside = 0, 0
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)

            def wrapper(t, *a, _orig=orig, **k):
                self.n += self.inside == 0
                return _orig(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, wrapper)
        from fdgpu.reference import quantize
        orig_q = quantize.real_path  # the quantizer's one read of a (host) table

        def quiet(*a, **k):
            self.inside += 1
            try:
                return orig_q(*a, **k)
            finally:
                self.inside -= 1
        monkeypatch.setattr(quantize, "real_path", quiet)


@pytest.mark.parametrize("validate,most", [(False, 0), (True, 1)], ids=["validate=False", "validate=True"])
def test_host_syncs_per_call(monkeypatch, validate, most):
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    calls = [lambda: fdgpu.jpeg(x, 50, validate=validate),
             lambda: fdgpu.jpeg(x, torch.tensor([30.0, 90.0]), validate=validate),
             lambda: fdgpu.requantize(x, fdgpu.tables.fd(2.0), torch.ones(2, 8, 8), validate=validate),
             lambda: fdgpu.feature_distillation(x, 1.0, backward="soft", validate=validate),
             fdgpu.FDJpeg(1.0, validate=validate), fdgpu.JPEG(30, validate=validate, learnable=True)]
    counts = []
    for call in calls:
        call if isinstance(call, nn.Module) else call()  # warm the table caches
        counter = _SyncCounter(monkeypatch)
        y = call(x) if isinstance(call, nn.Module) else call()
        y.sum().backward()
        counts.append(counter.n)
        monkeypatch.undo()
    # at most one read per call; on the C library x's checks run in its own pass (no torch read), so a call whose
    # only checked value is x reads nothing. The explicit tables are read: the counter sees that one sync.
    assert max(counts) == most and all(n <= most for n in counts), counts


class _NoHostRead(torch.utils._python_dispatch.TorchDispatchMode):
    """Fails on any read of a tensor's value by the host (item, bool, tolist, ... all reach this aten op)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("host read of a tensor value")
        return func(*args, **(kwargs or {}))


def _reference_round_trip(x, lt, ct, mode):
    # the torch reference: the path CUDA tensors take without Triton (the C library is for CPU tensors only)
    y, state = fdgpu.reference.forward(x, lt, ct, "4:2:0", need_weight=True)
    return (y,) + tuple(fdgpu.reference.backward(torch.ones_like(y), state, "4:2:0", mode, (lt, ct)))


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_reference_reads_no_device_tensor(monkeypatch, mode):
    """The torch backend on a device (CUDA) never reads a table (a host sync): the quantizer then takes its
    real-valued path, which gives the same bits for integer tables. Emulated on the CPU by removing it from the
    host devices; the dispatch mode sees every aten op (one thread: the chunk workers would run outside it)."""
    from fdgpu.reference import parallel, quantize
    monkeypatch.setattr(parallel, "workers", lambda: 1)
    x = torch.rand(2, 3, 21, 19, generator=torch.Generator().manual_seed(3))
    lt, ct = fdgpu.tables.ijg(75)[0], fdgpu.tables.fd(1.0)
    host = _reference_round_trip(x, lt, ct, mode)
    with pytest.raises(AssertionError, match="host read"), _NoHostRead():  # the check can fail: CPU tables are read
        _reference_round_trip(x, lt, ct, mode)
    monkeypatch.setattr(quantize, "HOST_DEVICES", ())
    with _NoHostRead():
        device = _reference_round_trip(x, lt, ct, mode)
    for a, b in zip(host, device):
        assert torch.equal(a, b)


@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.float64])
def test_real_path_equals_integer_path_for_integer_steps(monkeypatch, weight_dtype):
    """Every step 1..255 and every coefficient the FDCT can produce (|t| <= 8192): the real-valued path that tables
    off the host take gives the integer path's dequantized coefficients and quotients z, bit for bit."""
    from fdgpu.reference import quantize
    steps = torch.arange(1, 256, dtype=torch.float32).view(255, 1, 1).expand(255, 8, 8)
    t = torch.cat([torch.arange(-8192, 8193, dtype=torch.float32), -torch.zeros(63)])  # and -0.0
    t = t.view(1, 1, 8, 2056).expand(255, 1, 8, 2056)
    assert not quantize.real_path(steps)
    c_int, z_int = quantize.quantize_dequantize(t.clone(), steps, True, weight_dtype)
    monkeypatch.setattr(quantize, "HOST_DEVICES", ())
    assert quantize.real_path(steps)
    c_real, z_real = quantize.quantize_dequantize(t.clone(), steps, True, weight_dtype)
    assert torch.equal(c_int, c_real) and torch.equal(z_int, z_real)
    assert torch.equal(torch.signbit(z_int), torch.signbit(z_real))


def test_torch_export_sees_one_op():
    m = fdgpu.FDJpeg(1.0, validate=False)
    x = torch.rand(2, 3, 16, 16)
    ep = torch.export.export(m, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.fdgpu.jpeg.default) == 1
    assert torch.equal(ep.module()(x), m(x))

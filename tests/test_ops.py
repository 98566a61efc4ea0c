"""The torch.library custom ops (fdgpu.ops): opcheck for every mode and backend, fake kernels, meta tensors."""
import pytest
import torch

import fdgpu
from fdgpu import ops, tables

MODES = list(fdgpu.BACKWARDS)


def _args(backend, mode, table_grads, shape=(2, 3, 16, 16), subsampling="4:2:0"):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g, requires_grad=True)
    lt, ct = (t.clone().requires_grad_(table_grads) for t in tables.ijg(50))
    save = mode == "soft" or (mode == "ste" and table_grads)
    return x, lt, ct, subsampling, backend, mode, save


@pytest.mark.parametrize("table_grads", [False, True], ids=["x", "x+tables"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_opcheck_torch_and_cpu(backend, mode, table_grads):
    if not fdgpu.backends.get(backend).available():
        pytest.skip(f"backend {backend!r}: {fdgpu.backends.get(backend).unavailable()}")
    torch.library.opcheck(ops.jpeg, _args(backend, mode, table_grads))


@pytest.mark.parametrize("mode", MODES)
def test_opcheck_triton_interpreter(mode):
    pytest.importorskip("triton")
    from fdgpu import kernels
    if not kernels.AVAILABLE:
        pytest.skip("Triton kernels unavailable")
    # per-image tables and table gradients in the modes that have them; one small image (the interpreter is slow)
    torch.library.opcheck(ops.jpeg, _args("triton", mode, mode in ("ste", "soft"), shape=(1, 3, 16, 16)))


@pytest.mark.parametrize("mode", ["exact", "ste", "soft"])
def test_opcheck_backward_op(mode):
    x, lt, ct, sub, backend, _, _ = _args("torch", mode, True, shape=(2, 1, 9, 12), subsampling="4:4:4")
    _, sy, sc = ops.jpeg(x.detach(), lt.detach(), ct.detach(), sub, backend, mode, mode != "exact")
    torch.library.opcheck(ops.jpeg_backward, (torch.randn_like(x), x.detach(), lt.detach(), ct.detach(), sy, sc,
                                              sub, backend, mode, True))


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
@pytest.mark.parametrize("channels", [1, 3])
def test_fake_state_shapes_match_the_reference(subsampling, channels):
    x = torch.rand(2, channels, 13, 27)
    lt, ct = tables.ijg(40)
    real = ops.jpeg(x, lt, ct, subsampling, "torch", "soft", True)
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = ops.jpeg(mode.from_tensor(x), mode.from_tensor(lt), mode.from_tensor(ct), subsampling, "torch",
                        "soft", True)
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert [t.dtype for t in fake] == [t.dtype for t in real]


# ------------------------------------------------------------------ meta tensors (issue 14): shapes, no crash
def test_meta_input():
    x = torch.rand(2, 3, 20, 30, device="meta")
    for f in (lambda t: fdgpu.jpeg(t, 50), lambda t: fdgpu.feature_distillation(t, 1.0),
              lambda t: fdgpu.requantize(t, tables.fd(2.0)), fdgpu.JPEG(30), fdgpu.FDJpeg(2.0)):
        y = f(x)
        assert y.device.type == "meta" and y.shape == x.shape and y.dtype == x.dtype


def test_meta_quality_and_tables():
    x = torch.rand(2, 3, 16, 16, device="meta")
    assert fdgpu.jpeg(x, torch.tensor([10.0, 90.0], device="meta")).shape == x.shape
    assert fdgpu.requantize(x, torch.ones(2, 8, 8, device="meta"), torch.ones(8, 8, device="meta")).shape == x.shape
    luma, chroma = tables.ijg(torch.tensor([5.0, 50.0], device="meta"))
    assert luma.shape == (2, 8, 8) and luma.device.type == "meta"


def test_meta_module_and_backward():
    m = fdgpu.JPEG(60, learnable=True).to("meta")
    x = torch.rand(1, 3, 16, 16, device="meta", requires_grad=True)
    m(x).sum().backward()
    assert x.grad.shape == x.shape and m.quality.grad.shape == ()
    assert "quality=?" in repr(m)

"""torch.compile (inductor, CPU) of a model holding the layer, next to eager, in one run (issue 9).

    python -m pytest benchmarks/test_bench_compile.py --benchmark-only

``nn.Sequential(fdgpu.FDJpeg(1.0, validate=False), resnet20)`` on a batch of 32 CIFAR-sized (3 x 32 x 32) images,
forward + backward (ste, gradient with respect to the input, as an attack step computes it), eager and
``torch.compile(fullgraph=True)``. The layer is one opaque custom op in the compiled graph (``fdgpu::jpeg``), so
compiling speeds up the network around it, not the codec; ``validate=True`` would add one host sync per call.
"""
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

import fdgpu  # noqa: E402
from fdgpu.models import CIFAR10_MEAN, CIFAR10_STD, Normalize, cifar_resnet  # noqa: E402

BATCH = 32


def _model():
    torch.manual_seed(0)
    net = torch.nn.Sequential(fdgpu.FDJpeg(1.0, validate=False), Normalize(CIFAR10_MEAN, CIFAR10_STD),
                              cifar_resnet(20)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _step(model, x):
    xr = x.clone().requires_grad_()
    model(xr).logsumexp(1).sum().backward()
    return xr.grad


@pytest.mark.parametrize("how", ["eager", "compiled"])
def test_fd_resnet20_forward_backward(benchmark, how):
    x = torch.rand(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = _model()
    if how == "compiled":
        model = torch.compile(model, fullgraph=True, backend="inductor")
    _step(model, x)  # compiles outside the timing. (Not compared with eager here: with resnet20, inductor's input
    # gradient differed from eager's in 2.2 % of entries, by up to 0.012, in one run; not investigated. The layer
    # alone and a conv/relu/linear net match eager exactly: tests/test_compile.py.)
    benchmark.group = "FD 1x + resnet20, batch 32, forward+backward"
    benchmark.pedantic(_step, args=(model, x), rounds=10, warmup_rounds=2, iterations=1)

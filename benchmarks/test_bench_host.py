"""Host time per call of the Triton backend's Python path, with the kernel launches stubbed (no GPU here).

    pytest benchmarks/test_bench_host.py --benchmark-only [--benchmark-json host.json]

What it measures: everything fdgpu does on the host for one call on a 1 x 3 x 32 x 32 image -- the public
function's checks and table cache, the custom op's dispatch and autograd, the launchers' plans, table layouts and
output allocation -- with every ``kernel[grid](...)`` replaced by a no-op. What it does not: Triton's own per-launch
argument binding and the driver's launch (stubbed with the kernels; a review measured ~28 us per launch for the
binder on a machine with the kernels compiled for sm_90), nor any GPU time. CPU tensors stand in for CUDA ones, so
``validate=True`` here is the CPU path (one host read of the value checks' statistics); on CUDA it is the
device-side assertions instead (more small launches, no sync). ``plan rebuilt`` vs ``plan cached`` is the launch
plan of one call without and with the per-shape cache, side by side.
"""
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
pytest.importorskip("triton")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the triton backend on CPU tensors (nothing is launched)
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the host-path benchmark runs on CPU tensors under TRITON_INTERPRET=1", allow_module_level=True)

import fdgpu  # noqa: E402
from fdgpu.kernels import launch  # noqa: E402


class _Stub:
    """``kernel[grid](...)`` that launches nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@pytest.fixture
def stubbed(monkeypatch):
    for name in list(vars(launch)):
        if name.startswith("_jpeg_") and name.endswith("_kernel"):
            monkeypatch.setattr(launch, name, _Stub())
    monkeypatch.setenv("FDGPU_SELFCHECK", "0")


X = torch.rand(1, 3, 32, 32)
G = torch.ones_like(X)
LT, CT = (t.float() for t in fdgpu.tables.ijg(75))


def _fwd_ste():
    xr = X.clone().requires_grad_()
    return lambda: fdgpu.jpeg(xr, 75, backend="triton", validate=False).backward(G)


CALLS = {
    "plan rebuilt": lambda: launch._forward_plan.__wrapped__(1, 3, 32, 32, "4:2:0", "small"),
    "plan cached": lambda: launch.forward_plan(1, 3, 32, 32, "4:2:0"),
    "launcher forward": lambda: launch.forward(X, LT, CT, "4:2:0"),
    "launcher backward ste": lambda: launch.backward(G, X, LT, CT, "4:2:0", "ste", False),
    "jpeg validate=False": lambda: fdgpu.jpeg(X, 75, backend="triton", validate=False),
    "jpeg validate=True": lambda: fdgpu.jpeg(X, 75, backend="triton"),
    "jpeg forward + ste backward": None,  # built per test (a leaf that requires grad)
}


@pytest.mark.parametrize("name", list(CALLS))
def test_host_time(benchmark, stubbed, name):
    fn = CALLS[name] or _fwd_ste()
    fn()
    benchmark.extra_info["what"] = "host time per call, kernel launches stubbed, 1 x 3 x 32 x 32, CPU tensors"
    benchmark.pedantic(fn, rounds=200, iterations=5, warmup_rounds=20)

"""Host time per call of the Triton backend on CUDA, for one 1 x 3 x 32 x 32 image, with only the driver's kernel
launch stubbed (no GPU needed).

    pytest benchmarks/test_bench_host.py --benchmark-only [--benchmark-json host.json]

Run it in its own pytest process, without ``TRITON_INTERPRET=1``: the kernels are compiled for sm_90 (an H100) and
launched through Triton's CUDA launcher onto a stand-in for ``libcuda`` whose ``cuLaunchKernelEx`` does nothing
(``benchmarks/_stub_cuda.py``). What it measures: everything on the host for one call -- the public function's
checks and table cache, the op's dispatch and autograd, the launchers' plans, table layouts and output allocation,
Triton's argument marshalling and its C launcher -- up to the driver call. What it does not: the driver's own
launch (a few microseconds on a GPU), ``torch.cuda.device`` guards and torch's current-stream queries (CPU tensors
stand in for CUDA ones), and any GPU time. ``validate=True`` is timed on its CUDA path (device-side checks, no host
read; the CPU path's exact host checks are switched off for CPU tensors here). ``plan rebuilt`` vs ``plan cached``
is the launch plan of one call without and with the per-shape cache, side by side. Each benchmark first checks
that its calls reach the driver with the expected number of kernel launches.

Targets: forward with ``validate=True`` <= 50 us, forward + ``ste`` backward <= 100 us.
"""
import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
pytest.importorskip("triton")
if torch.cuda.is_available():
    pytest.skip("a CUDA device is present: time the real launches (benchmarks/gpu_acceptance.py)",
                allow_module_level=True)
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("Triton was imported in interpreter mode: run benchmarks/test_bench_host.py in its own pytest process",
                allow_module_level=True)
sys.path.insert(0, os.path.dirname(__file__))
import _stub_cuda  # noqa: E402

why = _stub_cuda.unavailable()
if why:
    pytest.skip(why, allow_module_level=True)
_stub_cuda.install()
os.environ["FDGPU_SELFCHECK"] = "0"  # the self-check would compare stubbed (unwritten) outputs with the reference

import fdgpu  # noqa: E402
from fdgpu import _checks  # noqa: E402
from fdgpu.backends import triton as triton_backend  # noqa: E402
from fdgpu.kernels import launch  # noqa: E402


@pytest.fixture
def cuda_path(monkeypatch):
    """The triton backend takes CPU tensors (as under the interpreter), value checks take their CUDA form."""
    monkeypatch.setattr(triton_backend, "_interpreted", lambda: True)
    monkeypatch.setattr(_checks, "on_device", lambda device: True)


X = torch.rand(1, 3, 32, 32)
G = torch.ones_like(X)
LT, CT = (t.float() for t in fdgpu.tables.ijg(75))


def _fwd_ste():
    xr = X.clone().requires_grad_()
    return lambda: fdgpu.jpeg(xr, 75, backend="triton", validate=False).backward(G)


# name: (call, kernel launches per call at 4:2:0: forward encode + upsample, ste backward chroma + luma)
CALLS = {
    "plan rebuilt": (lambda: launch._forward_plan.__wrapped__(1, 3, 32, 32, "4:2:0", "small"), 0),
    "plan cached": (lambda: launch.forward_plan(1, 3, 32, 32, "4:2:0"), 0),
    "launcher forward": (lambda: launch.forward(X, LT, CT, "4:2:0"), 2),
    "launcher backward ste": (lambda: launch.backward(G, X, LT, CT, "4:2:0", "ste", False), 2),
    "jpeg validate=False": (lambda: fdgpu.jpeg(X, 75, backend="triton", validate=False), 2),
    "jpeg validate=True": (lambda: fdgpu.jpeg(X, 75, backend="triton"), 2),
    "jpeg forward + ste backward": (None, 4),  # built per test (a leaf that requires grad)
}


@pytest.mark.parametrize("name", list(CALLS))
def test_host_time(benchmark, cuda_path, name):
    fn, kernels = CALLS[name]
    fn = fn or _fwd_ste()
    fn()  # compiles (first run) and fills the caches
    before = _stub_cuda.launches()
    fn()
    assert _stub_cuda.launches() - before == kernels  # every kernel reached the driver, nothing else did
    benchmark.extra_info["what"] = ("host time per call, sm_90 kernels, driver launch stubbed, 1 x 3 x 32 x 32, "
                                    "CPU tensors standing in")
    benchmark.pedantic(fn, rounds=200, iterations=5, warmup_rounds=20)

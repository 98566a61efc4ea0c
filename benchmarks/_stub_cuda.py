"""Triton's CUDA path on a machine without a GPU, with only the driver's kernel launch stubbed.

:func:`install` builds a stand-in for ``libcuda.so.1`` (every entry succeeds; ``cuLaunchKernelEx`` launches
nothing), loads it under that name before Triton looks for the driver, and makes Triton's CUDA driver the active
one with the current device 0, the default stream and compute capability 9.0 (an H100). Everything above the driver
then runs as on a GPU: Triton compiles the kernels for sm_90 (``ptxas``, cached in Triton's cache folder), binds and
specialises the arguments, and its compiled launcher (``cuda_utils.launch``, C) marshals them for the driver. CPU
tensors stand in for CUDA ones (their addresses are what the launcher reads). Used by
``benchmarks/test_bench_host.py`` (host time per call) and ``tests/test_launch_direct.py``.

It must run before Triton is imported in interpreter mode: in a process with ``TRITON_INTERPRET=1`` set before
``import triton``, the kernels are interpreted functions and :func:`install` raises.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The driver entries Triton's launcher module (triton/backends/nvidia/driver.c) and its loader call. Outputs are
# plausible H100 values: 1,024 threads per block, 227 KB of shared memory per block, capability 9.0.
_SOURCE = r"""
#include <stddef.h>
#include <stdint.h>
typedef int CUresult;
static int ctx_token, mod_token, fn_token;
unsigned long long fdgpu_stub_launches;
CUresult cuInit(unsigned f) { return 0; }
CUresult cuDriverGetVersion(int *v) { *v = 12080; return 0; }
CUresult cuDeviceGet(int *d, int o) { *d = o; return 0; }
CUresult cuDeviceGetCount(int *c) { *c = 1; return 0; }
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
  *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 10 ? 32 : attr == 16 ? 132 : attr == 1 ? 1024 : 232448;
  return 0;
}
CUresult cuDevicePrimaryCtxRetain(void **c, int d) { *c = &ctx_token; return 0; }
CUresult cuCtxGetCurrent(void **c) { *c = &ctx_token; return 0; }
CUresult cuCtxSetCurrent(void *c) { return 0; }
CUresult cuCtxGetDevice(int *d) { *d = 0; return 0; }
CUresult cuCtxGetLimit(size_t *v, int l) { *v = 1 << 20; return 0; }
CUresult cuCtxSetLimit(int l, size_t v) { return 0; }
CUresult cuModuleLoadData(void **m, const void *img) { *m = &mod_token; return 0; }
CUresult cuModuleUnload(void *m) { return 0; }
CUresult cuModuleGetFunction(void **f, void *m, const char *n) { *f = &fn_token; return 0; }
CUresult cuFuncGetAttribute(int *v, int attr, void *f) { *v = attr == 0 ? 1024 : 0; return 0; }
CUresult cuFuncSetAttribute(void *f, int attr, int v) { return 0; }
CUresult cuFuncSetCacheConfig(void *f, int c) { return 0; }
CUresult cuPointerGetAttribute(void *data, int attr, uint64_t ptr) { return 0; }
CUresult cuPointerGetAttributes(unsigned n, int *attrs, void **data, uint64_t ptr) { return 0; }
CUresult cuStreamIsCapturing(void *s, int *st) { *st = 0; return 0; }
CUresult cuOccupancyMaxActiveClusters(int *n, void *f, const void *cfg) { *n = 1; return 0; }
CUresult cuTensorMapEncodeTiled(void) { return 0; }
CUresult cuTensorMapEncodeIm2col(void) { return 0; }
CUresult cuGetErrorString(int e, const char **s) { *s = "stub"; return 0; }
CUresult cuLaunchKernelEx(const void *config, void *f, void **params, void **extra) {
  fdgpu_stub_launches++;
  return 0;
}
"""

_LIB = None
INTERPRETED = "Triton was imported in interpreter mode (TRITON_INTERPRET=1): run this in its own process"


def unavailable() -> str | None:
    """Why :func:`install` cannot work in this process, or None (:data:`INTERPRETED`: it can in a fresh one)."""
    if os.environ.get("TRITON_INTERPRET") == "1" and "triton" in sys.modules:
        return INTERPRETED
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler (cc) to build the stand-in for libcuda"
    try:
        import triton.backends.nvidia.driver  # noqa: F401
    except ImportError as e:
        return f"Triton's CUDA backend cannot be imported: {e}"
    return None


def install(folder: str | None = None) -> ctypes.CDLL:
    """Build and load the stand-in ``libcuda.so.1`` (in ``folder``, a temporary one by default) and make Triton's
    CUDA driver active on it. Returns the loaded library (``launches()`` counts its ``cuLaunchKernelEx`` calls)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    why = unavailable()
    if why:
        raise RuntimeError(why)
    os.environ.pop("TRITON_INTERPRET", None)
    out = Path(folder or tempfile.mkdtemp(prefix="fdgpu-stub-cuda-"))
    src = out / "cuda_stub.c"
    src.write_text(_SOURCE)
    lib = out / "libcuda.so.1"
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o",
                    str(lib), str(src)], check=True, capture_output=True)
    (out / "libcuda.so").unlink(missing_ok=True)
    (out / "libcuda.so").symlink_to("libcuda.so.1")  # what Triton's launcher module links against
    # loaded globally under its soname: the launcher module's dlopen("libcuda.so.1") finds this one
    _LIB = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    os.environ["TRITON_LIBCUDA_PATH"] = str(out)

    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.driver import CudaDriver
    from triton.runtime import driver

    cuda = CudaDriver()  # builds Triton's launcher module (cuda_utils) against the stand-in
    # torch's CUDA hooks (current device and stream) need a CUDA build of torch: device 0, the default stream
    cuda.get_current_device = lambda: 0
    cuda.set_current_device = lambda device: None
    cuda.get_current_stream = lambda device=None: 0
    cuda.get_device_capability = lambda device=None: (9, 0)
    cuda.get_current_target = lambda: GPUTarget("cuda", 90, 32)
    driver.set_active(cuda)
    return _LIB


def launches() -> int:
    """How many kernel launches reached the stand-in driver."""
    return ctypes.c_ulonglong.in_dll(_LIB, "fdgpu_stub_launches").value

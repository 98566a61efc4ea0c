"""The CPU fast path of the forward: ``fused.c``, the whole round trip in one pass per image in integer arithmetic,
compiled once with the system's C compiler and called through ctypes.

It computes exactly what :func:`fdgpu.reference.jpeg.forward` computes (tests/test_fused.py asserts
``torch.equal`` on odd shapes, every subsampling, several qualities, FD and per-image tables, float32 and float64,
batches larger than one chunk); the torch reference stays the definition that the Triton kernels mirror and the
fallback. It is used for the forward without autograd recording (the layer's custom op, the ``ste``/``soft``
saved quotients) when:

* a C compiler is found (``$CC``, else ``cc``/``gcc``/``clang``) or the library is already in the cache;
* ``FDGPU_FUSED`` is not ``0`` (set it to ``0`` to run everything on the torch reference);
* the input is a CPU float32/float64 tensor and every step is an integer in 1..32768 (fractional steps, e.g. a
  fractional FD strength or tables being learned, use the reference's float64 quantizer).

Otherwise :func:`forward` returns None and the caller runs the torch reference: no compiler means slower, never
different. Compiled with ``-O3 -march=native -ffp-contract=off`` (no fused multiply-adds, no fast-math: the
float steps must round as the reference's); the library is cached in ``$FDGPU_CACHE`` (default
``~/.cache/fdgpu``), named by a hash of the source, the flags, the compiler's version and the CPU, and written
atomically (concurrent first calls, e.g. pytest-xdist workers, each compile and rename; one wins).

Threads: the C code is single-threaded (no OpenMP region, so no barrier that a descheduled thread can stall);
a batch's images are split over the single-threaded workers of :mod:`fdgpu.reference.parallel` (ctypes releases
the GIL during the call), a small call runs on the calling thread with no hand-off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from .parallel import map_chunks, workers
from .sampling import FACTORS

SOURCE = Path(__file__).with_name("fused.c")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared",
         "-std=gnu11")
# Calls with fewer values than this run on the calling thread: a hand-off to a worker costs ~0.2-0.7 ms, about
# the time of 2**18 values (one 3x224x224 image is 150,528).
INLINE_VALUES = 1 << 18
CHUNKS_PER_WORKER = 8  # a batch is cut into this many image ranges per worker (a stalled worker holds little)

_lock = threading.Lock()
_lib = None          # the loaded library, once built
_state = "unloaded"  # "unloaded", "loaded" or "unavailable: <why>"
compile_seconds: float | None = None  # wall time of this process's compile (None: loaded from the cache)


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def cache_dir() -> Path:
    root = os.environ.get("FDGPU_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fdgpu")
    return Path(root)


def _build(cc: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True, text=True,
                       timeout=300)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library():
    """The compiled library (built on first use), or None when it cannot be built; :func:`status` says why."""
    global _lib, _state, compile_seconds
    if _lib is not None or _state != "unloaded":
        return _lib
    with _lock:
        if _state != "unloaded":
            return _lib
        if os.environ.get("FDGPU_FUSED", "1") == "0":
            _state = "unavailable: FDGPU_FUSED=0"
            return None
        try:
            cc = _compiler()
            if cc is None:
                raise OSError("no C compiler found ($CC, cc, gcc, clang)")
            version = subprocess.run([cc, "--version"], check=False, capture_output=True, text=True, timeout=60).stdout
            key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(FLAGS), version, _cpu(),
                                            platform.machine()]).encode()).hexdigest()[:20]
            target = cache_dir() / f"fused-{key}.so"
            if not target.exists():
                t0 = time.perf_counter()
                _build(cc, target)
                compile_seconds = time.perf_counter() - t0
            lib = ctypes.CDLL(str(target))  # CDLL: the GIL is released during calls
            fn = lib.fdgpu_forward
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 9 + [ctypes.c_void_p] * 2 + \
                [ctypes.c_int] * 2 + [ctypes.c_void_p] * 2 + [ctypes.c_int]
            bwd = lib.fdgpu_backward
            bwd.restype = ctypes.c_int
            bwd.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 9 + [ctypes.c_void_p] * 2
            _lib, _state = (fn, bwd), "loaded"
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", None) or ""
            _state = f"unavailable: {e} {detail}".strip()
        return _lib


def status() -> str:
    """``"loaded"``, ``"unloaded"`` (not tried yet) or ``"unavailable: <reason>"``."""
    return _state


def _reset() -> None:
    """Forget the loaded library (tests: to exercise the build and the fallback)."""
    global _lib, _state, compile_seconds
    with _lock:
        _lib, _state, compile_seconds = None, "unloaded", None


_FLOATS = (torch.float32, torch.float64)


def forward(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: torch.Tensor | None, subsampling: str,
            need_weight: bool = False):
    """:func:`fdgpu.reference.jpeg.forward` (not ``linear``) on the fused path, or None where it does not apply
    (then the caller runs the torch reference). Same arguments and results."""
    if x.device.type != "cpu" or x.dtype not in _FLOATS or x.dim() != 4 or x.shape[0] == 0:
        return None
    n, ch, h, w = x.shape
    color = ch == 3
    tables = (luma_table, chroma_table) if color else (luma_table,)
    for t in tables:
        if t is None or t.device.type != "cpu" or t.dtype not in _FLOATS or t.shape[-2:] != (8, 8):
            return None
    per_image = luma_table.dim() == 3
    if any((t.dim() == 3) != per_image or (per_image and t.shape[0] != n) for t in tables):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x,) + tables):
        return None  # autograd records the reference's ops ("exact" backward)
    lib = library()
    if lib is None:
        return None
    fn = lib[0]
    tdtype = torch.float64 if any(t.dtype == torch.float64 for t in tables) else torch.float32
    tables = tuple(t.detach().to(tdtype).contiguous() for t in tables)
    x = x.detach().contiguous()
    hs, vs = FACTORS[subsampling] if color else (1, 1)
    out = torch.empty_like(x)
    zy = zc = None
    if need_weight:
        hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
        zy = torch.empty(n, 1, 64, hp // 8, wp // 8, dtype=x.dtype)
        zc = torch.empty(n, 2, 64, hp // 8 // vs, wp // 8 // hs, dtype=x.dtype) if color else None
    args = (x.data_ptr(), out.data_ptr(), int(x.dtype == torch.float64), n, ch, h, w, hs, vs)
    tail = (tables[0].data_ptr(), tables[-1].data_ptr() if color else None, int(tdtype == torch.float64),
            64 if per_image else 0, zy.data_ptr() if zy is not None else None,
            zc.data_ptr() if zc is not None else None, int(x.dtype == torch.float64))

    def run(i: int, j: int) -> int:
        return fn(*args, i, j, *tail)

    codes = _spread(run, n, x)
    if any(codes):
        if any(c == 2 for c in codes):
            raise MemoryError("fdgpu fused CPU forward: out of memory for its scratch buffer")
        return None  # a step that only the reference's float64 quantizer handles
    return out, (zy, zc)


def _spread(run, n: int, x: torch.Tensor):
    """``run(i, j)`` over image ranges covering ``range(n)``: on the calling thread for a small call, else on the
    single-threaded workers."""
    if x.numel() < INLINE_VALUES or workers() <= 1:
        return [run(0, n)]
    step = max(1, -(-n // (CHUNKS_PER_WORKER * workers())))
    return map_chunks(run, [(i, min(n, i + step)) for i in range(0, n, step)], x.device)


def backward(grad: torch.Tensor, saved, subsampling: str, mode: str):
    """:func:`fdgpu.reference.jpeg.backward` without table gradients (``ste``, or ``soft`` with the saved quotients
    ``(zy, zc)``) on the compiled path, or None where it does not apply. Float arithmetic: equal to the torch
    reference up to the order of the float operations, not bit for bit."""
    if grad.device.type != "cpu" or grad.dtype not in _FLOATS or grad.dim() != 4 or grad.shape[0] == 0:
        return None
    if mode not in ("ste", "soft") or torch.is_grad_enabled() and grad.requires_grad:
        return None
    n, ch, h, w = grad.shape
    zy = zc = None
    if mode == "soft":
        if saved is None or saved[0] is None or (ch == 3 and saved[1] is None):
            return None
        zy, zc = saved
        if zy.dtype != grad.dtype or (zc is not None and zc.dtype != grad.dtype) or zy.device.type != "cpu":
            return None
        zy = zy.detach().contiguous()
        zc = zc.detach().contiguous() if ch == 3 else None
    lib = library()
    if lib is None:
        return None
    fn = lib[1]
    grad = grad.detach().contiguous()
    hs, vs = FACTORS[subsampling] if ch == 3 else (1, 1)
    gx = torch.empty_like(grad)
    args = (grad.data_ptr(), gx.data_ptr(), int(grad.dtype == torch.float64), n, ch, h, w, hs, vs)
    tail = (zy.data_ptr() if zy is not None else None, zc.data_ptr() if zc is not None else None)

    def run(i: int, j: int) -> int:
        return fn(*args, i, j, *tail)

    if any(_spread(run, n, grad)):
        raise MemoryError("fdgpu fused CPU backward: out of memory for its scratch buffer")
    return gx

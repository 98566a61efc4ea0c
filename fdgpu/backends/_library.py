"""Finding a C compiler, building ``csrc/fused.c`` into a shared library, caching and loading it (ctypes).

The library is compiled once with the system's C compiler (``$CC``, else ``cc``/``gcc``/``clang``) with
``-O3 -march=native -ffp-contract=off`` (no fused multiply-adds, no fast-math: the float steps must round as the
torch reference's), cached in ``$FDGPU_CACHE`` (default ``~/.cache/fdgpu``) under a name made of a hash of the
source, the flags, the compiler's version and the CPU, and written atomically (concurrent first calls, e.g.
pytest-xdist workers, each compile and rename; one wins). ``FDGPU_FUSED=0`` turns it off.

:func:`library` gives the two entry points ``(fdgpu_forward, fdgpu_backward)`` as ctypes functions, or None when
the library cannot be built or loaded; :func:`status` says why. The wrappers that call them are
:mod:`fdgpu.backends.cpu`.
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

SOURCE = Path(__file__).parent / "csrc" / "fused.c"
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared",
         "-std=gnu11")

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

"""Loading the C library of the ``cpu`` backend (ctypes): the best instruction-set target this CPU runs.

The package's build (``setup.py``) compiles ``csrc/fused.c`` (the round trip) and ``csrc/entropy.c`` (the JPEG file
sizes of :func:`fdgpu.jpeg_size`) together once per target of :mod:`fdgpu.backends._isa` (x86-64:
baseline, v2, v3, v4; other architectures: their baseline) into ``_fused_<target>.so`` beside this module, and
records each library's SHA-256 and the sources' in ``_fused.json``. :func:`library` loads the best target that the
CPU supports (``$FDGPU_CPU_TARGET`` names one instead, e.g. to compare them); every target gives the same bits. A
wheel carries the libraries, so no compiler is needed to use them.

A library is loaded only when its SHA-256 equals the recorded one, and a packaged library only when the recorded
sources are the installed ``csrc/*.c`` (in a source checkout edited since its build, it is stale).

Compile on first use is an explicit opt-in: with ``FDGPU_BUILD=1``, a target that the package lacks (or has stale) is
compiled with the system's C compiler (``$CC``, else ``cc``/``gcc``/``clang``) into ``$FDGPU_CACHE`` (default
``~/.cache/fdgpu``) under a name made of a hash of the source, the target, its flags and the machine (never of the
building CPU: the target is named, not ``-march=native``), written atomically with a ``.sha256`` record beside it.
A cached library is used without a compiler on PATH, and only when that record matches its bytes and the file and
its folder belong to this user and are writable by nobody else (no loading what another user could have put there;
a group-writable folder is accepted when the group is the user's own private group).

``FDGPU_FUSED=0`` turns the library off. :func:`library` gives the entry points ``(fdgpu_forward, fdgpu_backward,
fdgpu_jpeg_entropy, fdgpu_error, fdgpu_encode, fdgpu_decode, fdgpu_forward_checked, fdgpu_jpeg_size)`` as ctypes
functions, or None; :func:`status` says why not, :func:`info` which file and target run. The entries check their
arguments and return 3 for invalid ones (``fdgpu_error()`` then names the argument, on the calling thread).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Tuple

from . import _isa

HERE = Path(__file__).parent
SOURCES = (HERE / "csrc" / "fused.c", HERE / "csrc" / "entropy.c")  # compiled together, in this order
MANIFEST = HERE / "_fused.json"
FIX = ("install fdgpu from a wheel (it carries the compiled library), or reinstall it from source with a C compiler "
       "on PATH, or set FDGPU_BUILD=1 to compile it on first use")

_lock = threading.Lock()
_lib = None          # the loaded library's (forward, backward), once loaded
_state = "unloaded"  # "unloaded", "loaded" or "unavailable: <why>"
_info: dict = {}
compile_seconds: float | None = None  # wall time of this process's compile (None: none compiled)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sources_sha256(paths=None) -> str:
    """One SHA-256 of the sources (default :data:`SOURCES`): of their own SHA-256s in order (setup.py records the
    same)."""
    return hashlib.sha256("".join(_sha256(Path(p)) for p in (SOURCES if paths is None else paths)).encode()).hexdigest()


def cache_dir() -> Path:
    root = os.environ.get("FDGPU_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fdgpu")
    return Path(root)


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


# ------------------------------------------------------------------------------------------- the package's libraries
def _packaged(target: str) -> Tuple[Optional[Path], str]:
    """The package's library for ``target`` and its compiler flags when it is there and checks out, else (None, why
    not)."""
    if not MANIFEST.is_file():
        return None, ("the package holds no compiled library (it was installed from source without a C compiler, "
                      "or is a source checkout that was not built: pip install -e .)")
    try:
        record = json.loads(MANIFEST.read_text())
        entry = record["libraries"].get(target)
        source_sha = record["source_sha256"]
    except (ValueError, KeyError, AttributeError, OSError) as exc:
        return None, f"the package's record {MANIFEST} cannot be read ({type(exc).__name__}: {exc})"
    if entry is None and not record["libraries"]:
        return None, ("the package was installed without its C library (no working C compiler when it was built; "
                      "with one, pip install --force-reinstall --no-cache-dir fdgpu builds it: pip would otherwise "
                      "reuse the wheel it built without)")
    if entry is None:
        return None, f"the package holds no library for the target {target} (built: {', '.join(record['libraries'])})"
    path = HERE / entry["file"]
    if all(p.is_file() for p in SOURCES) and sources_sha256() != source_sha:
        return None, ("the package's library was built from other csrc/*.c sources (edited since the build: rebuild "
                      "it with pip install -e .)")
    if not path.is_file() or _sha256(path) != entry["sha256"]:
        return None, f"the package's library {path} does not match its recorded SHA-256 (damaged: reinstall fdgpu)"
    return path, " ".join(entry.get("flags", ()))


# ----------------------------------------------------------------------------- compiled on first use (FDGPU_BUILD=1)
def _cache_paths(target: str) -> Tuple[Path, Path]:
    key = hashlib.sha256("\0".join([*(p.read_text() for p in SOURCES), target, " ".join(_isa.flags(target)),
                                    platform.machine(), sys.platform]).encode()).hexdigest()[:20]
    lib = cache_dir() / f"fused-{target}-{key}.so"
    return lib, lib.with_suffix(".sha256")


def _own_group(gid: int) -> bool:
    """Whether ``gid`` is this user's private group (named after the user, no other members): where every user has
    one, the usual umask 002 makes files group-writable without letting anyone else write them."""
    try:
        import grp
        import pwd

        group, user = grp.getgrgid(gid), pwd.getpwuid(os.geteuid())
    except (ImportError, KeyError):
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and not set(group.gr_mem) - {user.pw_name}


def _private(path: Path) -> bool:
    """Whether ``path`` belongs to this user and nobody else can write it (POSIX; elsewhere: True)."""
    if not hasattr(os, "geteuid"):
        return True
    st = path.stat()
    if st.st_uid != os.geteuid() or st.st_mode & stat.S_IWOTH:
        return False
    return not st.st_mode & stat.S_IWGRP or _own_group(st.st_gid)


def _cached(target: str) -> Optional[Path]:
    """The cached library of ``target`` when its record matches and it is private to this user, else None."""
    lib, record = _cache_paths(target)
    try:
        if not (lib.is_file() and record.is_file() and _private(lib) and _private(lib.parent)):
            return None
        return lib if record.read_text().strip() == _sha256(lib) else None
    except OSError:
        return None


def _write_atomically(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o755 if target.suffix == ".so" else 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(target: str) -> Path:
    """Compile ``target`` into the cache (atomically: concurrent first calls each compile and rename; one wins)."""
    global compile_seconds
    cc = _compiler()
    if cc is None:
        raise OSError("FDGPU_BUILD=1 but no C compiler found ($CC, cc, gcc, clang)")
    lib, record = _cache_paths(target)
    lib.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _private(lib.parent):
        raise OSError(f"FDGPU_BUILD=1 but the cache folder {lib.parent} is writable by other users; use a private "
                      f"one (FDGPU_CACHE)")
    t0 = time.perf_counter()

    def compile_to(tmp: str) -> None:
        subprocess.run([cc, *_isa.flags(target), "-shared", *map(str, SOURCES), "-o", tmp, "-lm"], check=True,
                       capture_output=True, text=True, timeout=300)
        digest = _sha256(Path(tmp))
        _write_atomically(record, lambda t: Path(t).write_text(digest + "\n"))

    _write_atomically(lib, compile_to)
    compile_seconds = time.perf_counter() - t0
    if _cached(target) is None:  # another process replaced it in between with different bytes: use neither
        raise OSError(f"the library compiled into {lib} changed before it was loaded (concurrent builds?); retry")
    return lib


# ---------------------------------------------------------------------------------------------------------- loading
def _target() -> str:
    """The target to load: ``$FDGPU_CPU_TARGET`` when set (it must run on this CPU), else the best this CPU runs."""
    runs = _isa.supported()
    want = _isa.forced()
    if want is None:
        return runs[0]
    if want not in _isa.targets():
        raise OSError(f"FDGPU_CPU_TARGET: expected one of {', '.join(_isa.targets())}, got {want!r}")
    if want not in runs:
        raise OSError(f"FDGPU_CPU_TARGET={want}: this CPU does not run it (it runs {', '.join(runs)})")
    return want


def bind(lib: ctypes.CDLL):
    """The entry points ``(fdgpu_forward, fdgpu_backward, fdgpu_jpeg_entropy, fdgpu_error, fdgpu_encode,
    fdgpu_decode, fdgpu_forward_checked, fdgpu_jpeg_size)`` of a loaded library,
    typed (csrc/fused.c and csrc/entropy.c document them). Also for a library built another way, e.g. with
    sanitizers (tests/test_native.py)."""
    fn = lib.fdgpu_forward
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 9 + [ctypes.c_void_p] * 2 + \
        [ctypes.c_int] * 2 + [ctypes.c_void_p] * 2 + [ctypes.c_int] + [ctypes.c_int64] * 2
    bwd = lib.fdgpu_backward
    bwd.restype = ctypes.c_int
    bwd.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 9 + [ctypes.c_void_p] * 2 + \
        [ctypes.c_int64] * 2
    ent = lib.fdgpu_jpeg_entropy
    ent.restype = ctypes.c_int
    ent.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] + [ctypes.c_void_p] * 2 + [ctypes.c_int] * 12 + \
        [ctypes.c_void_p]
    err = lib.fdgpu_error
    err.restype = ctypes.c_char_p
    err.argtypes = []
    enc = lib.fdgpu_encode
    enc.restype = ctypes.c_int
    enc.argtypes = [ctypes.c_void_p] + [ctypes.c_int] * 9 + [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + \
        [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2
    dec = lib.fdgpu_decode
    dec.restype = ctypes.c_int
    dec.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] + [ctypes.c_void_p] + [ctypes.c_int] * 8 + \
        [ctypes.c_void_p] * 3 + [ctypes.c_int] * 2 + [ctypes.c_int64] * 2
    chk = lib.fdgpu_forward_checked
    chk.restype = ctypes.c_int
    chk.argtypes = fn.argtypes + [ctypes.c_void_p]
    size = lib.fdgpu_jpeg_size
    size.restype = ctypes.c_int
    size.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 9 + [ctypes.c_void_p] * 2 + [ctypes.c_int] * 3 + \
        [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    return fn, bwd, ent, err, enc, dec, chk, size


def _bind(path: Path):
    return bind(ctypes.CDLL(str(path)))  # CDLL: the GIL is released during calls


def library():
    """The library's ``(fdgpu_forward, fdgpu_backward, fdgpu_jpeg_entropy, fdgpu_error, fdgpu_encode,
    fdgpu_decode, fdgpu_forward_checked, fdgpu_jpeg_size)``, or None when there is none to load; :func:`status`
    says why."""
    global _lib, _state, _info
    if _lib is not None or _state != "unloaded":
        return _lib
    with _lock:
        if _state != "unloaded":
            return _lib
        if os.environ.get("FDGPU_FUSED", "1") == "0":
            _state = "unavailable: FDGPU_FUSED=0"
            return None
        try:
            target = _target()
            path, why = _packaged(target)
            origin, flags = "package", why
            if path is None and os.environ.get("FDGPU_BUILD") == "1":
                path, origin, flags = _cached(target), "cache", " ".join(_isa.flags(target))
                if path is None:
                    path, origin = _build(target), "compiled now"
            if path is None:
                raise OSError(f"{why}; {FIX}")
            _lib = _bind(path)
            _state = "loaded"
            _info = {"library": str(path), "isa": target, "origin": origin, "flags": flags}
        except (OSError, subprocess.SubprocessError) as e:
            detail = (getattr(e, "stderr", None) or "").strip()
            _state = f"unavailable: {e}{' ' + detail if detail else ''}"
        return _lib


def status() -> str:
    """``"loaded"``, ``"unloaded"`` (not tried yet) or ``"unavailable: <reason>"``."""
    return _state


def info() -> dict:
    """What :func:`fdgpu.backends.status` reports about the library: its file (``library``), the instruction-set
    target (``isa``) and its compiler ``flags``, where it came from (``origin``: "package", "cache" or "compiled
    now" with FDGPU_BUILD=1), the targets this CPU runs (``isa_supported``) and this process's ``compile_seconds``
    (None when it compiled nothing). ``library`` and ``isa`` are None until a library is loaded."""
    out = {"library": None, "isa": None, "origin": None, "flags": None, **_info}
    out["isa_supported"] = _isa.supported()
    out["compile_seconds"] = None if compile_seconds is None else round(compile_seconds, 3)
    return out


def _reset() -> None:
    """Forget the loaded library (tests: to exercise the loading, the build and the fallback)."""
    global _lib, _state, _info, compile_seconds
    with _lock:
        _lib, _state, _info, compile_seconds = None, "unloaded", {}, None

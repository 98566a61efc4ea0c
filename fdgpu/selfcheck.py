"""The Triton kernels check themselves on the first use on a device.

The kernels are verified under Triton's CPU interpreter and by ahead-of-time compilation; their first real
execution happens on a user's GPU. So the first Triton call on a CUDA device runs a fixed small set of cases there
(:data:`CASES`: every subsampling and grayscale, odd sizes and one larger than a tile, two qualities, a per-image
table and an FD table, the ``ste`` and ``soft`` backward with the table gradients) and compares them with the CPU
reference: the forward bit for bit (``torch.equal``), gradients within the bounds of the kernel tests
(:data:`GRAD_RTOL`, :data:`TABLE_GRAD_ATOL`). A mismatch raises :class:`SelfCheckError`, naming the case, the
device and what to do.

The verdict is keyed by the device's name and compute capability, the driver, the Triton and torch versions and a
hash of the kernels' source (:func:`key`), and cached for the process and, once passed, on disk in the same folder
as the C library (``$FDGPU_CACHE``, default ``~/.cache/fdgpu``, under ``selfcheck/``): a new driver, Triton or
kernel source checks again.

``FDGPU_SELFCHECK``: unset or ``1``: check each CUDA device once per key (cached on disk); ``0``: never;
``always``: in every process (no disk cache), and also the CPU interpreter (``TRITON_INTERPRET=1``), which is
otherwise not checked (it is what the test suite runs). Its one-time cost is stated in docs/kernels.md.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

#: relative RMSE allowed between the kernels' and the reference's float32 ``grad_x`` (tests/test_kernels.py)
GRAD_RTOL = 1e-5
#: table gradients: max abs error allowed, as a fraction of the reference's largest entry (tests/test_kernels.py)
TABLE_GRAD_ATOL = 1e-5
#: where to report a failed check
REPORT_URL = "the project's issue tracker"

KERNEL_SOURCES = ("jpeg.py", "launch.py")


class SelfCheckError(RuntimeError):
    """The Triton kernels computed something else than the CPU reference on this device."""


@dataclass(frozen=True)
class Case:
    """One check: an ``(N, C, H, W)`` input, a subsampling, tables (``"q<quality>"``, ``"per-image"`` qualities
    or ``"fd"``) and the backward modes whose ``grad_x`` and table gradients are compared."""
    name: str
    shape: Tuple[int, int, int, int]
    subsampling: str
    tables: str
    modes: Tuple[str, ...]


CASES = (
    # larger than one tile both ways (the large class's tiles are at most 32 x 128 pixels), odd, 4:2:0, IJG 75
    Case("4:2:0 41x133 q75", (1, 3, 41, 133), "4:2:0", "q75", ("ste",)),
    # odd, per-image IJG tables (qualities 30 and 90), 4:2:2
    Case("4:2:2 21x19 per-image q30/q90", (2, 3, 21, 19), "4:2:2", "per-image", ("soft",)),
    # the small size class, FD table (steps 1 and 40), 4:4:4
    Case("4:4:4 13x11 FD 1x", (1, 3, 13, 11), "4:4:4", "fd", ("ste", "soft")),
    # grayscale, IJG 30
    Case("gray 19x23 q30", (1, 1, 19, 23), "4:2:0", "q30", ("soft",)),
    # 4:2:0 in the small size class, 2 chroma samples wide (replicated, not the triangle filter)
    Case("4:2:0 9x4 q75", (1, 3, 9, 4), "4:2:0", "q75", ("soft",)),
)

_lock = threading.Lock()
_verdicts: Dict[str, Optional[str]] = {}  # key digest -> None (passed) or the error message
last_seconds: Optional[float] = None       # the duration of this process's last check run


def mode() -> str:
    """``FDGPU_SELFCHECK`` as ``"0"``, ``"1"`` or ``"always"`` (anything else is an error naming the variable)."""
    value = os.environ.get("FDGPU_SELFCHECK", "1").strip().lower()
    if value not in ("0", "1", "always"):
        raise ValueError(f"FDGPU_SELFCHECK: expected 0, 1 or always, got {value!r}")
    return value


def driver_version() -> Optional[str]:
    """The NVIDIA driver's version (NVML, e.g. ``"550.54.15"``), else the CUDA driver API's (``"cuda 12040"``), else
    None (no driver)."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() == 0:
            buf = ctypes.create_string_buffer(96)
            if nvml.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(96)) == 0:
                return buf.value.decode()
    except (OSError, AttributeError):
        pass
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"cuda {v.value}"
    except (OSError, AttributeError):
        pass
    return None


def kernels_hash() -> str:
    """SHA-256 of the kernels' source files (``fdgpu.kernels``' jpeg.py and launch.py)."""
    from . import kernels

    h = hashlib.sha256()
    for name in KERNEL_SOURCES:
        h.update((Path(kernels.__file__).parent / name).read_bytes())
    return h.hexdigest()


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def device_facts(device: torch.device) -> dict:
    """Name, compute capability and driver of ``device`` (the interpreter for a CPU device)."""
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"device": p.name, "capability": f"sm_{p.major}{p.minor}", "driver": driver_version()}
    return {"device": f"Triton interpreter on {platform.machine()} ({device})", "capability": None, "driver": None}


def key(device: torch.device) -> dict:
    """What the verdict depends on: the device's facts, Triton's and torch's versions, the kernels' source."""
    import triton

    return {**device_facts(device), "triton": triton.__version__, "torch": torch.__version__,
            "kernels": kernels_hash()}


def _digest(k: dict) -> str:
    return hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:32]


def _cache_file(digest: str) -> Path:
    from .backends._library import cache_dir

    return cache_dir() / "selfcheck" / f"{digest}.json"


def _tables(case: Case, device: torch.device):
    from . import tables

    n = case.shape[0]
    if case.tables == "fd":
        lt = ct = tables.fd(1.0)
    elif case.tables == "per-image":
        lt, ct = tables.ijg(torch.tensor([30.0, 90.0][:n]))
    else:
        lt, ct = tables.ijg(float(case.tables[1:]))
    return lt.float().to(device).contiguous(), ct.float().to(device).contiguous()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).square().mean().sqrt() / b.square().mean().sqrt().clamp_min(1e-300)).item()


def run_case(case: Case, device: torch.device) -> List[str]:
    """Compare one case on ``device`` with the CPU reference; returns the failures (empty when it passed)."""
    from . import kernels
    from .reference import jpeg as ref

    gen = torch.Generator().manual_seed(zlib.crc32(case.name.encode()))
    x = torch.rand(case.shape, generator=gen)
    g = torch.randn(case.shape, generator=gen)
    lt, ct = _tables(case, torch.device("cpu"))
    xd, gd, ltd, ctd = (t.to(device) for t in (x, g, lt, ct))
    sub = case.subsampling
    out = []
    y = kernels.forward(xd, ltd, ctd, sub).cpu()
    want = ref.forward(x, lt, ct, sub)[0]
    if not torch.equal(y, want):
        diff = (y - want).abs()
        out.append(f"case {case.name!r}: forward differs from the CPU reference at {int((diff != 0).sum())} of "
                   f"{diff.numel()} values (max {diff.max().item() * 255:.3g}/255)")
    for m in case.modes:
        gx, gl, gc = (t.cpu() for t in kernels.backward(gd, xd, ltd, ctd, sub, m, True))
        _, state = ref.forward(x, lt, ct, sub, need_weight=True)
        rx, rl, rc = ref.backward(g, state, sub, m, (lt, ct))
        tol = GRAD_RTOL
        if m == "soft":  # the soft weight's slope: as tests/test_kernels.py's soft_tolerance
            _, s64 = ref.forward(x.double(), lt.double(), ct.double(), sub, need_weight=True)
            tol = max(GRAD_RTOL, 2 * _rel(rx, ref.backward(g.double(), s64, sub, m)))
        err = _rel(gx, rx)
        if not (err <= tol):  # NaN fails
            out.append(f"case {case.name!r}: {m} backward grad_x relative RMSE {err:.3g} > {tol:.3g}")
        for name, a, b in (("luma", gl, rl), ("chroma", gc, rc)):
            scale = b.abs().max().item()
            e = (a - b).abs().max().item()
            if not (e <= TABLE_GRAD_ATOL * scale):
                out.append(f"case {case.name!r}: {m} {name} table gradient max abs error {e:.3g} > "
                           f"{TABLE_GRAD_ATOL:g} x {scale:.3g}")
    return out


def run(device: torch.device) -> List[str]:
    """Every case of :data:`CASES` on ``device``; returns the failures. Sets :data:`last_seconds`."""
    global last_seconds
    t0 = time.perf_counter()
    failures: List[str] = []
    with torch.no_grad():
        for case in CASES:
            try:
                failures += run_case(case, device)
            except Exception as e:  # a crash on the device is a failed check too
                failures.append(f"case {case.name!r}: raised {type(e).__name__}: {e}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    last_seconds = time.perf_counter() - t0
    return failures


def _message(failures: List[str], facts: dict) -> str:
    where = facts["device"] + "".join(f", {k} {facts[k]}" for k in ("capability", "driver", "triton") if facts.get(k))
    shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
    return (f"fdgpu self-check of the Triton kernels failed on {where}: {shown}. The Triton backend is not to be "
            f"trusted on this device: pass backend='torch' (the same results, slower), run `fdgpu doctor` for a "
            f"report of this machine and send it with this message to {REPORT_URL}. FDGPU_SELFCHECK=0 turns the "
            f"check off (the kernels' results are then unchecked).")


def verdict(device: torch.device) -> Optional[dict]:
    """The cached verdict for ``device`` without running anything: ``{"passed": bool, ...}`` or None (not checked
    in this process nor on disk)."""
    k = key(device)
    d = _digest(k)
    if d in _verdicts:
        return {"passed": _verdicts[d] is None, "error": _verdicts[d], "source": "process", **k}
    f = _cache_file(d)
    if f.is_file():
        try:
            rec = json.loads(f.read_text())
            if rec.get("key") == k and rec.get("passed") is True:
                return {"passed": True, "error": None, "source": str(f), "seconds": rec.get("seconds"), **k}
        except (OSError, ValueError):
            pass
    return None


_MISSING = object()
_by_device: Dict[torch.device, Optional[str]] = {}  # the fast path: device -> None (passed/off) or the error


def _applies(device: torch.device, m: str) -> bool:
    return m == "always" or (m == "1" and device.type == "cuda")


def ensure(device: torch.device) -> None:
    """Check the kernels on ``device`` unless this key already passed (this process or on disk) or
    ``FDGPU_SELFCHECK`` (read at the first call per device) says not to; raise :class:`SelfCheckError` on a
    mismatch (and on every later call on this device in the process). Nothing happens while torch.compile traces or
    a CUDA graph is being captured (the eager warm-up call before either has checked); after the first call per
    device it is one dictionary lookup."""
    if torch.compiler.is_compiling():
        return
    hit = _by_device.get(device, _MISSING)
    if hit is None:
        return
    if hit is _MISSING:
        if _not_now(device):
            return
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        hit = _by_device.get(device, _MISSING)
        if hit is _MISSING:
            hit = _by_device[device] = _check(device)
    if hit is not None:
        raise SelfCheckError(hit)


def _not_now(device: torch.device) -> bool:
    """Whether the check cannot run now: fake tensors (shapes without data, e.g. a CUDA device on a machine without
    one) or a CUDA graph being captured."""
    if torch._guards.detect_fake_mode() is not None:
        return True
    return device.type == "cuda" and (not torch.cuda.is_available() or torch.cuda.is_current_stream_capturing())


def _check(device: torch.device) -> Optional[str]:
    m = mode()
    if not _applies(device, m):
        return None
    k = key(device)
    d = _digest(k)
    with _lock:
        if d not in _verdicts:
            cached = m != "always" and verdict(device)
            if cached and cached["passed"]:
                _verdicts[d] = None
            else:
                failures = run(device)
                _verdicts[d] = _message(failures, k) if failures else None
                if not failures and m != "always":
                    _store(d, k)
        return _verdicts[d]


def _store(digest: str, k: dict) -> None:
    """Write the passed verdict atomically (a temporary file renamed); an unwritable cache is not an error (the
    check then runs again in the next process)."""
    f = _cache_file(digest)
    rec = {"key": k, "passed": True, "seconds": last_seconds, "cases": [c.name for c in CASES],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=f.parent, suffix=".tmp", delete=False) as tmp:
            json.dump(rec, tmp, indent=1)
        os.replace(tmp.name, f)
    except OSError:
        pass


def _reset() -> None:
    """Forget this process's verdicts (tests)."""
    with _lock:
        _verdicts.clear()
        _by_device.clear()


__all__ = ["CASES", "SelfCheckError", "ensure", "run", "verdict", "key", "mode", "driver_version"]

"""``fdgpu doctor [--json] [--probe-seconds S]``: what this machine runs, and whether each backend works here.

Reports the Python, torch, Triton, CUDA and driver versions and the C compiler; for each backend of ``backend=``
whether it is usable and why not; per CUDA device its name, capability, memory and the kernels' self-check verdict
(:mod:`fdgpu.selfcheck`: run now unless already cached for this device, driver, Triton and kernel source); and a
speed probe per usable backend (``fdgpu.jpeg`` at quality 75, 4:2:0, repeated for about ``--probe-seconds``; 0 skips
it). ``--json`` prints the same facts as one JSON object. Exit status 0 when every usable backend ran its probe and
every CUDA device passed its self-check, else 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict, Optional

import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    p.add_argument("--probe-seconds", type=float, default=2.0, metavar="S",
                   help="time of the speed probe per usable backend (default 2; 0 skips the probes)")


def _compiler() -> dict:
    from .backends import _library

    path = _library._compiler()
    out = {"path": path, "version": None}
    if path:
        try:
            res = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
            out["version"] = (res.stdout or res.stderr).splitlines()[0].strip() if res.returncode == 0 else None
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return out


def versions() -> dict:
    from . import __version__, selfcheck

    try:
        import triton
        triton_version: Optional[str] = triton.__version__
    except ImportError:
        triton_version = None
    return {"fdgpu": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "triton": triton_version, "cuda": torch.version.cuda, "driver": selfcheck.driver_version(),
            "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1", "c_compiler": _compiler()}


def backends() -> dict:
    """``{name: {"usable": bool, "why": str or None, ...}}`` for every backend of ``backend=``: the facts of
    :func:`fdgpu.backends.status` (which loads the C library and, where CUDA or the interpreter is there, imports
    Triton)."""
    from . import backends as registry

    out = {}
    for name, st in registry.status().items():
        why = st.get("reason")
        if name == "triton" and st["available"] and not torch.cuda.is_available():
            why = "no CUDA device: the kernels run on Triton's CPU interpreter (TRITON_INTERPRET=1), for testing"
        out[name] = {"usable": bool(st["available"]), "why": why, **{k: v for k, v in st.items()
                                                                     if k not in ("available", "reason")}}
    return out


def _triton_usable() -> bool:
    from . import backends as registry

    return registry.REGISTRY["triton"].status()["available"]


def devices(run_selfcheck: bool = True) -> list:
    """Per CUDA device: name, capability, memory and the self-check verdict."""
    from . import backends as registry

    out: list = []
    if not torch.cuda.is_available():
        return out
    for i in range(torch.cuda.device_count()):
        d = torch.device("cuda", i)
        p = torch.cuda.get_device_properties(d)
        rec = {"index": i, "name": p.name, "capability": f"sm_{p.major}{p.minor}",
               "memory_gib": round(p.total_memory / 2 ** 30, 1), "selfcheck": None}
        if registry.get("triton").available() and run_selfcheck:
            rec["selfcheck"] = _selfcheck(d)
        out.append(rec)
    return out


def _selfcheck(device: torch.device) -> dict:
    from . import selfcheck

    cached = selfcheck.verdict(device)
    if cached is not None:
        return {"passed": cached["passed"], "error": cached["error"], "ran_now": False}
    t0 = time.perf_counter()
    failures = selfcheck.run(device)
    return {"passed": not failures, "error": "; ".join(failures) or None, "ran_now": True,
            "seconds": round(time.perf_counter() - t0, 2)}


def probe(backend: str, device: torch.device, seconds: float) -> dict:
    """``fdgpu.jpeg`` (quality 75, 4:2:0, validate=False) on random 224 x 224 images repeated for about ``seconds``
    after one warm-up call: images per second and ms per call (the median call)."""
    import fdgpu

    batch, size = (32 if device.type == "cuda" else 4), 224
    if device.type != "cuda" and backend == "triton":
        batch, size = 1, 16  # Triton's interpreter: a smoke run, not a speed
    x = torch.rand(batch, 3, size, size, device=device)
    fdgpu.jpeg(x, 75, backend=backend, validate=False)  # warm-up (compilation, caches)
    times = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        fdgpu.jpeg(x, 75, backend=backend, validate=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() >= end:
            break
    times.sort()
    med = times[len(times) // 2]
    return {"device": str(device), "batch": batch, "size": size, "calls": len(times),
            "ms_per_call": round(med * 1e3, 3), "images_per_s": round(batch / med, 1)}


def report(probe_seconds: float = 2.0) -> dict:
    """Every fact of the doctor, as one JSON-able dict."""
    out: Dict[str, Any] = {"versions": versions(), "backends": backends(), "devices": devices(), "probes": {}}
    if probe_seconds > 0:
        cuda = torch.cuda.is_available()
        for name, b in out["backends"].items():
            if not b["usable"]:
                continue
            targets = {"torch": ["cpu"] + (["cuda"] if cuda else []), "cpu": ["cpu"],
                       "triton": ["cuda" if cuda else "cpu"]}.get(name, ["cuda" if cuda else "cpu"])
            for d in targets:
                try:
                    out["probes"][f"{name} {d}"] = probe(name, torch.device(d), probe_seconds)
                except Exception as e:  # a failing backend is a finding, not a crash of the doctor
                    out["probes"][f"{name} {d}"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def healthy(rep: dict) -> bool:
    return (all(d["selfcheck"] is None or d["selfcheck"]["passed"] for d in rep["devices"])
            and not any("error" in p for p in rep["probes"].values()))


def _text(rep: dict) -> str:
    v = rep["versions"]
    cc = v["c_compiler"]
    lines = [f"fdgpu {v['fdgpu']}, Python {v['python']}, torch {v['torch']}, Triton {v['triton'] or 'not installed'}",
             f"CUDA {v['cuda'] or 'none (CPU build of torch)'}, driver {v['driver'] or 'none'}, "
             f"{v['cuda_devices']} CUDA device(s)",
             f"C compiler: {cc['path'] or 'none found'}" + (f" ({cc['version']})" if cc["version"] else ""),
             "", "backends:"]
    for name, b in rep["backends"].items():
        state = "usable" if b["usable"] else "not usable"
        lines.append(f"  {name:7s} {state}" + (f": {b['why']}" if b["why"] else ""))
        if b.get("library"):
            lines.append(f"          {b['library']}" + (f", {b['isa']} from {b.get('origin')}" if b.get("isa") else ""))
    lines.append("")
    lines.append("CUDA devices:" if rep["devices"] else "CUDA devices: none")
    for d in rep["devices"]:
        sc = d["selfcheck"]
        verdict = ("not run (Triton unavailable)" if sc is None else
                   "passed" + (f" (ran now, {sc['seconds']} s)" if sc["ran_now"] else " (cached)") if sc["passed"]
                   else f"FAILED: {sc['error']}")
        lines.append(f"  cuda:{d['index']} {d['name']} {d['capability']}, {d['memory_gib']} GiB, "
                     f"self-check {verdict}")
    if rep["probes"]:
        lines += ["", "speed probe (fdgpu.jpeg, quality 75, 4:2:0):"]
        for name, p in rep["probes"].items():
            lines.append(f"  {name:12s} " + (f"ERROR {p['error']}" if "error" in p else
                                             f"{p['images_per_s']:>10.1f} images/s ({p['batch']} x {p['size']}^2, "
                                             f"{p['ms_per_call']} ms per call, {p['calls']} calls)"))
    return "\n".join(lines)


def run(args) -> int:
    if not args.probe_seconds >= 0:
        print(f"fdgpu doctor: --probe-seconds: expected a number >= 0, got {args.probe_seconds:g}", file=sys.stderr)
        return 2
    rep = report(args.probe_seconds)
    print(json.dumps(rep, indent=1) if args.json else _text(rep))
    return 0 if healthy(rep) else 1

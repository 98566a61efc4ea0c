"""The C library's instruction-set targets side by side: what one wheel gives on CPUs of each x86-64 level.

    python benchmarks/isa.py [--threads 1] [--rounds 25]

The wheel holds one library per target (fdgpu/backends/_isa.py) and loads the best the CPU runs. Here every target
this CPU runs is loaded into one process (the package's libraries, or compiled into the cache with FDGPU_BUILD=1),
plus ``-march=native`` compiled now when a C compiler is found (what a local build for this CPU would give), and the
same forward is timed on each, alternating library call by call so that a busy machine slows all of them alike:
batch of 32 RGB 224x224 smooth images, q75, 4:2:0, the library's forward alone (``fused_forward``: no input checks).
Every library's output is checked equal to the first's. Prints one markdown table: median and minimum ms per image
and the ratio of medians to the target the wheel picks here, with a machine line.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import tempfile
import time

import torch

import fdgpu
from fdgpu.backends import _isa, _library, cpu
from fdgpu.environment import cpu_model, loadavg


def libraries() -> dict:
    """name -> the bound entry points of each target this CPU runs (best first), and ``native`` when possible."""
    os.environ.setdefault("FDGPU_BUILD", "1")
    found = {}
    for target in _isa.supported():
        os.environ["FDGPU_CPU_TARGET"] = target
        _library._reset()
        if _library.library() is None:
            raise SystemExit(f"{target}: {_library.status()}")
        found[target] = _library._lib
    del os.environ["FDGPU_CPU_TARGET"]
    cc = _library._compiler()
    if cc is not None:
        folder = tempfile.mkdtemp()
        flags = [f for f in _isa.flags(_isa.supported()[-1]) if not f.startswith("-march")] + ["-march=native"]
        subprocess.run([cc, *flags, "-shared", *map(str, _library.SOURCES), "-o", f"{folder}/native.so", "-lm"],
                       check=True, capture_output=True)
        found["native (local build)"] = _library.bind(ctypes.CDLL(f"{folder}/native.so"))
        shutil.rmtree(folder)  # the loaded library stays mapped
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=25, help="calls per library (alternated)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    libs = libraries()
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(32, 3, 28, 28, generator=g), size=224, mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    lt, ct = fdgpu.tables.ijg(75)
    times = {name: [] for name in libs}
    first = None
    load_before = "%.1f" % loadavg()[0] if loadavg() else "n/a"
    for rnd in range(args.rounds + 2):  # two warm-up rounds
        for name, lib in libs.items():
            _library._lib = lib
            t0 = time.perf_counter()
            y = cpu.fused_forward(x, lt, ct, "4:2:0")[0]
            dt = time.perf_counter() - t0
            first = y if first is None else first
            if not torch.equal(y, first):
                raise SystemExit(f"{name}: output differs from {next(iter(libs))}'s")
            if rnd >= 2:
                times[name].append(dt * 1e3 / x.shape[0])
    _library._reset()
    best = _isa.supported()[0]
    med = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    load_after = "%.1f" % loadavg()[0] if loadavg() else "n/a"
    print(f"{cpu_model()}, {os.cpu_count()} CPUs, {args.threads} torch threads, 1-minute load {load_before} -> "
          f"{load_after}; fdgpu {fdgpu.__version__}, torch {torch.__version__}")
    print(f"\n| library | ms / image (median) | min | x {best} |\n| --- | ---: | ---: | ---: |")
    for name in libs:
        print(f"| {name} | {med[name]:.3f} | {min(times[name]):.3f} | {med[name] / med[best]:.2f} |")


if __name__ == "__main__":
    main()

"""Run by .ci/wheel.sh inside a fresh venv holding only the built wheel, with no C compiler on PATH.

Checks that the wheel's own compiled library is what runs (not a source checkout, not a compile on first use), that
it is the best instruction-set target this CPU runs, that ``backend="auto"`` picks ``cpu`` without a warning, and that
every target the CPU runs gives the torch reference's bits (each in a subprocess: one library per process).
"""
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import torch

import fdgpu
from fdgpu.backends import _isa, _library, status


def _bits(target: str) -> None:
    """In this process (``$FDGPU_CPU_TARGET`` set): the wheel's library of ``target`` gives the torch reference's
    bits, colour (every subsampling, float32 and float64) and grayscale."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 37, 45, generator=g)
    for sub in fdgpu.SUBSAMPLINGS:
        for dtype in (torch.float32, torch.float64):
            xx = x.to(dtype)
            y = fdgpu.jpeg(xx, 75, subsampling=sub, backend="cpu")
            ref = fdgpu.jpeg(xx, 75, subsampling=sub, backend="torch")
            assert torch.equal(y, ref), (target, sub, dtype)
    gray = fdgpu.jpeg(x[:, :1], 50, backend="cpu")
    assert torch.equal(gray, fdgpu.jpeg(x[:, :1], 50, backend="torch")), target
    info = _library.info()
    assert info["isa"] == target and info["origin"] == "package", info


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--target":
        _bits(sys.argv[2])
        return
    no_compiler = "--no-compiler" in sys.argv  # .ci/wheel.sh's venv (cibuildwheel's test has one on PATH)
    wheel = next((a for a in sys.argv[1:] if a.endswith(".whl")), None)
    if no_compiler:
        for cc in ("cc", "gcc", "clang"):
            assert shutil.which(cc) is None, f"expected no C compiler on PATH, got {shutil.which(cc)}"
    assert Path(fdgpu.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), \
        f"expected fdgpu from the venv {sys.prefix}, got {fdgpu.__file__}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        y = fdgpu.jpeg(torch.rand(2, 3, 16, 16), 75)
    cpu = status()["cpu"]
    assert cpu["available"], cpu
    assert cpu["origin"] == "package" and Path(cpu["library"]).parent == Path(fdgpu.__file__).parent / "backends", cpu
    assert cpu["isa"] == _isa.supported()[0] and _library.compile_seconds is None, cpu
    assert y.shape == (2, 3, 16, 16)
    for target in _isa.supported():
        env = dict(os.environ, FDGPU_CPU_TARGET=target)
        subprocess.run([sys.executable, "-I", __file__, "--target", target], env=env, check=True)
    size = f"{Path(wheel).name} ({Path(wheel).stat().st_size / 1e3:.0f} kB)" if wheel else "the installed wheel"
    print(f"wheel check: {size} runs the cpu backend{' without a compiler on PATH' if no_compiler else ''}, "
          f"{cpu['isa']} loaded from the package; targets {', '.join(_isa.supported())} equal the torch reference")
    print(json.dumps(cpu))


if __name__ == "__main__":
    main()

"""The instruction-set targets of the C library, and which of them this CPU runs.

One source (``csrc/fused.c``, plain C that the compiler vectorises) is compiled once per target: on x86-64 the four
levels of the x86-64 psABI (baseline SSE2, v2 SSE4.2, v3 AVX2, v4 AVX-512), elsewhere (aarch64, arm64) the
architecture's baseline. At load time the best target the CPU supports is chosen. The results are integers and
the flags keep every float step as the torch reference rounds it (``-ffp-contract=off``: no fused multiply-add even
where the target has FMA; no fast-math), so every target gives the same bits; only the speed differs.

No imports beyond the standard library: ``setup.py`` reads this file to know what to build.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Dict, FrozenSet, List, Optional, Tuple

# Flags of every target: optimised, float steps exactly as written (the reference's rounding), position independent.
COMMON_FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-std=gnu11")

# x86-64 levels: the CPU features each adds (the names of Linux's /proc/cpuinfo "flags"), as the psABI defines them.
_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"})
_V3 = _V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
X86_64: Dict[str, Tuple[Tuple[str, ...], FrozenSet[str]]] = {  # name: (compiler flags, required CPU features)
    "x86-64": (("-march=x86-64",), frozenset()),
    "x86-64-v2": (("-march=x86-64-v2",), _V2),
    "x86-64-v3": (("-march=x86-64-v3",), _V3),
    "x86-64-v4": (("-march=x86-64-v4",), _V4),
}
BASELINE = "baseline"  # any other architecture: the compiler's default for it (armv8-a on aarch64)

# macOS names (sysctl machdep.cpu.features / leaf7_features / extfeatures) -> the names above
_MACOS = {"sse3": "pni", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx1.0": "avx", "lahf": "lahf_lm", "lzcnt": "abm"}


def is_x86_64(machine: Optional[str] = None) -> bool:
    return (machine or platform.machine()).lower() in ("x86_64", "amd64")


def targets(machine: Optional[str] = None) -> List[str]:
    """The targets built for ``machine`` (default this one), from the baseline up."""
    return list(X86_64) if is_x86_64(machine) else [BASELINE]


def flags(target: str) -> Tuple[str, ...]:
    """The compiler flags of ``target`` (without ``-shared`` and the output)."""
    if target == BASELINE:
        return COMMON_FLAGS
    return COMMON_FLAGS + X86_64[target][0]


def cpu_features() -> Optional[FrozenSet[str]]:
    """This CPU's features as the operating system enables them (Linux: /proc/cpuinfo; macOS: sysctl), or None when
    they cannot be read (then only the baseline is used)."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if line.startswith("flags"):
                        return frozenset(line.split(":", 1)[1].split())
        except OSError:
            return None
        return None
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["/usr/sbin/sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features",
                                  "machdep.cpu.extfeatures"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        names = {w.lower() for w in out.split()}
        return frozenset(_MACOS.get(n, n) for n in names)
    return None


def supported(features: Optional[FrozenSet[str]] = None, machine: Optional[str] = None) -> List[str]:
    """The targets this CPU runs, best first (``features``: default :func:`cpu_features`).

    >>> supported(frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}), "x86_64")
    ['x86-64-v2', 'x86-64']
    >>> supported(frozenset(), "aarch64")
    ['baseline']
    """
    if not is_x86_64(machine):
        return [BASELINE]
    if features is None:
        features = cpu_features() or frozenset()
    return [name for name, (_, need) in reversed(X86_64.items()) if need <= features]


def forced() -> Optional[str]:
    """The target named by ``$FDGPU_CPU_TARGET`` (to compare targets), or None."""
    return os.environ.get("FDGPU_CPU_TARGET") or None

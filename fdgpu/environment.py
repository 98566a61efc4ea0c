"""What a measurement ran on, captured in one place: CPU model, cores, threads, GPU, load and package versions.

Used by ``fdgpu bench`` (its JSON's ``environment``, ``versions`` and ``backends``), ``fdgpu eval`` (the results'
``machine`` and ``backends``) and the benchmark suites' summaries.
"""
from __future__ import annotations

import importlib
import os
import platform
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

#: the packages whose versions a benchmark records (None when absent or broken)
PACKAGES = ("fdgpu", "torch", "numpy", "kornia", "PIL", "skimage", "faiss", "scipy", "triton")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages, or None where the OS has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def versions(packages: Iterable[str] = PACKAGES) -> dict:
    """Python's version and each package's ``__version__`` (None when it cannot be imported), plus the
    libjpeg-turbo that Pillow uses when Pillow is there."""
    out: Dict[str, Any] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # optional: absent or broken
            out[name] = None
    try:
        from PIL import features

        out["libjpeg_turbo"] = features.version("libjpeg_turbo")
    except Exception:
        pass
    return out


def environment() -> dict:
    """CPU model and count, torch's threads, the platform, the load average now and the GPU (when CUDA is there)."""
    import torch

    env = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "platform": platform.platform(), "loadavg_start": loadavg(), "cuda": torch.cuda.is_available()}
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name(0)
        env.update(gpu_facts())
    return env


def gpu_facts(index: int = 0) -> dict:
    """What a GPU result ran on, as ``fdgpu doctor`` reports it: the device's name, compute capability and driver,
    the CUDA runtime, Triton's version and the kernels' source hash (``gpu_key``, :func:`fdgpu.selfcheck.key`), and
    the kernels' self-check verdict on it (``selfcheck``: True/False from this process or the disk cache, None when
    not checked; nothing is run here)."""
    import torch

    from . import selfcheck

    device = torch.device("cuda", index)
    out: Dict[str, Any] = {"cuda_runtime": torch.version.cuda}
    try:
        out["gpu_key"] = selfcheck.key(device)
        v = selfcheck.verdict(device)
        out["selfcheck"] = None if v is None else v["passed"]
    except ImportError as e:  # Triton absent: no kernels to key or check
        out["gpu_key"] = selfcheck.device_facts(device)
        out["selfcheck"] = f"not applicable: {e}"
    return out


def machine() -> str:
    """One line: CPU model and core count, plus the GPU's name when CUDA is available."""
    import torch

    text = f"{cpu_model()}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def backends() -> dict:
    """Which implementations of the layer are available here and why not: :func:`fdgpu.backends.status` (builds
    the C library on first use)."""
    from .backends import status

    return status()


def backends_line(status: Optional[dict] = None) -> str:
    """:func:`backends` as one line for a report: ``backends: torch; cpu (/path/to/library.so, x86-64-v3); triton
    unavailable (reason)``."""
    from .backends import summary

    return summary(status)

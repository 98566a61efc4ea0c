"""The ``triton`` backend: the Triton kernels (:mod:`fdgpu.kernels`, launched by ``kernels/launch.py``), CUDA
tensors in float32, or CPU tensors through Triton's interpreter when ``TRITON_INTERPRET=1`` was set before Triton
was imported. The kernels recompute the backward's quotients from ``x`` (no saved state) and give table
gradients (reduced per image without atomics: deterministic)."""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
from typing import Any, Dict, Optional

import torch

from ..choices import BACKWARD_MODES
from . import torch as _reference

NAME = "triton"
DESCRIPTION = "the Triton kernels (CUDA; CPU through Triton's interpreter with TRITON_INTERPRET=1)"
DTYPES = (torch.float32,)
CHECKS_INPUT = False
SAVES_STATE = False
TABLE_GRADS = True
TABLES = "any steps >= 1, shared (8, 8) or per image (N, 8, 8)"
FIX = "install Triton (pip install 'fdgpu[triton]')"


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def devices():
    return ("cuda", "cpu") if _interpreted() else ("cuda",)


_KERNELS = None


def _kernels():
    # imports triton: only once a kernel is to run (or CUDA is there); then kept (an import statement per call
    # costs microseconds of a small image's host time)
    global _KERNELS
    if _KERNELS is None:
        from .. import kernels
        _KERNELS = kernels
    return _KERNELS


@functools.lru_cache(maxsize=None)
def _installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def unavailable() -> Optional[str]:
    if not _installed():
        return "triton is not installed"
    if not (torch.cuda.is_available() or _interpreted()):
        return "no CUDA device (TRITON_INTERPRET=1 runs the kernels on the CPU through Triton's interpreter)"
    try:
        if not getattr(_kernels(), "AVAILABLE", False):
            return "triton cannot be imported"
    except ImportError as e:
        return f"the kernels cannot be imported: {e}"
    return None


def details() -> dict:
    out: Dict[str, Any] = {"interpreter": _interpreted()}
    try:
        out["triton"] = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        out["triton"] = None
    return out


def forward(x, luma_table, chroma_table, subsampling: str, save: bool):
    return _kernels().forward(x, luma_table, chroma_table, subsampling), None, None


def backward(grad, x, luma_table, chroma_table, state, subsampling: str, mode: str, table_grads: bool):
    """The kernels for the adjoint modes that have a kernel constant (``ste``, ``soft``); another adjoint mode of
    :data:`fdgpu.choices.BACKWARD_MODES` runs the torch reference's adjoint on the same device."""
    if BACKWARD_MODES[mode].kernel is None:
        return _reference.backward(grad, x, luma_table, chroma_table, state, subsampling, mode, table_grads)
    return _kernels().backward(grad, x, luma_table, chroma_table, subsampling, mode, table_grads)

"""Triton kernels for fdgpu, installed as ``fdgpu.kernels`` (source folder ``kernels/`` at the repository root).

This package imports without Triton: ``AVAILABLE`` is then False and ``fdgpu.functional`` falls back to the torch
reference. The launchers mirror :mod:`fdgpu.reference.jpeg`::

    y, saved = forward(x, luma_table, chroma_table, subsampling, need_weight=False)
    grad_x = backward(grad, saved, subsampling)          # saved None: "ste", else "soft"

They take checked, contiguous float32 tensors (validation happens once, in :mod:`fdgpu.functional`). Run the
kernels on CPU with ``TRITON_INTERPRET=1`` set before Triton is imported.
"""
from __future__ import annotations

try:
    import triton  # noqa: F401
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where triton is missing
    AVAILABLE = False

if AVAILABLE:
    from .launch import backward, forward  # noqa: F401

__all__ = ["AVAILABLE", "forward", "backward"]

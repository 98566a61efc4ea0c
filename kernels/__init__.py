"""Triton kernels for fdgpu, installed as ``fdgpu.kernels`` (source folder ``kernels/`` at the repository root).

This package imports without Triton: ``AVAILABLE`` is then False, the ``triton`` backend is unavailable, and
``backend="auto"`` runs the torch reference on CUDA tensors. The launchers (in ``launch.py``)::

    y = forward(x, luma_table, chroma_table, subsampling)
    grad_x, grad_luma, grad_chroma = backward(grad, x, luma_table, chroma_table, subsampling, mode, table_grads)
    qy, qc = encode(x, luma_table, chroma_table, subsampling)
    y = decode(qy, qc, tables, subsampling, h, w)

take the backward mode by name (``"ste"`` or ``"soft"``; table gradients None unless ``table_grads``). They take
checked, contiguous float32 images (validation happens once, in :mod:`fdgpu.functional`) and tables of any layout.
Run the kernels on CPU with ``TRITON_INTERPRET=1`` set before Triton is imported.
"""
from __future__ import annotations

try:
    import triton  # noqa: F401
    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where triton is missing
    AVAILABLE = False

if AVAILABLE:
    from .launch import backward, decode, encode, forward  # noqa: F401

__all__ = ["AVAILABLE", "forward", "backward", "encode", "decode"]

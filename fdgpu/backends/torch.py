"""The ``torch`` backend: the pure-PyTorch reference (:mod:`fdgpu.reference`), on any device.

The definition that the C library and the Triton kernels equal: the forward bit for bit, the ``ste``/``soft``
backward as the explicit adjoint :func:`fdgpu.reference.jpeg.backward`, table gradients included. Batches are cut
into chunks that run on the single-threaded workers of :mod:`fdgpu.reference.parallel`.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..choices import BACKWARD_MODES
from ..reference import jpeg as _ref

NAME = "torch"
DESCRIPTION = "the reference, pure PyTorch (any device)"
DTYPES = (torch.float32, torch.float64)
CHECKS_INPUT = False
SAVES_STATE = True
TABLE_GRADS = True
TABLES = "any steps >= 1, shared (8, 8) or per image (N, 8, 8)"
FIX = ""


def devices():
    return ("any",)


def unavailable() -> Optional[str]:
    return None


def details() -> dict:
    return {"torch": torch.__version__}


def forward(x, luma_table, chroma_table, subsampling: str, save: bool):
    y, (zy, zc) = _ref.forward(x, luma_table, chroma_table, subsampling, need_weight=save)
    return y, zy, zc


def backward(grad, x, luma_table, chroma_table, state, subsampling: str, mode: str, table_grads: bool,
             forward=forward):
    """An adjoint mode (``ste``, ``soft``) with :func:`fdgpu.reference.jpeg.backward`; the quotients that were not
    saved (x only, e.g. a forward without autograd recording) are recomputed with ``forward``."""
    weighted = BACKWARD_MODES[mode].weight is not None
    if state[0] is None and BACKWARD_MODES[mode].saves_state(table_grads):
        state = forward(x, luma_table, chroma_table, subsampling, True)[1:]
    if not table_grads:
        return _ref.backward(grad, state if weighted else None, subsampling, mode), None, None
    return _ref.backward(grad, state, subsampling, mode, (luma_table, chroma_table))

"""The C coder of :func:`fdgpu.jpeg_size`: ``csrc/entropy.c``'s ``fdgpu_jpeg_entropy`` (the exact entropy-coded size
of a baseline JPEG), part of the library that :mod:`fdgpu.backends._library` builds and loads, called through ctypes.

:func:`sizes` returns None when the library is unavailable (no C compiler, or ``FDGPU_FUSED=0``); the caller then
uses the torch implementation in :mod:`fdgpu.size`, which computes the same numbers.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch

from ..reference.parallel import map_chunks, workers
from . import _library

# Images per call of the C entry when a batch is spread over the workers.
IMAGES_PER_CALL = 16

# return codes of fdgpu_jpeg_entropy
_BAD_ARGUMENTS, _NO_MEMORY, _BAD_COEFFICIENT = 1, 2, 3


def library():
    """The compiled entry point, or None; :func:`status` says why not."""
    lib = _library.library()
    return None if lib is None else lib[2]


def status() -> str:
    """``"loaded"``, ``"unloaded"`` (not tried yet) or ``"unavailable: <reason>"``."""
    return _library.status()


_DTYPES = {torch.int16: 0, torch.float32: 1, torch.float64: 2}


def sizes(y: torch.Tensor, cb: Optional[torch.Tensor], cr: Optional[torch.Tensor], real_rows: int, real_cols: int,
          hs: int, vs: int, optimize: bool) -> Optional[torch.Tensor]:
    """``(N, 5)`` int64 (see :func:`fdgpu.size._entropy_torch`) from CPU coefficient grids ``(N, R, C, 8, 8)`` (any
    strides; int16 coefficients, or float32/float64 coefficients or quotients, rounded half away from zero), or None
    when the library is unavailable."""
    fn = library()
    if fn is None:
        return None
    grids = [g for g in (y, cb, cr) if g is not None]
    if any(g.device.type != "cpu" or g.dtype != y.dtype or g.shape[3:] != (8, 8) for g in grids) or \
            y.dtype not in _DTYPES or (cb is not None and cr is not None and cb.stride() != cr.stride()):
        raise RuntimeError("fdgpu_jpeg_entropy: inconsistent coefficient grids (a bug in fdgpu: please report it)")
    n, rows, cols = y.shape[:3]
    c_rows, c_cols = (cb.shape[1], cb.shape[2]) if cb is not None else (0, 0)
    out = torch.zeros(n, 5, dtype=torch.int64)
    ys = (ctypes.c_long * 5)(*y.stride())
    cs = (ctypes.c_long * 5)(*(cb.stride() if cb is not None else (0,) * 5))
    ptr = (y.data_ptr(), cb.data_ptr() if cb is not None else None, cr.data_ptr() if cr is not None else None,
           _DTYPES[y.dtype], ys, cs)
    head = (n, rows, cols, real_rows, real_cols, c_rows, c_cols, hs, vs, int(optimize))

    def run(i: int, j: int) -> int:
        return fn(*ptr, *head, i, j, out.data_ptr())

    if n <= IMAGES_PER_CALL or workers() <= 1:
        codes = [run(0, n)]
    else:
        codes = map_chunks(run, [(i, min(n, i + IMAGES_PER_CALL)) for i in range(0, n, IMAGES_PER_CALL)], y.device)
    if _BAD_ARGUMENTS in codes:
        raise RuntimeError(f"fdgpu_jpeg_entropy rejected its arguments {head} (a bug in fdgpu: please report it)")
    if _NO_MEMORY in codes:
        raise MemoryError("fdgpu_jpeg_entropy: out of memory for its row buffer")
    if _BAD_COEFFICIENT in codes:
        raise ValueError("x: a quantized coefficient is outside baseline JPEG's range (DC difference above 11 bits "
                         "or AC above 10 bits), which no 8-bit image gives; check the tables")
    return out

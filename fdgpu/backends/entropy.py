"""The C path of :func:`fdgpu.jpeg_size`, part of the library that :mod:`fdgpu.backends._library` builds and loads,
called through ctypes: :func:`image_sizes` (``csrc/fused.c``'s ``fdgpu_jpeg_size``: images to entropy-coded sizes
in one pass per image, the encoder's half of the round trip feeding ``csrc/entropy.c``'s coder) and :func:`sizes`
(``fdgpu_jpeg_entropy``: the same coder on given coefficient grids, e.g. a file's).

Both return None when the library is unavailable (no C compiler, or ``FDGPU_FUSED=0``); the caller then uses the
torch implementation in :mod:`fdgpu.size`, which computes the same numbers.
"""
from __future__ import annotations

import ctypes
from typing import Optional, Tuple

import torch

from ..reference.parallel import map_chunks, workers
from . import _library

# Images per call of the C entry when a batch is spread over the workers.
IMAGES_PER_CALL = 16

# return codes of fdgpu_jpeg_entropy
_BAD_ARGUMENTS, _NO_MEMORY, _BAD_COEFFICIENT = 1, 2, 3
# and of fdgpu_jpeg_size (its argument errors, 3, name the argument in fdgpu_error())
_SIZE_BAD_STEP, _SIZE_BAD_COEFFICIENT = 1, 4

_RANGE_ERROR = ("x: a quantized coefficient is outside baseline JPEG's range (DC difference above 11 bits or AC above "
                "10 bits), which no 8-bit image gives; check the tables")


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
        raise ValueError(_RANGE_ERROR)
    return out


def image_sizes(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: torch.Tensor, hs: int, vs: int,
                optimize: bool, validate: bool) -> Optional[torch.Tensor]:
    """``(N, 5)`` int64 (see :func:`fdgpu.size._entropy_torch`) of the images ``x`` ``(N, C, H, W)`` on the CPU
    (C 1 or 3, float, any strides: read in place; other float types are computed in float32, as the forward
    does), with integer tables in
    1..32767 ``(8, 8)`` or ``(N, 8, 8)`` and chroma factors ``(hs, vs)``, or None when the library is unavailable.
    One C call per range of images, spread over the library's workers as the forward's are. ``validate``: the
    check of validate=True in the library's read of ``x`` (the same error as :func:`fdgpu._checks.x_error`)."""
    from .._checks import RANGE_SLACK, check_values, minmax, x_error
    from . import cpu

    lib = _library.library()
    if lib is None:
        return None
    fn = lib[7]
    n, ch, h, w = x.shape
    # any strides (a channels-last batch is read in place: its copy to contiguous cost more than the sizes)
    x = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    strides = (ctypes.c_int64 * 4)(*x.stride())
    tables: Tuple[torch.Tensor, ...] = (luma_table, chroma_table) if ch == 3 else (luma_table,)
    if any(t.dim() == 3 for t in tables):
        tables = tuple(t.expand(n, 8, 8) for t in tables)
    tdtype = torch.float64 if any(t.dtype == torch.float64 for t in tables) else torch.float32
    tables = tuple(t.detach().to("cpu", tdtype).contiguous() for t in tables)
    out = torch.zeros(n, 5, dtype=torch.int64)
    args = (x.data_ptr(), strides, int(x.dtype == torch.float64), n, ch, h, w, hs, vs)
    tail = (tables[0].data_ptr(), tables[-1].data_ptr(), int(tdtype == torch.float64),
            64 if tables[0].dim() == 3 else 0, int(optimize), out.data_ptr(), out.numel())
    outside = []  # with validate: per image range, the number of values outside x_error's bounds or NaN

    def run(i: int, j: int):
        if not validate:
            return cpu._result(fn(*args, i, j, *tail, None), lib)
        check = (ctypes.c_double * 3)(-RANGE_SLACK, 1 + RANGE_SLACK, 0.0)
        result = cpu._result(fn(*args, i, j, *tail, check), lib)
        outside.append(check[2])
        return result

    results = cpu._spread(run, n, x)
    cpu._raise_errors(results, "jpeg_size")
    codes = [code for code, _ in results]
    if any(outside):  # a bad value: read x again for validate=True's own message (its values in it)
        check_values([(x, minmax, x_error)])
    if _SIZE_BAD_COEFFICIENT in codes:
        raise ValueError(_RANGE_ERROR)
    if _SIZE_BAD_STEP in codes:
        raise RuntimeError("fdgpu_jpeg_size: a table step outside 1..32768 reached the library (a bug in fdgpu: "
                           "please report it)")
    return out

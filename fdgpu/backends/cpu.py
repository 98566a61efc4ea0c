"""The ``cpu`` backend: the C library (``csrc/fused.c``, built and loaded by :mod:`fdgpu.backends._library`),
called through ctypes, for CPU tensors in float32 or float64.

Its forward is the whole round trip in one pass per image in integer arithmetic, exactly what the torch reference
computes (tests/test_fused.py asserts ``torch.equal`` on odd shapes, every subsampling, several qualities, FD and
per-image tables, float32 and float64, batches larger than one chunk). Its ``ste``/``soft`` backward without table
gradients is float arithmetic in the gradient's dtype: equal to the reference's up to the order of the float
operations. What the library does not compute is, by this backend's definition, computed with the torch
reference's ops (:mod:`fdgpu.reference`), giving the same results:

* steps that are not integers in 1..32768 (a fractional FD strength, tables being learned): the reference's float64
  quantizer;
* table gradients (``ste``/``soft`` with learnable tables or quality), and adjoint backward modes other than
  ``ste`` and ``soft``: the reference's adjoint;
* a forward under autograd recording or a backward whose gradient requires grad: the reference's ops, so that
  autograd sees them.

(``exact`` and ``bpda`` are the same for every backend: :mod:`fdgpu.ops`.)

:func:`fused_forward` and :func:`fused_backward` are the library's calls alone (None where it does not apply).
Threads: the C code is single-threaded (no OpenMP region, so no barrier that a descheduled thread can stall);
a batch's images are split over the single-threaded workers of :mod:`fdgpu.reference.parallel` (ctypes releases
the GIL during the call), a small call runs on the calling thread with no hand-off.
"""
from __future__ import annotations

import ctypes
from typing import Optional

import torch

from .._checks import RANGE_SLACK, check_values, minmax, x_error

from ..reference import jpeg as _ref
from ..reference.parallel import map_chunks, workers
from ..reference.sampling import FACTORS
from . import _library
from . import torch as _reference

# Calls with fewer values than this run on the calling thread: a hand-off to a worker costs ~0.2-0.7 ms, about
# the time of 2**18 values (one 3x224x224 image is 150,528).
INLINE_VALUES = 1 << 18
CHUNKS_PER_WORKER = 8  # a batch is cut into this many image ranges per worker (a stalled worker holds little)

NAME = "cpu"
DESCRIPTION = "the C library (CPU tensors; the same bits as the torch reference)"
DTYPES = (torch.float32, torch.float64)
SAVES_STATE = True
CHECKS_INPUT = True  # validate=True's checks of x run in the library's read of x
TABLE_GRADS = True
TABLES = ("integer steps in 1..32768 in the library; other steps (>= 1) and table gradients with the torch "
          "reference's ops")
FIX = _library.FIX
_FLOATS = DTYPES
#: the backward modes fused.c computes (``soft``: its weight from the saved quotients); other adjoint modes of
#: :data:`fdgpu.choices.BACKWARD_MODES` run on the torch reference's ops
LIBRARY_MODES = ("ste", "soft")


def devices():
    return ("cpu",)


def unavailable() -> Optional[str]:
    if _library.library() is not None:
        return None
    return _library.status().replace("unavailable: ", "", 1)


def details() -> dict:
    return _library.info()


def forward(x, luma_table, chroma_table, subsampling: str, save: bool, validate: bool = False):
    """The round trip on the library, or on the torch reference's ops for steps that the library does not take
    (not integers in 1..32768) and under autograd recording. ``validate``: check ``x``'s values as
    ``validate=True`` does (finite, in [0, 1]; the same errors as :func:`fdgpu._checks.x_error`), in the library's
    own read of ``x`` (or before the reference's ops where the library does not apply)."""
    if _library.library() is None:
        raise RuntimeError(f"backend='cpu': the C library is unavailable ({unavailable()}); {FIX}")
    done = fused_forward(x, luma_table, chroma_table, subsampling, save, check_x=validate)
    if done is None:
        if validate:
            check_values([(x, minmax, x_error)])
        done = _ref.forward(x, luma_table, chroma_table, subsampling, need_weight=save)
    y, (zy, zc) = done
    return y, zy, zc


def backward(grad, x, luma_table, chroma_table, state, subsampling: str, mode: str, table_grads: bool):
    """``ste``/``soft`` on the library (:data:`LIBRARY_MODES`); with table gradients, another adjoint mode or a
    gradient that requires grad, the torch reference's adjoint. Quotients that were not saved are recomputed with
    :func:`forward`."""
    soft = mode == "soft"
    if not table_grads and mode in LIBRARY_MODES:
        if soft and state[0] is None:
            state = forward(x, luma_table, chroma_table, subsampling, True)[1:]
        gx = fused_backward(grad, state if soft else None, subsampling, mode)
        if gx is not None:
            return gx, None, None
    return _reference.backward(grad, x, luma_table, chroma_table, state, subsampling, mode, table_grads,
                               forward=forward)


def fused_forward(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: torch.Tensor | None, subsampling: str,
                  need_weight: bool = False, check_x: bool = False):
    """:func:`fdgpu.reference.jpeg.forward` (not ``linear``) on the library, or None where it does not apply
    (other devices or dtypes, steps that are not integers in 1..32768, autograd recording, no library). Same
    arguments and results. ``check_x``: the library also counts, in the same loop that reads ``x``, the values
    outside validate=True's bounds ([0, 1] with :data:`fdgpu._checks.RANGE_SLACK`) or NaN
    (``fdgpu_forward_checked``); when there are any, ``x`` is read again to raise validate=True's own error
    (:func:`fdgpu._checks.x_error`, which shows the values)."""
    if x.device.type != "cpu" or x.dtype not in _FLOATS or x.dim() != 4 or subsampling not in FACTORS:
        return None
    n, ch, h, w = x.shape
    if n < 1 or ch not in (1, 3) or h < 1 or w < 1:
        return None  # not an image batch: the torch reference says what is wrong
    color = ch == 3
    tables: tuple = (luma_table, chroma_table) if color else (luma_table,)
    for t in tables:
        if t is None or t.device.type != "cpu" or t.dtype not in _FLOATS or t.shape[-2:] != (8, 8):
            return None
    per_image = any(t.dim() == 3 for t in tables)
    if any(t.dim() == 3 and t.shape[0] != n for t in tables):
        return None
    if per_image:  # one shared table beside per-image ones: per image too
        tables = tuple(t.expand(n, 8, 8) if t.dim() == 2 else t for t in tables)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x,) + tables):
        return None  # autograd records the reference's ops ("exact" backward)
    lib = _library.library()
    if lib is None:
        return None
    fn = lib[6] if check_x else lib[0]
    tdtype = torch.float64 if any(t.dtype == torch.float64 for t in tables) else torch.float32
    tables = tuple(t.detach().to(tdtype).contiguous() for t in tables)
    x = x.detach().contiguous()
    hs, vs = FACTORS[subsampling] if color else (1, 1)
    out = torch.empty_like(x)
    zy = zc = None
    if need_weight:
        hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
        zy = torch.empty(n, 1, 64, hp // 8, wp // 8, dtype=x.dtype)
        zc = torch.empty(n, 2, 64, hp // 8 // vs, wp // 8 // hs, dtype=x.dtype) if color else None
    args = (x.data_ptr(), out.data_ptr(), int(x.dtype == torch.float64), n, ch, h, w, hs, vs)
    tail = (tables[0].data_ptr(), tables[-1].data_ptr() if color else None, int(tdtype == torch.float64),
            64 if per_image else 0, _ptr(zy), _ptr(zc), int(x.dtype == torch.float64), _len(zy), _len(zc))

    outside = []  # with check_x: per image range, the number of values outside x_error's bounds or NaN

    def run(i: int, j: int):
        if not check_x:
            return _result(fn(*args, i, j, *tail), lib)
        check = (ctypes.c_double * 3)(-RANGE_SLACK, 1 + RANGE_SLACK, 0.0)
        code = _result(fn(*args, i, j, *tail, check), lib)
        outside.append(check[2])
        return code

    results = _spread(run, n, x)
    _raise_errors(results, "forward")
    if any(code for code, _ in results):
        return None  # a step that only the reference's float64 quantizer handles
    if any(outside):  # a bad value: read x again for validate=True's own message (its values in it)
        check_values([(x, minmax, x_error)])
    return out, (zy, zc)


def _ptr(t):
    return t.data_ptr() if t is not None else None


def _len(t) -> int:
    return t.numel() if t is not None else 0


def _result(code: int, lib):
    # (code, the library's message for an argument error): read on the thread that made the call
    return code, (lib[3]().decode() if code == 3 else "")


def _raise_errors(results, what: str) -> None:
    for code, message in results:
        if code == 2:
            raise MemoryError(f"fdgpu fused CPU {what}: out of memory for its scratch buffer")
        if code == 3:  # the wrapper checked the arguments; reaching this is a bug in the wrapper
            raise ValueError(f"fdgpu fused CPU {what}: the C library refused its arguments: {message}")


def _spread(run, n: int, x: torch.Tensor):
    """``run(i, j)`` over image ranges covering ``range(n)``: on the calling thread for a small call, else on the
    single-threaded workers."""
    if x.numel() < INLINE_VALUES or workers() <= 1:
        return [run(0, n)]
    step = max(1, -(-n // (CHUNKS_PER_WORKER * workers())))
    return map_chunks(run, [(i, min(n, i + step)) for i in range(0, n, step)], x.device)


def fused_backward(grad: torch.Tensor, saved, subsampling: str, mode: str):
    """:func:`fdgpu.reference.jpeg.backward` without table gradients (``ste``, or ``soft`` with the saved quotients
    ``(zy, zc)``) on the compiled path, or None where it does not apply. Float arithmetic: equal to the torch
    reference up to the order of the float operations, not bit for bit."""
    if grad.device.type != "cpu" or grad.dtype not in _FLOATS or grad.dim() != 4 or subsampling not in FACTORS:
        return None
    if mode not in LIBRARY_MODES or torch.is_grad_enabled() and grad.requires_grad:
        return None
    n, ch, h, w = grad.shape
    if n < 1 or ch not in (1, 3) or h < 1 or w < 1:
        return None  # not an image batch: the torch reference says what is wrong
    zy = zc = None
    if mode == "soft":
        if saved is None or saved[0] is None or (ch == 3 and saved[1] is None):
            return None
        zy, zc = saved
        _ref.check_state(grad, (zy, zc if ch == 3 else None), subsampling)  # another input's state: a clear error
        if zy.dtype != grad.dtype or (zc is not None and zc.dtype != grad.dtype) or zy.device.type != "cpu":
            return None
        zy = zy.detach().contiguous()
        zc = zc.detach().contiguous() if ch == 3 else None
    lib = _library.library()
    if lib is None:
        return None
    fn = lib[1]
    grad = grad.detach().contiguous()
    hs, vs = FACTORS[subsampling] if ch == 3 else (1, 1)
    gx = torch.empty_like(grad)
    args = (grad.data_ptr(), gx.data_ptr(), int(grad.dtype == torch.float64), n, ch, h, w, hs, vs)
    tail = (_ptr(zy), _ptr(zc), _len(zy), _len(zc))

    def run(i: int, j: int):
        return _result(fn(*args, i, j, *tail), lib)

    _raise_errors(_spread(run, n, grad), "backward")
    return gx


BAD_COEFFICIENT = 4  # fdgpu_decode's return code for a coefficient out of its range


def _tables_ok(tables, n: int) -> bool:
    per_image = tables[0].dim() == 3
    return all(t is not None and t.device.type == "cpu" and t.dtype in _FLOATS and t.shape[-2:] == (8, 8)
               and (t.dim() == 3) == per_image and (not per_image or t.shape[0] == n) for t in tables)


def _c_tables(tables):
    tdtype = torch.float64 if any(t.dtype == torch.float64 for t in tables) else torch.float32
    return tuple(t.detach().to(tdtype).contiguous() for t in tables), int(tdtype == torch.float64), \
        64 if tables[0].dim() == 3 else 0


def encode(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: torch.Tensor, subsampling: str):
    """:func:`fdgpu.reference.jpeg.encode` (without the quotients) in C, or None where the library does not apply:
    ``(qy, qc)`` quantized coefficient planes in x's dtype (``qc`` None for grayscale). The same bits
    (tests/test_coefficients.py)."""
    if x.device.type != "cpu" or x.dtype not in _FLOATS or x.dim() != 4 or x.shape[0] == 0:
        return None
    n, ch, h, w = x.shape
    tables = (luma_table, chroma_table) if ch == 3 else (luma_table,)
    if not _tables_ok(tables, n) or (torch.is_grad_enabled() and any(t.requires_grad for t in (x,) + tables)):
        return None
    lib = _library.library()
    if lib is None:
        return None
    tables, tdouble, stride = _c_tables(tables)
    x = x.detach().contiguous()
    hs, vs = FACTORS[subsampling] if ch == 3 else (1, 1)
    hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
    qy = torch.empty(n, 1, hp, wp, dtype=x.dtype)
    qc = torch.empty(n, 2, hp // vs, wp // hs, dtype=x.dtype) if ch == 3 else None
    args = (x.data_ptr(), int(x.dtype == torch.float64), n, ch, h, w, hs, vs)
    tail = (tables[0].data_ptr(), tables[-1].data_ptr(), tdouble, stride, qy.data_ptr(), _ptr(qc), qy.numel(),
            _len(qc))

    def run(i: int, j: int):
        return _result(lib[4](*args, i, j, *tail), lib)

    results = _spread(run, n, x)
    _raise_errors(results, "encode")
    return None if any(code for code, _ in results) else (qy, qc)  # 1: a step for the reference's float64 path


def decode(qy: torch.Tensor, qc, tables, subsampling: str, h: int, w: int):
    """:func:`fdgpu.reference.jpeg.decode` in C, or None where the library does not apply: ``qy``
    ``(N, 1, Hp, Wp)``, ``qc`` ``(N, 2, ...)`` or None, ``tables`` ``(luma, cb, cr)``; the images in qy's dtype.
    Raises ValueError for a coefficient that is not an integer with ``|r Q| <= 2048``."""
    if qy.device.type != "cpu" or qy.dtype not in _FLOATS or qy.dim() != 4 or qy.shape[0] == 0:
        return None
    ch = 1 if qc is None else 3
    if qc is not None and (qc.dtype != qy.dtype or qc.device.type != "cpu"):
        return None
    n = qy.shape[0]
    tables = tables if ch == 3 else tables[:1]
    grads = (qy, qc) + tuple(tables) if ch == 3 else (qy,) + tuple(tables)
    if not _tables_ok(tables, n) or (torch.is_grad_enabled() and any(t.requires_grad for t in grads)):
        return None
    lib = _library.library()
    if lib is None:
        return None
    tables, tdouble, stride = _c_tables(tables)
    qy = qy.detach().contiguous()
    qc = qc.detach().contiguous() if qc is not None else None
    if subsampling not in FACTORS:
        return None
    hs, vs = FACTORS[subsampling] if ch == 3 else (1, 1)
    if h < 1 or w < 1:
        return None
    hp, wp = -(-h // (8 * vs)) * 8 * vs, -(-w // (8 * hs)) * 8 * hs
    if qy.shape != (n, 1, hp, wp) or (qc is not None and qc.shape != (n, 2, hp // vs, wp // hs)):
        return None  # planes the library does not read (of another size or subsampling): the reference's
    out = torch.empty(n, ch, h, w, dtype=qy.dtype)
    args = (qy.data_ptr(), qc.data_ptr() if qc is not None else None, int(qy.dtype == torch.float64),
            out.data_ptr(), n, ch, h, w, hs, vs)
    tail = (tables[0].data_ptr(), tables[1 % len(tables)].data_ptr(), tables[-1].data_ptr(), tdouble, stride,
            qy.numel(), _len(qc))

    def run(i: int, j: int):
        return _result(lib[5](*args, i, j, *tail), lib)

    results = _spread(run, n, out)
    if any(code == BAD_COEFFICIENT for code, _ in results):
        raise ValueError("coefficients: expected integers with |coefficient x step| <= 2048 (the range of 8-bit "
                         "samples), got other values; check them with validate=True")
    _raise_errors(results, "decode")
    return None if any(code for code, _ in results) else out

"""Thin launchers: allocate outputs, compute the grid, call the kernels. No validation, no defaults.

Tiles and warps per kernel are fixed per size class (:data:`CONFIGS`, not autotuned): chosen by the cost model of
``python -m fdgpu.kernels.aot --cost`` (estimates), spill-free on sm_80 and sm_90 (``python -m fdgpu.kernels.aot``),
and always whole MCUs. Launch plans are cached per shape, and a compiled kernel is started without Triton's per-call
argument binder once its specialisation has been launched (:func:`_start`).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

from fdgpu.choices import BACKWARD_MODES
from fdgpu.reference import dct as _ref_dct
from fdgpu.reference.jpeg import Geometry

from .jpeg import (_jpeg_bwd_chroma_kernel, _jpeg_bwd_chroma_soft_kernel, _jpeg_bwd_kernel, _jpeg_bwd_table_kernel,
                   _jpeg_decode_kernel, _jpeg_encode_kernel, _jpeg_fwd_kernel, _jpeg_fwd_sub_kernel, _jpeg_up_kernel)

# Tiles and warps per kernel and size class: ``CONFIGS[size_class][kernel] = ((TBH, TBW), warps)``, tiles in 8x8
# blocks (pixels for the upsampler), always whole MCUs (VS, HS in {1, 2}) so the padding folds inside a program.
# The round trip's kernels use 4-block tiles (2x2 blocks: one 4:2:0 MCU) at 2 warps for every size, 4 samples per
# thread: by the cost model of ``python -m fdgpu.kernels.aot --cost`` (estimates) they execute fewer instructions
# per warp than 16-block tiles at 8 warps, leave no tile past the image at 224 (14 chroma blocks a side) and let the
# register-heavy kernels keep more warps resident (small CTAs pack the SM). The upsampler (one thread per chroma
# sample) takes 16 x 32 pixels at 2 warps, two chroma samples per thread at 4:2:0: its per-program work amortised,
# it is at its DRAM bound by the model (8 x 32 pixels, one sample per thread: 163 k warp instructions per 224^2
# image instead of 139 k). The 4:2:x forward codes two MCUs side by side per program at 2 warps (8 luma + 4 chroma
# blocks at 4:2:0, from one read of their RGB), sharing the per-program work (coordinates, tables, constants): 16
# warps per SM at 124 registers, 0.54 us per 224^2 image by the model (one MCU per program: 0.61 us, issue-bound).
# The encoder / decoder halves and the table-gradient kernel use 16-block tiles at 8 warps on images above
# SMALL_MAX (not in the cost model's passes: no estimate for them). Every variant is spill-free (AOT report, Triton
# 3.9, sm_80 and sm_90). Chosen, not autotuned: no GPU has timed candidates. The class depends only on the image
# size, so it is fixed for a model's inputs.
SMALL_MAX = 32
_LARGE, _SMALL = ((2, 8), 8), ((2, 2), 2)
_UP = ((16, 32), 2)
_SUB = ((1, 2), 2)
CONFIGS = {
    "large": {"_jpeg_fwd_kernel": _SMALL, "_jpeg_fwd_sub_kernel": _SUB, "_jpeg_up_kernel": _UP,
              "_jpeg_bwd_chroma_kernel": _SMALL, "_jpeg_bwd_chroma_soft_kernel": _SMALL, "_jpeg_bwd_kernel": _SMALL,
              "_jpeg_bwd_table_kernel": _LARGE, "_jpeg_encode_kernel": _LARGE, "_jpeg_decode_kernel": _LARGE},
    "small": {"_jpeg_fwd_kernel": _SMALL, "_jpeg_fwd_sub_kernel": _SUB, "_jpeg_up_kernel": _UP,
              "_jpeg_bwd_chroma_kernel": _SMALL, "_jpeg_bwd_chroma_soft_kernel": _SMALL, "_jpeg_bwd_kernel": _SMALL,
              "_jpeg_bwd_table_kernel": _SMALL, "_jpeg_encode_kernel": _SMALL, "_jpeg_decode_kernel": _SMALL},
}


def size_class(h: int, w: int) -> str:
    """The size class of an ``h x w`` image: the key of :data:`CONFIGS`."""
    return "small" if max(h, w) <= SMALL_MAX else "large"


# No software pipelining: the runtime loops are short (the 3 planes of 4:4:4) and multi-buffering them takes up to
# 164 KB of shared memory, more than an A100 block may have.
NUM_STAGES = 1
# No FMA contraction of elementwise arithmetic: torch rounds x * 255 before adding 0.5 (and likewise elsewhere);
# a fused multiply-add rounds once and can land on the other side of a floor() than the reference. (The forward's
# DCT passes are int32 multiply-adds, which this does not concern.)
FP_FUSION = False


# jfdctint's constants (CONST_BITS = 13): FIX(x) = round(x * 2^13), libjpeg's names.
_FIX = dict(F0_298631336=2446, F0_390180644=3196, F0_541196100=4433, F0_765366865=6270, F0_899976223=7373,
            F1_175875602=9633, F1_501321110=12299, F1_847759065=15137, F1_961570560=16069, F2_053119869=16819,
            F2_562915447=20995, F3_072711026=25172)


def _fdct_1d(d):
    """One 1-D pass of jfdctint (Loeffler-Ligtenberg-Moschytz, 12 multiplies) on 8 integers, every output at the
    2^13 scale *before* its descale (the DC and 4 outputs, exact sums, multiplied by 2^13 so that all 8 outputs
    share one descale). Linear with integer coefficients, so the pass is ``A @ d`` with ``A = [_fdct_1d(e_j)]``."""
    f = _FIX
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o = [0] * 8
    o[0], o[4] = (t10 + t11) << 13, (t10 - t11) << 13
    z1 = (t12 + t13) * f["F0_541196100"]
    o[2], o[6] = z1 + t13 * f["F0_765366865"], z1 - t12 * f["F1_847759065"]
    z1, z2, z3, z4 = t4 + t7, t5 + t6, t4 + t6, t5 + t7
    z5 = (z3 + z4) * f["F1_175875602"]
    t4, t5, t6, t7 = t4 * f["F0_298631336"], t5 * f["F2_053119869"], t6 * f["F3_072711026"], t7 * f["F1_501321110"]
    z1, z2 = -z1 * f["F0_899976223"], -z2 * f["F2_562915447"]
    z3, z4 = -z3 * f["F1_961570560"] + z5, -z4 * f["F0_390180644"] + z5
    o[7], o[5], o[3], o[1] = t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4
    return o


def fdct_matrix() -> torch.Tensor:
    """``(8, 8)`` int32 ``A[u, c]``: jfdctint's 1-D pass as a matrix at 2^13 scale. jidctint's 1-D pass (same
    constants, same butterfly read backwards) is exactly ``A^T``."""
    eye = [[int(i == j) for i in range(8)] for j in range(8)]
    return torch.tensor([_fdct_1d(e) for e in eye], dtype=torch.int32).t().contiguous()


@functools.lru_cache(maxsize=None)
def _consts(device: torch.device) -> torch.Tensor:
    """The kernels' constants, one int32 buffer of 128: ``A`` (:func:`fdct_matrix`), then the bits of the (8, 8)
    float32 orthonormal DCT-II matrix of the reference (the real-valued backward's transform)."""
    d = _ref_dct.dct_matrix(torch.float32).contiguous().view(torch.int32)
    return torch.cat([fdct_matrix().flatten(), d.flatten()]).to(device)


def _opts(launch: "Launch") -> dict:
    return dict(num_warps=launch.warps, num_stages=NUM_STAGES, enable_fp_fusion=FP_FUSION)


# ---------------------------------------------------------------- launching a compiled kernel
# Triton's ``kernel[grid](...)`` binds and specialises every argument, computes its cache key and re-checks the
# kernel's global constants on every launch: ~10 us more host time per launch than the direct call below (the
# forward launcher's 2 launches for one 32x32 image: 35 us through kernel[grid], 15 us direct; sm_90 kernels, the
# driver's launch stubbed as in benchmarks/test_bench_host.py, load 4.4), more than a small image's GPU time is
# estimated to be. A kernel that has been launched once with the same specialisation is called here through its
# compiled launcher directly, as Triton itself does at the end of ``JITFunction.run``: the CUDA driver launch, on
# the current device and stream, with the launch hooks Triton passes. The key holds everything Triton specialises
# on and more: the integer arguments by value, each tensor's dtype and whether its address is 16-byte aligned, the
# constexprs and options, and the device. Anything else (the interpreter, a Triton without these internals)
# launches through ``kernel[grid]``.
try:
    from triton import knobs as _knobs
    from triton.compiler.compiler import CompiledKernel as _Compiled
    from triton.runtime import driver as _driver
    from triton.runtime.jit import JITFunction as _JIT
    _DIRECT = all(hasattr(_Compiled, a) for a in ("run", "launch_metadata")) and hasattr(_knobs, "runtime")
except ImportError:  # pragma: no cover - an older Triton: every launch goes through kernel[grid]
    _DIRECT = False

_COMPILED: Dict[tuple, Tuple[Any, tuple]] = {}
_COMPILED_MAX = 4096
_TENSORS: Dict[int, int] = {}  # per kernel: how many of its leading arguments are tensors (the launchers' order)


def _start(kernel, grid: Tuple[int, int, int], args: tuple, consts: dict) -> None:
    """``kernel[grid](*args, **consts)``: positional ``args`` (tensors, then integers, in the kernel's order),
    ``consts`` its constexprs and launch options."""
    if not (_DIRECT and isinstance(kernel, _JIT)):
        kernel[grid](*args, **consts)
        return
    kid = id(kernel)
    n = _TENSORS.get(kid)
    if n is None:
        n = _TENSORS[kid] = next((i for i, a in enumerate(args) if not isinstance(a, torch.Tensor)), len(args))
    device = _driver.active.get_current_device()
    key = (kid, device, args[n:], tuple(consts.items()),
           *[(t.dtype, t.data_ptr() % 16 == 0) for t in args[:n]])
    hit = _COMPILED.get(key)
    if hit is None:  # Triton's own launch: compiles (or finds the compiled kernel) and checks its globals
        compiled = kernel[grid](*args, **consts)
        if isinstance(compiled, _Compiled) and all(not isinstance(a, torch.Tensor) for a in args[n:]):
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            _COMPILED[key] = (compiled, _constexpr_tail(kernel, len(args), consts))
        return
    compiled, tail = hit
    full = (*args, *tail)  # every parameter in order, constexprs included, as Triton passes them
    stream = _driver.active.get_current_stream(device)
    enter, leave = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
    # an empty hook chain is no hook: no launch metadata to build, nothing for the launcher to call
    enter = enter if getattr(enter, "calls", True) else None
    leave = leave if getattr(leave, "calls", True) else None
    meta = compiled.launch_metadata(grid, stream, *full) if enter is not None else None
    compiled.run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata, meta, enter, leave,
                 *full)


def _constexpr_tail(kernel, n: int, consts: dict) -> tuple:
    # the values of the parameters after the n positional ones (the constexprs, given or defaulted)
    params = list(inspect.signature(kernel.fn).parameters.values())[n:]
    return tuple(consts[p.name] if p.name in consts else p.default for p in params)


# CUDA's grid limits: x < 2^31, y and z <= 65,535. Every kernel runs on a 1-D grid of (images x programs per
# image) along x; a batch whose grid would pass the limit is launched in chunks of whole images.
MAX_GRID_X = 2 ** 31 - 1


def launch_chunks(n: int, per_image: int, limit: int = MAX_GRID_X) -> List[Tuple[int, int, Tuple[int, int, int]]]:
    """``[(start, stop, grid), ...]``: the image ranges and the grids of one kernel with ``per_image`` programs per
    image, each grid within CUDA's limits. No launch: the tests check these for shapes too large to allocate."""
    if per_image > limit:
        raise ValueError(f"x: one image needs {per_image} programs, more than CUDA's grid limit ({limit}); "
                         f"split the image into tiles")
    step = max(1, limit // max(1, per_image))
    return [(i, min(n, i + step), ((min(n, i + step) - i) * per_image, 1, 1)) for i in range(0, n, step)]


def _tables(t: torch.Tensor, n: int, device: torch.device) -> Tuple[torch.Tensor, int]:
    """A table of any layout as the kernels read it: ``(table, batch stride)``: contiguous float32 on ``device``
    (rows of 64, or the ``(8, 8)`` / ``(n, 8, 8)`` table itself), stride 64 for per-image tables ``(n, 8, 8)``, 0
    for a shared one (an ``(8, 8)`` table, a batch of one, or an expanded ``(n, 8, 8)`` view whose batch stride is
    0). Transposed, expanded, float64 and CPU-resident tables all end here (float64 steps are rounded to float32,
    the precision of the public API's tables on this backend)."""
    if t.dim() == 3 and (t.shape[0] == 1 or t.stride(0) == 0):
        t = t[0]
    elif t.dtype == torch.float32 and t.is_contiguous() and t.device == device:
        # already what the kernels read (the public API's tables): taken as is, ``(8, 8)`` or ``(n, 8, 8)``, with
        # no tensor call (the general path costs ~2 us per table, most of a launcher's own host time)
        return t, (64 if t.dim() == 3 else 0)
    rows = t.to(device=device, dtype=torch.float32).reshape(-1, 64).contiguous()
    return rows, (64 if t.dim() == 3 else 0)


def _rows(t: torch.Tensor, s: int, i: int, j: int) -> torch.Tensor:
    return _part(t, i, j) if s else t


def _part(t: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """Images ``i:j`` of ``t``: ``t`` itself for the whole batch (one launch, the usual case: no view to build)."""
    return t if i == 0 and j == t.shape[0] else t[i:j]


def _device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's (a tensor on cuda:1 while cuda:0 is
    current)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


class Launch(NamedTuple):
    """One kernel's launches: its tile, programs per tile row (``nt_w``) and per image (``nt``), the chunks, and
    its warps."""
    tile: Tuple[int, int]
    nt_w: int
    nt: int
    chunks: Tuple[Tuple[int, int, Tuple[int, int, int]], ...]
    warps: int


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)  # plain integers: triton.cdiv is a ConstexprFunction, ~2.7 us per call on the host


def _launch(n: int, kernel: str, cls: str, rows: int, cols: int, planes: int = 1) -> Launch:
    # rows x cols units (blocks or pixels) in tiles of tile[0] x tile[1], ``planes`` programs per tile
    tile, warps = CONFIGS[cls][kernel]
    nt_w = planes * _cdiv(cols, tile[1])
    nt = _cdiv(rows, tile[0]) * nt_w
    return Launch(tile, nt_w, nt, tuple(launch_chunks(n, nt)), warps)


# Launch plans and geometries are cached per shape (a model's inputs repeat their shape): the host time of a call
# is what small images pay for (a 32x32 4:2:0 forward plan: 2.8 us rebuilt, 0.26 us cached;
# benchmarks/test_bench_host.py). The size class is part of the key (computed per call
# from SMALL_MAX); clear_plans() forgets them (tests that change the configuration).
_PLAN_CACHE = 4096


@functools.lru_cache(maxsize=_PLAN_CACHE)
def _geometry(h: int, w: int, ch: int, subsampling: str) -> Geometry:
    return Geometry.of(h, w, ch, subsampling)


def clear_plans() -> None:
    """Forget the cached launch plans and geometries."""
    for f in (_geometry, _forward_plan, _backward_plan):
        f.cache_clear()
    _COMPILED.clear()
    _TENSORS.clear()


def forward_plan(n: int, ch: int, h: int, w: int, subsampling: str) -> Dict[str, Launch]:
    """The launches of :func:`forward` for an ``(n, ch, h, w)`` batch, in order, without launching anything (cached
    per shape: do not modify the result)."""
    return _forward_plan(n, ch, h, w, subsampling, size_class(h, w))


@functools.lru_cache(maxsize=_PLAN_CACHE)
def _forward_plan(n: int, ch: int, h: int, w: int, subsampling: str, c: str) -> Dict[str, Launch]:
    g = _geometry(h, w, ch, subsampling)
    nbh, nbw = g.hp // 8, g.wp // 8
    if ch == 1 or (g.hs, g.vs) == (1, 1):
        return {"_jpeg_fwd_kernel": _launch(n, "_jpeg_fwd_kernel", c, nbh, nbw)}
    return {"_jpeg_fwd_sub_kernel": _launch(n, "_jpeg_fwd_sub_kernel", c, nbh // g.vs, nbw // g.hs),
            "_jpeg_up_kernel": _launch(n, "_jpeg_up_kernel", c, h, w)}


# The backward modes the kernels compute: those whose record (fdgpu.choices.BACKWARD_MODES) names a kernel
# constant (``exact`` and ``bpda`` need no kernel); the constant is the kernels' ``MODE`` constexpr, so a further
# surrogate is a new value there, not a new flag.
MODES = tuple(m for m, rec in BACKWARD_MODES.items() if rec.kernel is not None)


def backward_plan(n: int, ch: int, h: int, w: int, subsampling: str, mode: str,
                  table_grads: bool) -> Dict[str, Launch]:
    """The launches of :func:`backward`, in order, without launching anything (cached per shape: do not modify the
    result)."""
    return _backward_plan(n, ch, h, w, subsampling, mode, table_grads, size_class(h, w))


@functools.lru_cache(maxsize=_PLAN_CACHE)
def _backward_plan(n: int, ch: int, h: int, w: int, subsampling: str, mode: str, table_grads: bool,
                   c: str) -> Dict[str, Launch]:
    g = _geometry(h, w, ch, subsampling)
    nbh, nbw = g.hp // 8, g.wp // 8
    out = {}
    if ch == 3 and (g.hs, g.vs) != (1, 1):
        out["_jpeg_bwd_chroma_kernel"] = _launch(n, "_jpeg_bwd_chroma_kernel", c, nbh // g.vs, nbw // g.hs, 2)
    if table_grads:
        planes = g.hs * g.vs + 2 if ch == 3 else 1
        out["_jpeg_bwd_table_kernel"] = _launch(n, "_jpeg_bwd_table_kernel", c, nbh // g.vs, nbw // g.hs, planes)
    weighted = BACKWARD_MODES[mode].weight is not None  # a rounding weight: recomputed from x by the kernels
    if "_jpeg_bwd_chroma_kernel" in out and weighted:
        out["_jpeg_bwd_chroma_soft_kernel"] = _launch(n, "_jpeg_bwd_chroma_soft_kernel", c, nbh // g.vs,
                                                      nbw // g.hs, 2)
    if ch == 3 or weighted:  # grayscale without a weight (ste): grad_x = grad, no kernel
        out["_jpeg_bwd_kernel"] = _launch(n, "_jpeg_bwd_kernel", c, nbh, nbw)
    return out


def forward(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: Optional[torch.Tensor],
            subsampling: str) -> torch.Tensor:
    """JPEG round trip of ``x`` ``(N, C, H, W)`` float32 in [0, 1]. Tables may be ``(8, 8)`` or ``(N, 8, 8)`` of
    any strides, float dtype and device; ``chroma_table`` None (grayscale) reads the luma table."""
    n, ch, h, w = x.shape
    g = _geometry(h, w, ch, subsampling)
    if chroma_table is None:
        chroma_table = luma_table
    lq, sl = _tables(luma_table, n, x.device)
    cq, sc = _tables(chroma_table, n, x.device)
    y = torch.empty_like(x)
    plan = forward_plan(n, ch, h, w, subsampling)
    nbh, nbw = g.hp // 8, g.wp // 8
    with _device_guard(x):
        k = _consts(x.device)
        if "_jpeg_fwd_kernel" in plan:
            pl = plan["_jpeg_fwd_kernel"]
            (tbh, tbw), nt_w, nt, chunks, _ = pl
            for i, j, grid in chunks:
                xs, ys = _part(x, i, j), _part(y, i, j)
                _start(_jpeg_fwd_kernel, grid, (xs, ys, _rows(lq, sl, i, j), _rows(cq, sc, i, j), k, sl, sc, h, w, nbh,
                       nbw, nt_w, nt), dict(C=ch, TBH=tbh, TBW=tbw, **_opts(pl)))
        else:
            yb = torch.empty((n, h, w), dtype=torch.uint8, device=x.device)
            cb = torch.empty((n, 2, g.hc, g.wc), dtype=torch.uint8, device=x.device)
            pl = plan["_jpeg_fwd_sub_kernel"]
            (tbh, tbw), nt_w, nt, chunks, _ = pl
            for i, j, grid in chunks:
                xs, ybs, cbs = _part(x, i, j), _part(yb, i, j), _part(cb, i, j)
                _start(_jpeg_fwd_sub_kernel, grid, (xs, ybs, cbs, _rows(lq, sl, i, j), _rows(cq, sc, i, j), k, sl, sc,
                       h, w, g.hc, g.wc, nbh, nbw, nt_w, nt), dict(HS=g.hs, VS=g.vs, TBH=tbh, TBW=tbw, **_opts(pl)))
            pl = plan["_jpeg_up_kernel"]
            (bh, bw), nt_w, nt, chunks, _ = pl
            for i, j, grid in chunks:
                ybs, cbs, ys = _part(yb, i, j), _part(cb, i, j), _part(y, i, j)
                _start(_jpeg_up_kernel, grid, (ybs, cbs, ys, h, w, g.hc, g.wc, nt_w, nt), dict(HS=g.hs, VS=g.vs,
                       FANCY=g.wc > 2, BH=bh, BW=bw, **_opts(pl)))
    return y


def backward(grad: torch.Tensor, x: torch.Tensor, luma_table: torch.Tensor, chroma_table: Optional[torch.Tensor],
             subsampling: str, mode: str, table_grads: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor],
                                                                       Optional[torch.Tensor]]:
    """The vector-Jacobian product of :func:`forward` in backward ``mode`` (``"ste"`` or ``"soft"``, see
    :mod:`fdgpu.autograd`) for ``grad`` ``(N, C, H, W)`` at input ``x``: ``(grad_x, grad_luma, grad_chroma)``.

    The table gradients (``table_grads``; else None) are shaped like the tables: per image for ``(N, 8, 8)``
    tables, summed over the batch for an ``(8, 8)`` one (zeros for the chroma table of a grayscale image), in the
    tables' dtype. They are reduced without atomics: per-program partials, summed by torch in a fixed order, per
    image and then over the batch, so the result is deterministic."""
    n, ch, h, w = grad.shape
    if chroma_table is None:
        chroma_table = luma_table
    g = _geometry(h, w, ch, subsampling)
    lq, sl = _tables(luma_table, n, grad.device)
    cq, sc = _tables(chroma_table, n, grad.device)
    plan = backward_plan(n, ch, h, w, subsampling, mode, table_grads)
    kernel_mode = BACKWARD_MODES[mode].kernel  # the kernels' MODE constexpr
    nbh, nbw = g.hp // 8, g.wp // 8
    nbhc, nbwc = nbh // g.vs, nbw // g.hs
    wcp = g.wp // g.hs
    out = torch.empty_like(grad) if "_jpeg_bwd_kernel" in plan else grad.clone()
    gl = gc_t = None
    with _device_guard(grad):
        k = _consts(grad.device)
        gc = grad  # unused pointer without the chroma-plane gradient
        if "_jpeg_bwd_chroma_kernel" in plan:
            gc = torch.empty((n, 2, g.hc, wcp), dtype=torch.float32, device=grad.device)
            pl = plan["_jpeg_bwd_chroma_kernel"]
            (tbh, tbw), nt_w, nt, chunks, _ = pl
            for i, j, grid in chunks:
                _start(_jpeg_bwd_chroma_kernel, grid, (_part(grad, i, j), _part(gc, i, j), h, w, g.hc, g.wc, wcp, nbhc,
                       nbwc, nt_w, nt), dict(HS=g.hs, VS=g.vs, FANCY=g.wc > 2, TBH=tbh, TBW=tbw, **_opts(pl)))
        if "_jpeg_bwd_table_kernel" in plan:  # before the soft chroma kernel, which overwrites gc
            pl = plan["_jpeg_bwd_table_kernel"]
            (tbh, tbw), nt_w, nt, chunks, _ = pl
            part = torch.empty((n, nt, 64), dtype=torch.float32, device=grad.device)
            for i, j, grid in chunks:
                gs, xs, gcs = _part(grad, i, j), _part(x, i, j), _part(gc, i, j)
                _start(_jpeg_bwd_table_kernel, grid, (gs, xs, gcs, _rows(lq, sl, i, j), _rows(cq, sc, i, j), k,
                       _part(part, i, j), sl, sc, h, w, g.hc, wcp, nbh, nbw, nt_w, nt), dict(C=ch, HS=g.hs, VS=g.vs,
                       MODE=kernel_mode, TBH=tbh, TBW=tbw, **_opts(pl)))
            gl, gc_t = _reduce_table_grads(part, nt // nt_w, ch, g.hs * g.vs, luma_table, chroma_table)
        if "_jpeg_bwd_chroma_soft_kernel" in plan:
            pl = plan["_jpeg_bwd_chroma_soft_kernel"]
            (tbh, tbw), nt_w, nt, chunks, _ = pl
            for i, j, grid in chunks:
                _start(_jpeg_bwd_chroma_soft_kernel, grid, (_part(x, i, j), _rows(cq, sc, i, j), k, _part(gc, i, j), sc,
                       h, w, g.hc, wcp, nbhc, nbwc, nt_w, nt), dict(HS=g.hs, VS=g.vs, TBH=tbh, TBW=tbw, **_opts(pl)))
        if "_jpeg_bwd_kernel" in plan:
            pl = plan["_jpeg_bwd_kernel"]
            (tbh, tbw), nt_w, nt, chunks, _ = pl
            for i, j, grid in chunks:
                gs, xs, gcs = _part(grad, i, j), _part(x, i, j), _part(gc, i, j)
                _start(_jpeg_bwd_kernel, grid, (gs, xs, gcs, _rows(lq, sl, i, j), _rows(cq, sc, i, j), k,
                       _part(out, i, j), sl, sc, h, w, g.hc, wcp, nbh, nbw, nt_w, nt), dict(C=ch, HS=g.hs, VS=g.vs,
                       MODE=kernel_mode, TBH=tbh, TBW=tbw, **_opts(pl)))
    return out, gl, gc_t


def _reduce_table_grads(part: torch.Tensor, rows: int, ch: int, nl: int, luma_table: torch.Tensor,
                        chroma_table: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``part`` ``(N, rows * cols * planes, 64)`` partials of ``_jpeg_bwd_table_kernel`` -> the two table gradients
    (see :func:`backward`): luma = the first ``nl`` planes of every tile, chroma = the other two. Fixed-order torch
    sums (deterministic), then the output's 1/255 (the pipeline's gradient is carried at the 0..255 scale), then
    the batch sum for a shared table, in the order of the reference (``fdgpu.reference.jpeg``)."""
    n = part.shape[0]
    part = part.view(n, rows, -1, nl + 2 if ch == 3 else 1, 64)
    luma = part[:, :, :, :nl].sum(dim=(1, 2, 3)).mul_(1.0 / 255)
    chroma = part[:, :, :, nl:].sum(dim=(1, 2, 3)).mul_(1.0 / 255) if ch == 3 else None
    return _table_grad(luma, luma_table), _table_grad(chroma, chroma_table)


def _table_grad(per_image: Optional[torch.Tensor], table: torch.Tensor) -> torch.Tensor:
    if per_image is None:
        return torch.zeros_like(table)
    per_image = per_image.view(-1, 8, 8).to(table.dtype)
    return per_image if table.dim() == 3 else per_image.sum(0)


# ---------------------------------------------------------------- the two halves (fdgpu.encode / fdgpu.decode)
def _halves_plan(n: int, ch: int, h: int, w: int, subsampling: str, kernel: str) -> Launch:
    # the encoder's and decoder's programs: per chroma tile (whole MCUs) VS * HS luma tiles, then Cb and Cr, one
    # codec per program
    g = _geometry(h, w, ch, subsampling)
    planes = g.hs * g.vs + (2 if ch == 3 else 0)
    return _launch(n, kernel, size_class(h, w), g.hp // 8 // g.vs, g.wp // 8 // g.hs, planes)


def encode(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: Optional[torch.Tensor],
           subsampling: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The encoder half of ``x`` ``(N, C, H, W)`` float32 in [0, 1]: the quantized coefficients ``(qy, qc)`` as
    float32 planes ``(N, 1, Hp, Wp)`` and ``(N, 2, Hp / vs, Wp / hs)`` (None for C = 1), the layout of
    :func:`fdgpu.reference.jpeg.encode`. Tables as in :func:`forward`."""
    n, ch, h, w = x.shape
    g = _geometry(h, w, ch, subsampling)
    lq, sl = _tables(luma_table, n, x.device)
    cq, sc = _tables(chroma_table if chroma_table is not None else luma_table, n, x.device)
    qy = torch.empty((n, 1, g.hp, g.wp), dtype=torch.float32, device=x.device)
    qc = torch.empty((n, 2, g.hp // g.vs, g.wp // g.hs), dtype=torch.float32, device=x.device) if ch == 3 else None
    pl = _halves_plan(n, ch, h, w, subsampling, "_jpeg_encode_kernel")
    (tbh, tbw), nt_w, nt, chunks, _ = pl
    with _device_guard(x):
        k = _consts(x.device)
        for i, j, grid in chunks:
            _start(_jpeg_encode_kernel, grid, (_part(x, i, j), _part(qy, i, j),
                   _part(qc, i, j) if qc is not None else qy, _rows(lq, sl, i, j), _rows(cq, sc, i, j), k, sl, sc, h, w,
                   g.hc, g.hp // 8, g.wp // 8, nt_w, nt), dict(C=ch, HS=g.hs, VS=g.vs, TBH=tbh, TBW=tbw, **_opts(pl)))
    return qy, qc


def decode(qy: torch.Tensor, qc: Optional[torch.Tensor], tables, subsampling: str, h: int, w: int) -> torch.Tensor:
    """The decoder half: float32 quantized coefficient planes as :func:`encode` gives them (integers with
    ``|r Q| <= 2048``, checked by the caller), ``tables`` ``(luma, cb, cr)`` of one layout (shared or per image)
    -> images ``(N, C, H, W)`` float32 on the 1/255 grid."""
    n = qy.shape[0]
    ch = 1 if qc is None else 3
    g = _geometry(h, w, ch, subsampling)
    rows = [_tables(t, n, qy.device) for t in (tables if ch == 3 else tables[:1] * 3)]
    strides = {s for _, s in rows}
    if len(strides) != 1:  # one stride for the three: per-image rows for all
        rows = [((t.reshape(1, 64).expand(n, 64) if s == 0 else t).contiguous(), 64) for t, s in rows]
    s_q = rows[0][1]
    y = torch.empty((n, ch, h, w), dtype=torch.float32, device=qy.device)
    # uint8 planes for the upsampler (empty for grayscale, whose luma goes to y: one signature for both)
    yb = torch.empty((n, h, w) if ch == 3 else (n, 0, 0), dtype=torch.uint8, device=qy.device)
    cb = torch.empty((n, 2, g.hc, g.wc) if ch == 3 else (n, 0, 0, 0), dtype=torch.uint8, device=qy.device)
    pl = _halves_plan(n, ch, h, w, subsampling, "_jpeg_decode_kernel")
    (tbh, tbw), nt_w, nt, chunks, _ = pl
    with _device_guard(qy):
        k = _consts(qy.device)
        for i, j, grid in chunks:
            _start(_jpeg_decode_kernel, grid, (_part(qy, i, j), _part(qc, i, j) if qc is not None else qy,
                   _part(y, i, j), _part(yb, i, j), _part(cb, i, j), *(_rows(t, s_q, i, j) for t, _ in rows), k, s_q, h,
                   w, g.hc, g.wc, g.hp // 8, g.wp // 8, nt_w, nt), dict(C=ch, HS=g.hs, VS=g.vs, TBH=tbh, TBW=tbw,
                   **_opts(pl)))
        if ch == 3:
            up = _launch(n, "_jpeg_up_kernel", size_class(h, w), h, w)
            (bh, bw), nt_w, nt, chunks, _ = up
            for i, j, grid in chunks:
                _start(_jpeg_up_kernel, grid, (_part(yb, i, j), _part(cb, i, j), _part(y, i, j), h, w, g.hc, g.wc, nt_w,
                       nt), dict(HS=g.hs, VS=g.vs, FANCY=g.wc > 2 and (g.hs, g.vs) != (1, 1), BH=bh, BW=bw,
                       **_opts(up)))
    return y

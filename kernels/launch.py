"""Thin launchers: allocate outputs, compute the grid, call the kernels. No validation, no defaults.

Tile sizes (in 8x8 blocks) are fixed, not autotuned: they are the largest that compile without spills on sm_80 and
sm_90 at the chosen warp counts (``python -m fdgpu.kernels.aot``), and a tile must hold whole MCUs.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import triton

from fdgpu.reference import dct as _ref_dct
from fdgpu.reference.jpeg import Geometry

from .jpeg import (_jpeg_bwd_chroma_kernel, _jpeg_bwd_chroma_soft_kernel, _jpeg_bwd_kernel, _jpeg_fwd_kernel,
                   _jpeg_fwd_sub_kernel, _jpeg_up_kernel)

# (TBH, TBW) tiles in blocks and warps per kernel. Chroma tiles need >= 16 blocks: the M dimension of tl.dot.
FWD_TILE = (2, 8)          # grayscale / 4:4:4: 16 blocks = 16 x 64 pixels
SUB_TILE = (2, 8)          # 4:2:x: 16 chroma blocks, i.e. 2*VS x 8*HS luma blocks
UP_TILE = (8, 64)          # upsample + colour: pixels (2 per thread at 8 warps)
BWD_TILE = (2, 8)          # luma blocks; a whole number of MCUs for every subsampling (VS, HS in {1, 2})
# Warps per kernel. The fp32 "ieee" dot is lowered to FMAs with operands in registers; at 4 warps per 16-block tile
# the soft backward kernels hit 255 registers and bwd_chroma 4:2:0 soft spilled 252 B (sm_80); at 8 warps every
# variant compiles without spills and the forward kernels need 48-64 registers (python -m fdgpu.kernels.aot).
WARPS = {"_jpeg_fwd_kernel": 8, "_jpeg_fwd_sub_kernel": 8, "_jpeg_up_kernel": 8, "_jpeg_bwd_chroma_kernel": 8,
         "_jpeg_bwd_chroma_soft_kernel": 8, "_jpeg_bwd_kernel": 8}
# No software pipelining: the plane loops are short (2-4 trips) and multi-buffering them took up to 164 KB of
# shared memory, more than an A100 block may have.
NUM_STAGES = 1
# No FMA contraction of elementwise arithmetic: torch rounds x * 255 before adding 0.5 (and likewise elsewhere);
# a fused multiply-add rounds once and can land on the other side of a floor() than the reference. The DCT dots
# still use FMAs (they are explicit in the dot lowering, not contractions): fwd 4:4:4 keeps its 512 FMAs and 64
# registers, and gains 36 separate mul/add.
FP_FUSION = False


@functools.lru_cache(maxsize=None)
def _kron(device: torch.device) -> torch.Tensor:
    """K[8u + v, 8r + c] = D[u, r] D[v, c], (64, 64) fp32: the very matrix the reference uses, so that exactly
    representable coefficients (the DC, S / 8 with K[0] = 1/8) round identically on both sides."""
    if hasattr(_ref_dct, "dct_basis"):
        return _ref_dct.dct_basis(torch.float32, device).reshape(64, 64).contiguous()
    d = _ref_dct.dct_matrix(torch.float32, device)
    return (d[:, None, :, None] * d[None, :, None, :]).reshape(64, 64).contiguous()


def _opts(kernel: str) -> dict:
    return dict(num_warps=WARPS[kernel], num_stages=NUM_STAGES, enable_fp_fusion=FP_FUSION)


def _stride(t: torch.Tensor) -> int:
    return 64 if t.dim() == 3 else 0


def forward(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: Optional[torch.Tensor], subsampling: str,
            need_weight: bool = False) -> Tuple[torch.Tensor, Optional[Tuple]]:
    """JPEG round trip of ``x`` ``(N, C, H, W)`` float32 in [0, 1]; returns ``(y, saved)`` with ``saved`` =
    ``(x, luma_table, chroma_table)`` when ``need_weight`` (the soft backward recomputes coefficients from x)."""
    n, ch, h, w = x.shape
    g = Geometry.of(h, w, ch, subsampling)
    if chroma_table is None:
        chroma_table = luma_table
    k = _kron(x.device)
    y = torch.empty_like(x)
    nbh, nbw = g.hp // 8, g.wp // 8
    if ch == 1 or (g.hs, g.vs) == (1, 1):
        tbh, tbw = FWD_TILE
        grid = (triton.cdiv(nbh, tbh), triton.cdiv(nbw, tbw), n)
        _jpeg_fwd_kernel[grid](x, y, luma_table, chroma_table, k, _stride(luma_table), _stride(chroma_table),
                               h, w, nbh, nbw, C=ch, TBH=tbh, TBW=tbw, **_opts("_jpeg_fwd_kernel"))
    else:
        yb = torch.empty((n, h, w), dtype=torch.uint8, device=x.device)
        cb = torch.empty((n, 2, g.hc, g.wc), dtype=torch.uint8, device=x.device)
        tbh, tbw = SUB_TILE
        grid = ((g.vs * g.hs + 2) * triton.cdiv(nbw // g.hs, tbw), triton.cdiv(nbh // g.vs, tbh), n)
        _jpeg_fwd_sub_kernel[grid](x, yb, cb, luma_table, chroma_table, k, _stride(luma_table),
                                   _stride(chroma_table), h, w, g.hc, g.wc, nbh, nbw, HS=g.hs, VS=g.vs,
                                   TBH=tbh, TBW=tbw, **_opts("_jpeg_fwd_sub_kernel"))
        bh, bw = UP_TILE
        grid = (triton.cdiv(h, bh), triton.cdiv(w, bw), n)
        _jpeg_up_kernel[grid](yb, cb, y, h, w, g.hc, g.wc, HS=g.hs, VS=g.vs, FANCY=g.wc > 2, BH=bh, BW=bw,
                              **_opts("_jpeg_up_kernel"))
    return y, ((x, luma_table, chroma_table) if need_weight else None)


def backward(grad: torch.Tensor, saved: Optional[Tuple], subsampling: str) -> torch.Tensor:
    """``grad_x`` for the ``ste`` (``saved`` None: ``L^T grad``) and ``soft`` modes; ``grad`` ``(N, C, H, W)``."""
    n, ch, h, w = grad.shape
    soft = saved is not None
    if ch == 1 and not soft:
        return grad.clone()  # L is the identity for grayscale once rounding is straight-through
    g = Geometry.of(h, w, ch, subsampling)
    x, lt, ct = saved if soft else (grad, grad, grad)  # unused pointers when not SOFT
    if ct is None:
        ct = lt
    k = _kron(grad.device)
    nbh, nbw = g.hp // 8, g.wp // 8
    sl, sc = (_stride(lt), _stride(ct)) if soft else (0, 0)
    wcp = g.wp // g.hs
    sub = ch == 3 and (g.hs, g.vs) != (1, 1)
    gc = grad
    if sub:
        gc = torch.empty((n, 2, g.hc, wcp), dtype=torch.float32, device=grad.device)
        tbh, tbw = SUB_TILE
        nbhc, nbwc = nbh // g.vs, nbw // g.hs
        grid = (2 * triton.cdiv(nbwc, tbw), triton.cdiv(nbhc, tbh), n)
        _jpeg_bwd_chroma_kernel[grid](grad, gc, h, w, g.hc, g.wc, wcp, nbhc, nbwc, HS=g.hs, VS=g.vs,
                                      FANCY=g.wc > 2, TBH=tbh, TBW=tbw, **_opts("_jpeg_bwd_chroma_kernel"))
        if soft:
            _jpeg_bwd_chroma_soft_kernel[grid](x, ct, k, gc, sc, h, w, g.hc, wcp, nbhc, nbwc, HS=g.hs, VS=g.vs,
                                               TBH=tbh, TBW=tbw, **_opts("_jpeg_bwd_chroma_soft_kernel"))
    out = torch.empty_like(grad)
    tbh, tbw = BWD_TILE
    grid = (triton.cdiv(nbh, tbh), triton.cdiv(nbw, tbw), n)
    _jpeg_bwd_kernel[grid](grad, x, gc, lt, ct, k, out, sl, sc, h, w, g.hc, wcp, nbh, nbw, C=ch, HS=g.hs, VS=g.vs,
                           SOFT=soft, TBH=tbh, TBW=tbw, **_opts("_jpeg_bwd_kernel"))
    return out

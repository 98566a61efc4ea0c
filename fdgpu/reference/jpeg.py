"""The whole JPEG round trip in PyTorch, stage by stage, as libjpeg-turbo (and so Pillow) computes it: the output
equals Pillow's decode of Pillow's encode (default settings) value for value (tests/test_fidelity.py).

``forward`` is the reference that the Triton kernels are tested against and the CPU implementation; ``backward``
is the explicit adjoint used by the ``ste`` and ``soft`` backward modes; ``linear_map`` is the pipeline with every
rounding and clamp removed (the map ``L`` whose transpose ``ste`` applies).

Shapes: ``x`` is ``(N, C, H, W)`` float in [0, 1] with C in {1, 3}; tables are ``(8, 8)`` or ``(N, 8, 8)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..backends import cpu as _cpu
from .color import rgb_to_ycbcr, rgb_to_ycbcr_adjoint, ycbcr_to_rgb, ycbcr_to_rgb_adjoint
from .dct import block_dct, block_idct, fdct_islow, idct_islow
from .parallel import map_chunks, workers
from .quantize import quantize_dequantize, soft_weight, table_factor
from .sampling import (FACTORS, downsample, downsample_adjoint, pad_replicate, pad_replicate_adjoint, upsample,
                       upsample_adjoint)


@dataclass(frozen=True)
class Geometry:
    """Sizes of one image through the codec: MCU-padded planes and the real (decoded) chroma size."""
    h: int
    w: int
    hs: int  # chroma subsampling factors (1, 1) for 4:4:4 and grayscale
    vs: int
    hp: int  # image padded to whole MCUs (edge replication)
    wp: int
    hc: int  # real chroma samples: ceil(h / vs) x ceil(w / hs)
    wc: int

    @staticmethod
    def of(h: int, w: int, channels: int, subsampling: str) -> "Geometry":
        hs, vs = FACTORS[subsampling] if channels == 3 else (1, 1)
        mh, mw = 8 * vs, 8 * hs
        return Geometry(h, w, hs, vs, -(-h // mh) * mh, -(-w // mw) * mw, -(-h // vs), -(-w // hs))


def _codec(p: torch.Tensor, table: torch.Tensor, need_weight: bool, linear: bool):
    """Level shift, integer forward DCT, quantize + dequantize, integer inverse DCT with its range limit:
    ``(N, K, Hp, Wp) -> (N, K, Hp, Wp)`` samples (and the quotients ``z = t / 8Q`` ``(N, K, 64, Hp / 8, Wp / 8)``,
    the saved state of the ``ste``/``soft`` backward, when asked), exactly libjpeg-turbo's jfdctint.c, jcdctmgr.c
    (quantize), jidctint.c."""
    if linear:  # no quantization: the real-valued IDCT(DCT(p)) = p exactly (the DCT is orthonormal)
        return p, None
    t = fdct_islow(p)
    c, weight = quantize_dequantize(t, table, need_weight, p.dtype)
    return idct_islow(c).to(p.dtype), weight


# Images per chunk: the batch is processed in chunks of about this many values so that the ~40 elementwise passes
# run from cache (L3) instead of memory. 2**21 values = 8 images of 3x224x224: on the 2-core EPYC, forward time per
# image falls from 2.48 ms (whole batch of 32) to 1.38 ms (chunks of 8), single-threaded.
CHUNK_VALUES = 1 << 21
CHUNKS_PER_WORKER = 2  # at least two chunks per worker, so that a stalled worker's share is small


def _chunks(n: int, per_image: int):
    # at most CHUNK_VALUES per chunk, and at least CHUNKS_PER_WORKER chunks per worker (fdgpu/reference/parallel.py)
    step = max(1, min(CHUNK_VALUES // max(1, per_image), -(-n // (CHUNKS_PER_WORKER * workers()))))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def _rows(t: Optional[torch.Tensor], i: int, j: int) -> Optional[torch.Tensor]:
    # per-image tables (N, 8, 8) are sliced with the batch; shared (8, 8) tables are not
    return t[i:j] if t is not None and t.dim() == 3 else t


def _cat(parts):
    return None if parts[0] is None else (parts[0] if len(parts) == 1 else torch.cat(parts))


def forward(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: Optional[torch.Tensor], subsampling: str,
            need_weight: bool = False, linear: bool = False, fused: bool = True) -> Tuple[torch.Tensor, Tuple]:
    """JPEG-compress and decode ``x``.

    Args:
        x: ``(N, C, H, W)`` float32/float64 in [0, 1], C in {1, 3}.
        luma_table, chroma_table: ``(8, 8)`` or ``(N, 8, 8)`` steps; chroma is unused for C = 1.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (ignored for C = 1).
        need_weight: also return the saved state of the ``ste``/``soft`` backward: the quotient ``z = c / Q`` of
            every coefficient (the soft weight and the table gradients are functions of it).
        linear: evaluate ``L`` instead: every rounding and clamp removed (quantization becomes the identity).
        fused: allow the compiled CPU path (:mod:`fdgpu.backends.cpu`, equal bits) where it applies; False runs
            these torch ops (the definition the Triton kernels mirror).

    Returns:
        ``(y, weights)``: ``y`` is ``(N, C, H, W)`` on the 1/255 grid (real-valued when ``linear``); ``weights`` is
        ``(luma, chroma)`` quotients ``(N, 1, 64, Hp / 8, Wp / 8)`` and
        ``(N, 2, 64, Hp / 8 / vs, Wp / 8 / hs)`` (or None).
    """
    if not linear and fused:
        done = _cpu.forward(x, luma_table, chroma_table, subsampling, need_weight)
        if done is not None:
            return done
    chunks = _chunks(x.shape[0], x[0].numel())
    if len(chunks) == 1:
        return map_chunks(_forward, [(x, luma_table, chroma_table, subsampling, need_weight, linear)], x.device)[0]
    # Each chunk writes its last stage into the output (no concatenation pass), unless autograd records the ops.
    tracked = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, luma_table, chroma_table))
    out = None if tracked else torch.empty_like(x)
    parts = map_chunks(_forward, [(x[i:j], _rows(luma_table, i, j), _rows(chroma_table, i, j), subsampling,
                                   need_weight, linear, None if out is None else out[i:j]) for i, j in chunks],
                       x.device)
    y = out if out is not None else _cat([p[0] for p in parts])
    return y, (_cat([p[1][0] for p in parts]), _cat([p[1][1] for p in parts]))


def _forward(x, luma_table, chroma_table, subsampling, need_weight, linear, out=None):
    n, ch, h, w = x.shape
    g = Geometry.of(h, w, ch, subsampling)
    u = x * 255.0
    if not linear:
        # the 8-bit samples a real encoder receives; NaN (only with validate=False) reads as 0, as in the kernels,
        # whose max(NaN, 0) is 0
        u = u.add_(0.5).floor_().nan_to_num_(nan=0.0).clamp_(0, 255)
    u = pad_replicate(u, g.hp, g.wp)
    if ch == 1:
        y, wy = _codec(u, luma_table, need_weight, linear)
        return _scale_out(y[..., :h, :w], out), (wy, None)
    ycc = rgb_to_ycbcr(u, exact=not linear)
    luma = ycc[:, :1]
    # libjpeg pads the image to an even height before downsampling, then repeats the last *downsampled* row.
    chroma = downsample(ycc[:, 1:, : g.hc * g.vs], g.hs, g.vs, exact=not linear)
    chroma = pad_replicate(chroma, g.hp // g.vs, g.wp // g.hs)
    y_dec, wy = _codec(luma, luma_table, need_weight, linear)
    c_dec, wcc = _codec(chroma, chroma_table, need_weight, linear)
    c_up = upsample(c_dec[..., : g.hc, : g.wc], g.hs, g.vs, h, w, exact=not linear)
    rgb = ycbcr_to_rgb(y_dec[:, 0, :h, :w], c_up, exact=not linear)
    return _scale_out(rgb, out), (wy, wcc)


def _scale_out(v: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    # 0..255 samples -> [0, 1] as users compute it (uint8_levels.float() / 255): a true division, which differs from
    # v * (1 / 255) by one ulp for 126 of the 256 levels; into the caller's buffer when given
    return torch.div(v, 255, out=out) if out is not None else v.div(255)


def linear_map(x: torch.Tensor, subsampling: str) -> torch.Tensor:
    """``L(x)``: the pipeline with every rounding and clamp removed. ``(N, C, H, W) -> (N, C, H, W)``."""
    return forward(x, None, None, subsampling, linear=True)[0]


def _coef_adjoint(g: torch.Tensor, z: Optional[torch.Tensor], soft: bool, want_tables: bool):
    """Adjoint of IDCT o quantize-dequantize o DCT on a padded plane ``g`` ``(N, K, Hp, Wp)`` (scaled by 255, as
    everywhere in the backward). Returns ``(g_in, table_grad)``: the rounding derivative is the soft weight or 1
    (ste: ``g`` itself); ``table_grad`` is ``(N, 64)``, summed over the K planes and all blocks, or None."""
    if z is None or not (soft or want_tables):
        return g, None
    gc = block_dct(g)                                     # [N, K, 64, h, w]: 255 * dloss / dc'
    tg = None
    if want_tables:
        tg = (gc * table_factor(z, "soft" if soft else "ste")).sum(dim=(1, 3, 4)).mul_(1.0 / 255)
    return (block_idct(gc * soft_weight(z)) if soft else g), tg


def backward(grad: torch.Tensor, saved: Optional[Tuple], subsampling: str, mode: Optional[str] = None,
             tables: Optional[Tuple] = None, fused: bool = True):
    """Vector-Jacobian product of the pipeline for the ``ste`` and ``soft`` modes.

    Every rounding and clamp is straight-through; coefficient rounding contributes ``3 (z - round z)**2`` (soft) or 1
    (ste). ``grad`` is ``(N, C, H, W)``; ``saved`` is the ``(luma, chroma)`` quotients ``z = c / Q`` from
    ``forward(..., need_weight=True)`` (entries may be None), or None. ``mode`` defaults to "soft" when ``saved``
    is given and "ste" otherwise.

    Returns the gradient with respect to ``x`` (same shape as ``grad``), or, when ``tables = (luma_table,
    chroma_table)`` is given (``saved`` required), ``(grad_x, grad_luma, grad_chroma)``: each table's gradient
    ``sum dloss/dc' * dc'/dQ`` over its blocks (:func:`fdgpu.reference.quantize.table_factor`), shaped like the
    table (``(8, 8)`` summed over the batch, ``(N, 8, 8)`` per image); zero for a table the input does not use.

    ``fused``: without table gradients, allow the compiled CPU path (:func:`fdgpu.backends.cpu.backward`: the
    same sums in another order, so equal up to float rounding); False runs these torch ops.
    """
    zy, zc = saved if saved is not None else (None, None)
    mode = mode if mode is not None else ("soft" if saved is not None else "ste")
    soft, want = mode == "soft", tables is not None
    if want and saved is None:
        raise ValueError("backward: table gradients need the saved quotients: forward(..., need_weight=True)")
    if not want and fused:
        gx = _cpu.backward(grad, saved if soft else None, subsampling, mode)
        if gx is not None:
            return gx
    chunks = _chunks(grad.shape[0], grad[0].numel())
    if len(chunks) == 1:
        gx, ty, tc = map_chunks(_backward, [(grad, zy, zc, subsampling, soft, want)], grad.device)[0]
    else:
        gx = torch.empty_like(grad)

        def part(i, j):  # one chunk's intermediates alive per worker
            gx[i:j], ty, tc = _backward(grad[i:j], _weight_rows(zy, i, j), _weight_rows(zc, i, j), subsampling,
                                        soft, want)
            return ty, tc
        parts = map_chunks(part, chunks, grad.device)
        ty, tc = (_cat([p[0] for p in parts]), _cat([p[1] for p in parts])) if want else (None, None)
    if not want:
        return gx
    return (gx,) + tuple(_table_grad(t, table, grad.shape[0]) for t, table in zip((ty, tc), tables))


def _table_grad(per_image: Optional[torch.Tensor], table: torch.Tensor, n: int) -> torch.Tensor:
    # (N, 64) per-image sums -> the table's shape: (8, 8) tables are shared by the batch, (N, 8, 8) are not
    if per_image is None:
        return torch.zeros_like(table)
    per_image = per_image.view(n, 8, 8).to(table.dtype)
    return per_image if table.dim() == 3 else per_image.sum(0)


def _weight_rows(t: Optional[torch.Tensor], i: int, j: int) -> Optional[torch.Tensor]:
    # saved quotients always have one entry per image (unlike tables, which may be shared)
    return None if t is None else t[i:j]


def _backward(grad, zy, zc, subsampling, soft, want):
    n, ch, h, w = grad.shape
    g = Geometry.of(h, w, ch, subsampling)
    need_y = zy is not None and (soft or want)
    need_c = zc is not None and (soft or want) and ch == 3
    # The 1/255 of the output and the 255 of the input cancel.
    if ch == 1:
        if not need_y:
            return grad.clone(), None, None
        gy, ty = _coef_adjoint(F.pad(grad, (0, g.wp - w, 0, g.hp - h)), zy, soft, want)
        return pad_replicate_adjoint(gy, h, w), ty, None
    g_y, g_c = ycbcr_to_rgb_adjoint(grad)                         # (N, H, W), (N, 2, H, W)
    g_c = upsample_adjoint(g_c, g.hs, g.vs, g.hc, g.wc)           # (N, 2, hc, wc)
    g_c = F.pad(g_c, (0, g.wp // g.hs - g.wc, 0, (g.hp // g.vs - g.hc) if need_c else 0))
    tc = ty = None
    if need_c:
        g_c, tc = _coef_adjoint(g_c, zc, soft, want)
        g_c = pad_replicate_adjoint(g_c, g.hc, g.wp // g.hs)
    g_c = downsample_adjoint(g_c, g.hs, g.vs)                     # (N, 2, hc * vs, Wp)
    g_ycc = grad.new_zeros(n, 3, g.hp, g.wp)
    g_ycc[:, 0, :h, :w] = g_y
    if need_y:
        gl, ty = _coef_adjoint(g_ycc[:, :1], zy, soft, want)
        if soft:
            g_ycc[:, :1] = gl
    g_ycc[:, 1:, : g.hc * g.vs] = g_c
    return pad_replicate_adjoint(rgb_to_ycbcr_adjoint(g_ycc), h, w), ty, tc

"""The whole JPEG round trip in PyTorch, stage by stage, as libjpeg-turbo (and so Pillow) computes it: the output
equals Pillow's decode of Pillow's encode (default settings) value for value (tests/test_fidelity.py).

``forward`` is the reference that the C library and the Triton kernels are tested against (the ``torch`` backend
of :mod:`fdgpu.backends`); ``backward`` is the explicit adjoint used by the ``ste`` and ``soft`` backward modes;
``linear_map`` is the pipeline with every rounding and clamp removed (the map ``L`` whose transpose ``ste``
applies).

Shapes: ``x`` is ``(N, C, H, W)`` float in [0, 1] with C in {1, 3}; tables are ``(8, 8)`` or ``(N, 8, 8)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .color import rgb_to_ycbcr, rgb_to_ycbcr_adjoint, ycbcr_to_rgb, ycbcr_to_rgb_adjoint
from .dct import block_dct, block_idct, fdct_islow, idct_islow
from .parallel import map_chunks, workers
from ..choices import BACKWARD_MODES
from .quantize import dequantize, quantize, round_half_away, soft_weight
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


def check_input(name: str, x: torch.Tensor, subsampling: str) -> None:
    """The pipeline's shape rules for ``x`` (or a gradient) ``(N, C, H, W)``: a float tensor, N >= 1, C in {1, 3},
    H, W >= 1, and a known subsampling. Raises ValueError naming ``name``; reads no values (no host sync)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
        got = f"{x.dim()}-D {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a float (N, C, H, W) tensor, got {got}")
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"{name}: expected 1 (grayscale) or 3 (RGB) channels, got shape {tuple(x.shape)}")
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"{name}: expected N, H, W >= 1, got shape {tuple(x.shape)}")
    if subsampling not in FACTORS:
        raise ValueError(f"subsampling: expected one of {sorted(FACTORS)}, got {subsampling!r}")


def check_tables(x: torch.Tensor, luma_table, chroma_table) -> None:
    """Tables for ``x`` ``(N, C, H, W)``: ``(8, 8)`` or ``(N, 8, 8)`` on x's device (chroma for C = 3 only)."""
    n, c = x.shape[:2]
    for name, t in [("luma_table", luma_table)] + ([("chroma_table", chroma_table)] if c == 3 else []):
        if t is None or t.dim() not in (2, 3) or t.shape[-2:] != (8, 8) or (t.dim() == 3 and t.shape[0] != n):
            got = "None" if t is None else f"shape {tuple(t.shape)}"
            raise ValueError(f"{name}: expected an (8, 8) or ({n}, 8, 8) tensor of steps, got {got}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got {t.device}")


def state_shapes(shape, subsampling: str):
    """Shapes of the saved quotients of an ``(N, C, H, W)`` input: luma ``(N, 1, 64, Hp/8, Wp/8)`` and chroma
    ``(N, 2, 64, Hp/8/vs, Wp/8/hs)`` (None for grayscale)."""
    n, ch, h, w = shape
    g = Geometry.of(h, w, ch, subsampling)
    return (n, 1, 64, g.hp // 8, g.wp // 8), ((n, 2, 64, g.hp // 8 // g.vs, g.wp // 8 // g.hs) if ch == 3 else None)


def check_state(grad: torch.Tensor, saved, subsampling: str) -> None:
    """``saved`` ``(zy, zc)`` (entries may be None) must be the quotients that ``forward(..., need_weight=True)``
    saves for an input shaped like ``grad`` at ``subsampling``, on its device, in a float dtype."""
    if saved is None:
        return
    for name, z, shape in zip(("luma", "chroma"), saved, state_shapes(grad.shape, subsampling)):
        if z is None:
            continue
        if shape is None:
            raise ValueError(f"saved {name} quotients: expected None for a grayscale input, got shape "
                             f"{tuple(z.shape)}")
        if tuple(z.shape) != shape or not z.is_floating_point() or z.device != grad.device:
            raise ValueError(f"saved {name} quotients: expected a float tensor of shape {shape} on {grad.device} "
                             f"(the state that forward(..., need_weight=True) saves for a {tuple(grad.shape)} input "
                             f"at {subsampling}), got {tuple(z.shape)} {z.dtype} on {z.device}")


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
            need_weight: bool = False, linear: bool = False) -> Tuple[torch.Tensor, Tuple]:
    """JPEG-compress and decode ``x``.

    Args:
        x: ``(N, C, H, W)`` float32/float64 in [0, 1], C in {1, 3}.
        luma_table, chroma_table: ``(8, 8)`` or ``(N, 8, 8)`` steps; chroma is unused for C = 1.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (ignored for C = 1).
        need_weight: also return the saved state of the ``ste``/``soft`` backward: the quotient ``z = c / Q`` of
            every coefficient (the soft weight and the table gradients are functions of it).
        linear: evaluate ``L`` instead: every rounding and clamp removed (quantization becomes the identity).

    Returns:
        ``(y, weights)``: ``y`` is ``(N, C, H, W)`` on the 1/255 grid (real-valued when ``linear``); ``weights`` is
        ``(luma, chroma)`` quotients ``(N, 1, 64, Hp / 8, Wp / 8)`` and
        ``(N, 2, 64, Hp / 8 / vs, Wp / 8 / hs)`` (or None).
    """
    check_input("x", x, subsampling)
    if not linear:
        check_tables(x, luma_table, chroma_table)
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
    if linear:
        return _linear(x, subsampling, out), (None, None)
    # the round trip is literally the decoder of the encoder's quantized coefficients
    (qy, qc), weights = encode(x, luma_table, chroma_table, subsampling, need_weight)
    h, w = x.shape[-2:]
    return decode(qy, qc, (luma_table, chroma_table, chroma_table), subsampling, h, w, x.dtype, out), weights


def encode(x: torch.Tensor, luma_table: torch.Tensor, chroma_table: Optional[torch.Tensor], subsampling: str,
           need_weight: bool = False):
    """The encoder: 8-bit samples, colour conversion, chroma downsampling, edge padding, integer forward DCT and
    quantization, as libjpeg-turbo's jpeg_write_scanlines computes them.

    Args:
        x: ``(N, C, H, W)`` float32/float64 in [0, 1], C in {1, 3}.
        luma_table, chroma_table: ``(8, 8)`` or ``(N, 8, 8)`` steps; chroma is unused for C = 1.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (ignored for C = 1).
        need_weight: also return the quotients ``z = t / 8Q`` (see :func:`forward`).

    Returns:
        ``((qy, qc), (zy, zc))``: the quantized integer coefficients (float32) in the plane layout of
        :mod:`fdgpu.reference.dct`, luma ``(N, 1, Hp, Wp)`` and chroma ``(N, 2, Hp / vs, Wp / hs)`` (None for
        C = 1), MCU-padded; and the quotients as in :func:`forward` (or None).
    """
    n, ch, h, w = x.shape
    g = Geometry.of(h, w, ch, subsampling)
    # the 8-bit samples a real encoder receives; NaN (only with validate=False) reads as 0, as in the kernels,
    # whose max(NaN, 0) is 0
    u = (x * 255.0).add_(0.5).floor_().nan_to_num_(nan=0.0).clamp_(0, 255)
    u = pad_replicate(u, g.hp, g.wp)
    if ch == 1:
        qy, wy = quantize(fdct_islow(u), luma_table, need_weight, x.dtype)
        return (qy, None), (wy, None)
    ycc = rgb_to_ycbcr(u)
    # libjpeg pads the image to an even height before downsampling, then repeats the last *downsampled* row.
    chroma = downsample(ycc[:, 1:, : g.hc * g.vs], g.hs, g.vs)
    chroma = pad_replicate(chroma, g.hp // g.vs, g.wp // g.hs)
    qy, wy = quantize(fdct_islow(ycc[:, :1]), luma_table, need_weight, x.dtype)
    assert chroma_table is not None  # a colour image needs its chroma table
    qc, wc = quantize(fdct_islow(chroma), chroma_table, need_weight, x.dtype)
    return (qy, qc), (wy, wc)


def decode(qy: torch.Tensor, qc: Optional[torch.Tensor], tables: Tuple, subsampling: str, h: int, w: int,
           dtype=torch.float32, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The decoder: dequantization, integer inverse DCT with its range limit, chroma upsampling ("fancy", as
    Pillow's libjpeg-turbo decodes) and colour conversion, as libjpeg-turbo's jpeg_read_scanlines computes them.

    Args:
        qy: ``(N, 1, Hp, Wp)`` quantized integer luma coefficients in the plane layout (any float dtype); the
            planes may be larger than the image (MCU padding): only the blocks the image covers matter.
        qc: ``(N, 2, Hp / vs, Wp / hs)`` chroma (Cb, Cr), or None for grayscale.
        tables: ``(luma, cb, cr)`` steps, each ``(8, 8)`` or ``(N, 8, 8)`` (the chroma entries unused for
            grayscale).
        subsampling: the chroma factors' name ("4:4:4", "4:2:2" or "4:2:0"); ignored for grayscale.
        h, w: the image size.
        dtype: the dtype of the result (float32 or float64: the same values).
        out: an ``(N, C, H, W)`` buffer for the result, or None.

    Returns:
        ``(N, C, H, W)`` ``dtype`` on the 1/255 grid (C = 1 without chroma, else 3), or ``out``.
    """
    ty, tcb, tcr = tables
    y_dec = idct_islow(dequantize(qy, ty)).to(dtype)
    if qc is None:
        return _scale_out(y_dec[..., :h, :w], out)
    g = Geometry.of(h, w, 3, subsampling)
    if tcr is tcb:
        cq = dequantize(qc, tcb)
    else:  # a file may give Cb and Cr their own tables
        cq = torch.cat([dequantize(qc[:, :1], tcb), dequantize(qc[:, 1:], tcr)], dim=1)
    c_dec = idct_islow(cq).to(dtype)
    c_up = upsample(c_dec[..., : g.hc, : g.wc], g.hs, g.vs, h, w)
    return _scale_out(ycbcr_to_rgb(y_dec[:, 0, :h, :w], c_up), out)


def _linear(x, subsampling, out):
    """``L(x)``: the pipeline with every rounding and clamp removed (the DCT and quantization drop out: the
    real-valued ``IDCT(DCT(p)) = p`` exactly, the DCT being orthonormal)."""
    n, ch, h, w = x.shape
    g = Geometry.of(h, w, ch, subsampling)
    u = pad_replicate(x * 255.0, g.hp, g.wp)
    if ch == 1:
        return _scale_out(u[..., :h, :w], out)
    ycc = rgb_to_ycbcr(u, exact=False)
    chroma = downsample(ycc[:, 1:, : g.hc * g.vs], g.hs, g.vs, exact=False)
    c_up = upsample(chroma[..., : g.hc, : g.wc], g.hs, g.vs, h, w, exact=False)
    return _scale_out(ycbcr_to_rgb(ycc[:, 0, :h, :w], c_up, exact=False), out)


def _scale_out(v: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    # 0..255 samples -> [0, 1] as users compute it (uint8_levels.float() / 255): a true division, which differs from
    # v * (1 / 255) by one ulp for 126 of the 256 levels; into the caller's buffer when given
    return torch.div(v, 255, out=out) if out is not None else v.div(255)


def linear_map(x: torch.Tensor, subsampling: str) -> torch.Tensor:
    """``L(x)``: the pipeline with every rounding and clamp removed. ``(N, C, H, W) -> (N, C, H, W)``."""
    return forward(x, None, None, subsampling, linear=True)[0]  # type: ignore[arg-type]  # no tables: linear


def _coef_adjoint(g: torch.Tensor, z: Optional[torch.Tensor], mode, want_tables: bool):
    """Adjoint of IDCT o quantize-dequantize o DCT on a padded plane ``g`` ``(N, K, Hp, Wp)`` (scaled by 255, as
    everywhere in the backward), in backward ``mode`` (a :class:`fdgpu.choices.Backward`). Returns ``(g_in,
    table_grad)``: the rounding derivative is the mode's weight, or 1 (``g`` itself) without one; ``table_grad`` is
    ``(N, 64)``, summed over the K planes and all blocks, or None."""
    weighted = mode.weight is not None
    if z is None or not (weighted or want_tables):
        return g, None
    r = round_half_away(z)
    gc = block_dct(g)                                     # [N, K, 64, h, w]: 255 * dloss / dc'
    tg = None
    if want_tables:
        tg = (gc * mode.table_factor(z, r)).sum(dim=(1, 3, 4)).mul_(1.0 / 255)
    return (block_idct(gc * mode.weight(z, r)) if weighted else g), tg


def backward(grad: torch.Tensor, saved: Optional[Tuple], subsampling: str, mode: Optional[str] = None,
             tables: Optional[Tuple] = None):
    """Vector-Jacobian product of the pipeline for an adjoint backward mode (``ste``, ``soft``: the records of kind
    "adjoint" in :data:`fdgpu.choices.BACKWARD_MODES`).

    Every rounding and clamp is straight-through; coefficient rounding contributes the mode's weight, e.g.
    ``3 (z - round z)**2`` (soft), or 1 (ste). ``grad`` is ``(N, C, H, W)``; ``saved`` is the ``(luma, chroma)``
    quotients ``z = c / Q`` from ``forward(..., need_weight=True)`` (entries may be None), or None. ``mode``
    defaults to "soft" when ``saved`` is given and "ste" otherwise.

    Returns the gradient with respect to ``x`` (same shape as ``grad``), or, when ``tables = (luma_table,
    chroma_table)`` is given (``saved`` required), ``(grad_x, grad_luma, grad_chroma)``: each table's gradient
    ``sum dloss/dc' * dc'/dQ`` over its blocks (:func:`fdgpu.reference.quantize.table_factor`), shaped like the
    table (``(8, 8)`` summed over the batch, ``(N, 8, 8)`` per image); zero for a table the input does not use.
    """
    zy, zc = saved if saved is not None else (None, None)
    mode = mode if mode is not None else ("soft" if saved is not None else "ste")
    rec = BACKWARD_MODES.get(mode)
    if rec is None or rec.kind != "adjoint":
        raise ValueError(f"mode: expected one of {[m for m, r in BACKWARD_MODES.items() if r.kind == 'adjoint']}, "
                         f"got {mode!r}")
    want = tables is not None
    if want and saved is None:
        raise ValueError("backward: table gradients need the saved quotients: forward(..., need_weight=True)")
    check_input("grad", grad, subsampling)
    check_state(grad, saved, subsampling)
    chunks = _chunks(grad.shape[0], grad[0].numel())
    if len(chunks) == 1:
        gx, ty, tc = map_chunks(_backward, [(grad, zy, zc, subsampling, rec, want)], grad.device)[0]
    else:
        gx = torch.empty_like(grad)

        def part(i, j):  # one chunk's intermediates alive per worker
            gx[i:j], ty, tc = _backward(grad[i:j], _weight_rows(zy, i, j), _weight_rows(zc, i, j), subsampling,
                                        rec, want)
            return ty, tc
        parts = map_chunks(part, chunks, grad.device)
        ty, tc = (_cat([p[0] for p in parts]), _cat([p[1] for p in parts])) if want else (None, None)
    if not want:
        return gx
    assert tables is not None  # want
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


def _backward(grad, zy, zc, subsampling, mode, want):
    n, ch, h, w = grad.shape
    g = Geometry.of(h, w, ch, subsampling)
    weighted = mode.weight is not None
    need_y = zy is not None and (weighted or want)
    need_c = zc is not None and (weighted or want) and ch == 3
    # The 1/255 of the output and the 255 of the input cancel.
    if ch == 1:
        if not need_y:
            return grad.clone(), None, None
        gy, ty = _coef_adjoint(F.pad(grad, (0, g.wp - w, 0, g.hp - h)), zy, mode, want)
        return pad_replicate_adjoint(gy, h, w), ty, None
    g_y, g_c = ycbcr_to_rgb_adjoint(grad)                         # (N, H, W), (N, 2, H, W)
    g_c = upsample_adjoint(g_c, g.hs, g.vs, g.hc, g.wc)           # (N, 2, hc, wc)
    g_c = F.pad(g_c, (0, g.wp // g.hs - g.wc, 0, (g.hp // g.vs - g.hc) if need_c else 0))
    tc = ty = None
    if need_c:
        g_c, tc = _coef_adjoint(g_c, zc, mode, want)
        g_c = pad_replicate_adjoint(g_c, g.hc, g.wp // g.hs)
    g_c = downsample_adjoint(g_c, g.hs, g.vs)                     # (N, 2, hc * vs, Wp)
    g_ycc = grad.new_zeros(n, 3, g.hp, g.wp)
    g_ycc[:, 0, :h, :w] = g_y
    if need_y:
        gl, ty = _coef_adjoint(g_ycc[:, :1], zy, mode, want)
        if weighted:
            g_ycc[:, :1] = gl
    g_ycc[:, 1:, : g.hc * g.vs] = g_c
    return pad_replicate_adjoint(rgb_to_ycbcr_adjoint(g_ycc), h, w), ty, tc


# ---------------------------------------------------------------- the two halves' adjoints (fdgpu.encode / decode)
def decode_adjoint(grad: torch.Tensor, subsampling: str, hp: int, wp: int):
    """Adjoint of :func:`decode`'s real-valued pipeline after the inverse DCT (crop, upsampling, colour, the 1/255
    output scale), every rounding and clamp straight-through: ``(N, C, H, W)`` output gradient -> the gradients of
    the decoded sample planes (0..255), luma ``(N, 1, Hp, Wp)`` and chroma ``(N, 2, Hp / vs, Wp / hs)`` (None for
    C = 1), zero on the MCU padding the output does not see."""
    n, ch, h, w = grad.shape
    g = Geometry.of(h, w, ch, subsampling)
    grad = grad * (1.0 / 255)
    if ch == 1:
        return F.pad(grad, (0, wp - w, 0, hp - h)), None
    g_y, g_c = ycbcr_to_rgb_adjoint(grad)                         # (N, H, W), (N, 2, H, W)
    g_c = upsample_adjoint(g_c, g.hs, g.vs, g.hc, g.wc)           # (N, 2, hc, wc)
    g_c = F.pad(g_c, (0, wp // g.hs - g.wc, 0, hp // g.vs - g.hc))
    return F.pad(g_y.unsqueeze(1), (0, wp - w, 0, hp - h)), g_c


def encode_adjoint(g_y: torch.Tensor, g_c: Optional[torch.Tensor], subsampling: str, h: int, w: int) -> torch.Tensor:
    """Adjoint of :func:`encode`'s real-valued pipeline before the forward DCT (the 255 input scale, edge padding,
    colour, chroma downsampling and its padding), every rounding and clamp straight-through: the gradients of the
    sample planes, luma ``(N, 1, Hp, Wp)`` and chroma ``(N, 2, Hp / vs, Wp / hs)`` (None for grayscale) -> the
    gradient of ``x`` ``(N, C, H, W)``."""
    if g_c is None:
        return pad_replicate_adjoint(g_y, h, w) * 255.0
    n, _, hp, wp = g_y.shape
    g = Geometry.of(h, w, 3, subsampling)
    g_c = pad_replicate_adjoint(g_c, g.hc, wp // g.hs)            # (N, 2, hc, Wp / hs)
    g_c = downsample_adjoint(g_c, g.hs, g.vs)                     # (N, 2, hc * vs, Wp)
    g_ycc = g_y.new_zeros(n, 3, hp, wp)
    g_ycc[:, :1] = g_y
    g_ycc[:, 1:, : g.hc * g.vs] = g_c
    return pad_replicate_adjoint(rgb_to_ycbcr_adjoint(g_ycc), h, w) * 255.0


def quantize_adjoint(grad_r: torch.Tensor, z: torch.Tensor, table: torch.Tensor, soft: bool, want_table: bool):
    """Adjoint of the quantizer ``r = round(c / Q)`` (``c`` the orthonormal DCT of the level-shifted plane):
    ``grad_r`` ``(N, K, 64, h, w)`` (block layout) and the saved quotients ``z = c / Q`` -> the gradient of the
    sample plane ``(N, K, 8h, 8w)`` and the table's per-image gradient ``(N, 64)`` (or None). The rounding's
    derivative is 1 (ste) or the soft surrogate's ``3 (z - round z)**2``: ``dr/dc = w / Q``, ``dr/dQ = -w z / Q``.
    """
    q = table.to(grad_r.dtype).reshape(-1, 1, 64, 1, 1)
    g = grad_r / q
    if soft:
        g = g * soft_weight(z.to(grad_r.dtype))
    tg = (g * z).sum(dim=(1, 3, 4)).neg_() if want_table else None
    return block_idct(g), tg


def dequantize_adjoint(g_plane: torch.Tensor, r: torch.Tensor, table: torch.Tensor, want_table: bool):
    """Adjoint of ``p = IDCT(r Q) + 128``: the gradient of a decoded sample plane ``(N, K, Hp, Wp)`` -> the
    gradient of the quantized coefficients ``r`` (block layout ``(N, K, 64, Hp / 8, Wp / 8)``) and the table's
    per-image gradient ``(N, 64)`` (or None)."""
    gc = block_dct(g_plane)
    q = table.to(gc.dtype).reshape(-1, 1, 64, 1, 1)
    tg = (gc * r.to(gc.dtype)).sum(dim=(1, 3, 4)) if want_table else None
    return gc * q, tg


def table_grad(per_image: Optional[torch.Tensor], table: torch.Tensor, n: int) -> torch.Tensor:
    """``(N, 64)`` per-image table gradients -> the table's shape (summed over the batch for an (8, 8) table)."""
    return _table_grad(per_image, table, n)

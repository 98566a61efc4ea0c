"""Quantization tables: IJG/libjpeg quality scaling, Feature-Distillation presets and data-driven FD design.

All tables are float tensors of shape ``(8, 8)`` in natural (row-major, not zigzag) order, indexed
``[vertical frequency, horizontal frequency]``; batched tables have shape ``(B, 8, 8)``. They are plain tensors so
that a caller may wrap them in ``nn.Parameter`` and learn them.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch

from ._checks import check_quality, check_quality_values, check_strength, quality_error, quality_stats  # noqa: F401

# ITU-T T.81 Annex K.1 / libjpeg jcparam.c base tables (natural order), "quality 50".
STD_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
STD_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

# Feature Distillation (Liu et al., CVPR 2019): step 1 on the 15 lowest frequencies (i + j <= 4), and a step
# Q = 40 > 16 * eps elsewhere (a perturbation of eps pixel levels gives DCT coefficients below 8 * eps, which a step
# larger than 2 * 8 * eps rounds away; 40 covers eps = 2 levels with margin, as in the paper).
FD_SENSITIVE_STEP = 1.0
FD_MALICIOUS_STEP = 40.0
FD_BAND = 4  # i + j <= FD_BAND is the "accuracy-sensitive" band: 15 frequencies
FLOAT32_MAX = float(torch.finfo(torch.float32).max)

# The table in the FD authors' public code (github.com/zihaoliu123/Feature-Distillation-DNN-Oriented-JPEG-Compression-
# Against-Adversarial-Examples, utils/feature_distillation.py at commit cdcc78a): step 25 on the top-left 4x4 (rows
# and columns 0-3), 30 elsewhere, applied to each of R, G, B with no YCbCr conversion and no chroma subsampling.
FD_OFFICIAL_LOW_STEP = 25.0
FD_OFFICIAL_HIGH_STEP = 30.0
FD_VARIANTS = ("paper", "official")


def zigzag_order() -> torch.Tensor:
    """Return ``(64,)`` int64: the natural-order index (``8 * i + j``) of each zigzag position 0..63."""
    order = sorted(((i, j) for i in range(8) for j in range(8)),
                   key=lambda ij: (ij[0] + ij[1], ij[1] if (ij[0] + ij[1]) % 2 == 0 else ij[0]))
    return torch.tensor([8 * i + j for i, j in order], dtype=torch.int64)


def _straight_through(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``f`` in the forward, the derivative of ``v`` in the backward. Exact: the tables' ``f - v`` are exact
    differences of nearby float64 values (Sterbenz), so ``v + (f - v)`` is ``f`` bit for bit."""
    return v + (f - v).detach()


def _quality_scale(quality: torch.Tensor, st: bool = False) -> torch.Tensor:
    # libjpeg jpeg_quality_scaling: 5000 / q (C integer division) below 50, 200 - 2q from 50 on. floor() keeps
    # integer qualities byte-identical with libjpeg and stays defined for float qualities.
    low = 5000.0 / quality
    low = _straight_through(low, torch.floor(low)) if st else torch.floor(low)
    return torch.where(quality < 50, low, 200.0 - 2.0 * quality)


def _ijg(q: torch.Tensor, dtype=torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`ijg` of a checked quality tensor ``()`` or ``(B,)``, on its device, without value checks (no host
    sync). Differentiable in ``q``: the floors and clamps are straight-through when ``q`` requires grad."""
    st = q.requires_grad and torch.is_grad_enabled()
    q = q.to(torch.float64)
    scale = _quality_scale(q, st)[..., None, None]
    out = []
    for base in (STD_LUMA, STD_CHROMA):
        b = torch.tensor(base, dtype=torch.float64, device=q.device)
        t = (b * scale + 50.0) / 100.0
        if st:
            t = _straight_through(t, torch.floor(t))
            t = _straight_through(t, t.clamp(1, 255))
        else:
            t = torch.floor(t).clamp(1, 255)
        out.append(t.to(dtype))
    return out[0], out[1]


def ijg(quality: Union[float, int, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Luma and chroma tables of libjpeg's ``jpeg_set_quality(cinfo, quality, force_baseline=TRUE)``.

    Args:
        quality: a number in [1, 100] (floats allowed), or a ``()`` or ``(B,)`` tensor of them (which may require
            grad: the floors and clamps of the scaling are then straight-through, so ``d table / d quality`` is
            ``base / 100 * d scale / d quality``).

    Returns:
        ``(luma, chroma)``: float32 ``(8, 8)`` each, or ``(B, 8, 8)`` for a ``(B,)`` quality tensor, on the
        quality's device; entries are ``floor((base * scale + 50) / 100)`` clamped to [1, 255], byte-identical to
        what libjpeg (and Pillow) write.

    Examples:
        >>> luma, chroma = ijg(50)
        >>> int(luma[0, 0]), int(chroma[7, 7])
        (16, 99)
    """
    return _ijg(check_quality(quality))


def fd(strength: float = 1.0, variant: str = "paper") -> torch.Tensor:
    """The Feature-Distillation table of Liu et al. (CVPR 2019), scaled by ``strength``.

    ``variant="paper"`` (the table the paper describes): the 15 lowest frequencies (``i + j <= 4``, the first 15 in
    zigzag order) get step ``1 * strength``; the other 49 get ``40 * strength``. FD(1x), FD(2x), FD(3x) are strength
    1, 2, 3; the same table is used for Y, Cb and Cr.

    ``variant="official"`` (the table in the authors' public code): step ``25 * strength`` on the top-left 4x4
    (``i, j <= 3``), ``30 * strength`` elsewhere. That code applies it to each RGB channel without YCbCr or chroma
    subsampling (``fdgpu.feature_distillation(x, variant="official")`` / ``color="rgb"``); it has one table only,
    so strengths 2 and 3 scale it the way the paper's FD 2x/3x scale theirs.

    Returns:
        float32 ``(8, 8)``.

    Examples:
        >>> t = fd(2.0)
        >>> float(t[0, 0]), float(t[7, 7]), int((t == 2.0).sum())
        (2.0, 80.0, 15)
    """
    strength = check_strength(strength)
    if variant not in FD_VARIANTS:
        raise ValueError(f"variant: expected one of {FD_VARIANTS}, got {variant!r}")
    if FD_MALICIOUS_STEP * strength > FLOAT32_MAX:
        raise ValueError(f"strength: expected at most {FLOAT32_MAX / FD_MALICIOUS_STEP:.4g} (the table's largest "
                         f"step, {FD_MALICIOUS_STEP:g} * strength, must be a finite float32), got {strength:g}")
    i = torch.arange(8).view(8, 1)
    j = torch.arange(8).view(1, 8)
    if variant == "official":
        table = torch.where((i < 4) & (j < 4), FD_OFFICIAL_LOW_STEP, FD_OFFICIAL_HIGH_STEP).to(torch.float32)
        return table * float(strength)
    table = torch.where(i + j <= FD_BAND, FD_SENSITIVE_STEP, FD_MALICIOUS_STEP).to(torch.float32)
    return table * float(strength)


def fd_design(images: torch.Tensor, eps: float, n_sensitive: int = 15) -> torch.Tensor:
    """Design an FD table from data, following the frequency-component analysis of Liu et al.

    The 64 DCT frequencies are ranked by the standard deviation of their coefficients over all 8x8 luma blocks of
    ``images``; the ``n_sensitive`` largest-sigma frequencies get step 1 and the others ``ceil(16 * eps)`` (a
    perturbation of ``eps`` pixel levels gives coefficients below ``8 * eps``; a step above twice that removes it).

    Args:
        images: ``(N, 3, H, W)`` or ``(N, 1, H, W)`` float in [0, 1] (H, W multiples of 8 are used whole; other
            sizes are cropped to whole blocks for the statistics only).
        eps: the perturbation bound in pixel levels (0..255 scale), > 0.
        n_sensitive: how many frequencies keep step 1, in [0, 64].

    Returns:
        float32 ``(8, 8)`` table.
    """
    from .reference.color import rgb_to_ycbcr_linear
    from .reference.dct import block_dct

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a (N, 3 or 1, H, W) tensor, got {got}")
    if images.shape[0] == 0:
        raise ValueError("images: expected at least one image to measure coefficient statistics on, got an empty "
                         f"batch of shape {tuple(images.shape)}")
    if images.shape[-2] < 8 or images.shape[-1] < 8:
        raise ValueError(f"images: expected H, W >= 8 to form 8x8 blocks, got {tuple(images.shape[-2:])}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps: expected a positive number of pixel levels (e.g. 2 for 2/255), got {eps!r}")
    if not (isinstance(n_sensitive, int) and 0 <= n_sensitive <= 64):
        raise ValueError(f"n_sensitive: expected an int in [0, 64], got {n_sensitive!r}")
    x = images.detach().to(torch.float64) * 255.0
    h8, w8 = x.shape[-2] // 8 * 8, x.shape[-1] // 8 * 8
    x = x[..., :h8, :w8]
    luma = rgb_to_ycbcr_linear(x)[:, 0] if x.shape[1] == 3 else x[:, 0]
    coef = block_dct(luma - 128.0)  # (N, 64, H / 8, W / 8)
    per_freq = coef.transpose(0, 1).reshape(64, -1)
    sigma = per_freq.std(dim=1)
    table = torch.full((64,), float(math.ceil(16.0 * eps)), dtype=torch.float64)
    table[torch.argsort(sigma, descending=True, stable=True)[:n_sensitive]] = 1.0
    return table.view(8, 8).to(torch.float32)

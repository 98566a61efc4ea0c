"""Quantization of DCT coefficients by 8x8 tables, in the plane layout of :mod:`fdgpu.reference.dct`."""
from __future__ import annotations

import torch


def round_half_away(z: torch.Tensor) -> torch.Tensor:
    """libjpeg's rounding of coefficient / step: halves go away from zero (``torch.round`` goes to even)."""
    return torch.floor(z.abs() + 0.5).copysign(z)


def quantize_dequantize(c: torch.Tensor, table: torch.Tensor, need_weight: bool = False):
    """``c' = Q * round(c / Q)`` for every block.

    Args:
        c: ``(N, K, H, W)`` DCT coefficients (H, W multiples of 8).
        table: ``(8, 8)`` or ``(N, 8, 8)`` steps (>= 1).
        need_weight: also return ``3 * (z - round z)**2``, the derivative of the soft-rounding surrogate
            ``round(z) + (z - round z)**3`` (Shin & Song) at ``z = c / Q``.

    Returns:
        ``(c', weight or None)``, each ``(N, K, H, W)``.
    """
    n, k, h, w = c.shape
    q = table.to(c.dtype).view(-1, 1, 1, 8, 1, 8)
    z = c.view(n, k, h // 8, 8, w // 8, 8) / q
    zr = round_half_away(z)
    weight = None
    if need_weight:
        weight = (z - zr).square_().mul_(3.0).view(n, k, h, w)
    return (zr * q).view(n, k, h, w), weight


def apply_weight(g: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Multiply coefficient-domain gradients by the soft-rounding derivative (same layout)."""
    return g * weight

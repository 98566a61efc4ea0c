"""Quantization of DCT coefficients by 8x8 tables as libjpeg-turbo's encoder does it, in the plane layout of
:mod:`fdgpu.reference.dct`, and dequantization as its decoder does it.

The encoder (jcdctmgr.c) divides the integer forward-DCT output ``t`` (8x the orthonormal coefficient) by the
divisor ``8 Q`` and rounds halves away from zero. It does so with a reciprocal multiply,
``((|t| + corr) * recip) >> shift`` with ``recip``, ``corr``, ``shift`` from ``compute_reciprocal``; that equals
the plain rounded division ``(|t| + 4Q) // 8Q`` for every 16-bit ``|t|`` and every step 1..255
(tests/test_reference.py checks all 255 x 32768 cases), so the plain division is what is computed here.

Non-integer steps (fractional FD strengths, tables being learned) are not something a JPEG file can hold; they get
the same definition with real arithmetic: ``r = round_half_away(t / 8Q)`` of the exact quotient, and the
dequantized coefficient ``round_half_away(r * Q)`` so that the inverse DCT stays an integer transform. For integer
steps both roundings are exact identities of libjpeg-turbo's arithmetic.
"""
from __future__ import annotations

import torch


def round_half_away(z: torch.Tensor) -> torch.Tensor:
    """libjpeg's rounding of coefficient / step: halves go away from zero (``torch.round`` goes to even)."""
    # floor(|z| + 0.5) with the sign of z. (trunc(z + copysign(0.5, z)) is one pass fewer but torch's CPU trunc is
    # ~20x slower than floor: 1.4 ms against 0.07 ms per call here.)
    return torch.copysign(z.abs().add_(0.5).floor_(), z)


def quantize_dequantize(t: torch.Tensor, table: torch.Tensor, need_weight: bool = False):
    """``c = deq(round(t / 8Q))`` for every block: libjpeg-turbo's quantizer followed by its dequantization.

    Args:
        t: ``(N, K, 64, h, w)`` float64 integer coefficients of :func:`fdgpu.reference.dct.fdct_islow` (8x scaled).
        table: ``(8, 8)`` or ``(N, 8, 8)`` steps (>= 1), natural order, any float dtype.
        need_weight: also return ``3 * (z - round z)**2`` at ``z = t / 8Q``, the derivative of the soft-rounding
            surrogate ``round(z) + (z - round z)**3`` (Shin & Song), in float64.

    Returns:
        ``(c, weight or None)``, each ``(N, K, 64, h, w)`` float64: ``c`` is the dequantized integer coefficient
        (orthonormal scale) that the decoder's inverse DCT receives.

    Exactness: ``t`` is an integer below 2**14 and ``Q`` a float32 or float64 number; ``t / 8Q`` is computed in
    float64 (correctly rounded), and the distance of the exact quotient from a rounding boundary ``k + 1/2`` is
    either 0 (an exact tie, representable) or at least ``1 / (8 m)`` (``m`` < 2**53 the significand of ``8Q``),
    far larger than float64's error at |z| < 2**14 for float32 steps. ``r * Q`` is exact in float64.
    """
    q = table.to(torch.float64).reshape(-1, 1, 64, 1, 1)
    z = t / (q * 8.0)
    r = round_half_away(z)
    weight = (z - r).square_().mul_(3.0) if need_weight else None
    c = r * q if r.requires_grad else r.mul_(q)  # (copysign saves its output for autograd)
    if bool((q != q.round()).any()):  # only non-integer steps need the second rounding
        c = round_half_away(c)
    return c, weight

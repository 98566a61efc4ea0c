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

from typing import Optional

import torch

from ..choices import BACKWARD_MODES


def round_half_away(z: torch.Tensor) -> torch.Tensor:
    """libjpeg's rounding of coefficient / step: halves go away from zero (``torch.round`` goes to even)."""
    # floor(|z| + 0.5) with the sign of z. (trunc(z + copysign(0.5, z)) is one pass fewer but torch's CPU trunc is
    # ~20x slower than floor: 1.4 ms against 0.07 ms per call here.)
    return torch.copysign(z.abs().add_(0.5).floor_(), z)


# Integer steps up to this use the float32 reciprocal quantizer (exact: see quantize_dequantize).
MAX_FLOAT32_STEP = 1 << 15


def table_plane(table: torch.Tensor, hp: int, wp: int, dtype=torch.float32) -> torch.Tensor:
    """Steps tiled over a coefficient plane: ``(8, 8)`` or ``(N, 8, 8)`` -> ``(1 or N, 1, hp, wp)``."""
    q = table.to(dtype).reshape(-1, 1, 8, 8)
    return q.repeat(1, 1, hp // 8, wp // 8)


# Devices whose tables may be read on the host to choose the path: reading a CPU tensor is not a synchronisation.
HOST_DEVICES = ("cpu",)


def real_path(table: torch.Tensor) -> bool:
    """Whether :func:`quantize_dequantize` takes its real-valued (float64) path for ``table``.

    A table on the host is read: the float32 integer path when every step is an integer up to
    :data:`MAX_FLOAT32_STEP` (every JPEG table), else the real path. A table on any other device (CUDA) always
    takes the real path, so that nothing reads the device (a host sync, which also rules out CUDA-graph capture):
    for integer steps the real path computes the same bits, the quotient, its rounding, the dequantized
    coefficient and ``z`` alike (see :func:`quantize_dequantize`; tests/test_reference.py checks every step)."""
    if table.device.type not in HOST_DEVICES:
        return True
    return bool(((table != table.round()) | (table > MAX_FLOAT32_STEP)).any())


def quantize_dequantize(t: torch.Tensor, table: torch.Tensor, need_weight: bool = False,
                        weight_dtype=torch.float32):
    """``c = deq(round(t / 8Q))`` for every block: libjpeg-turbo's quantizer followed by its dequantization,
    :func:`dequantize` of :func:`quantize`.

    Args:
        t: ``(N, K, Hp, Wp)`` float32 integer coefficient planes of :func:`fdgpu.reference.dct.fdct_islow` (8x
            scaled, |t| <= 2**13; coefficient (u, v) of each block at ``[8 i + u, 8 j + v]``).
        table: ``(8, 8)`` or ``(N, 8, 8)`` steps (>= 1), natural order, any float dtype.
        need_weight: also return the quotients ``z = t / 8Q`` (``c / Q`` at the orthonormal scale), in the block
            layout ``(N, K, 64, Hp/8, Wp/8)``: the saved state of the ``ste``/``soft`` backward (:func:`soft_weight`
            and :func:`table_factor` are functions of ``z``).
        weight_dtype: the dtype of ``z`` (float64 for float64 gradients).

    Returns:
        ``(c, z or None)``: ``c`` ``(N, K, Hp, Wp)`` float32, the dequantized integer coefficients (orthonormal
        scale, |c| <= 2048) that the decoder's inverse DCT receives.
    """
    r, weight = quantize(t, table, need_weight, weight_dtype)
    return dequantize(r, table), weight


def quantize(t: torch.Tensor, table: torch.Tensor, need_weight: bool = False, weight_dtype=torch.float32):
    """``r = round_half_away(t / 8Q)``: libjpeg-turbo's quantizer (jcdctmgr.c), the integers a JPEG file holds.

    Args:
        t, table, need_weight, weight_dtype: as in :func:`quantize_dequantize`.

    Returns:
        ``(r, z or None)``: ``r`` ``(N, K, Hp, Wp)`` float32 integers in the plane layout of ``t`` (|r| <= 1024),
        signed as ``t`` (a zero keeps the sign of ``t``; the inverse DCT does not see the sign of zero).

    Exactness. Integer steps: ``|r| = floor((|t| + 4Q + 1/2) * fl(1 / 8Q))`` in float32. The exact value
    ``(|t| + 4Q + 1/2) / 8Q`` has the floor of ``(|t| + 4Q) / 8Q`` (the half cannot reach the next multiple of the
    even divisor) and lies at least ``1 / 16Q`` from an integer; float32's error there is below
    ``(1024 / Q + 1) * 2**-23``, smaller for every Q < 2**15. Other steps: ``t / 8Q`` in float64 (correctly rounded;
    the exact quotient is a tie, representable, or at least ``1 / 8m`` from one, ``m < 2**24`` the significand of
    a float32 ``8Q``), rounded half away. For an integer step both paths agree bit for bit: the float64 quotient of
    two integers decides ties and roundings exactly, and ``z`` rounded from float64 to float32 is the correctly
    rounded float32 quotient (the exact quotient ``|t| / 8Q``, with ``8Q < 2**18``, is never within float64's
    error of a float32 midpoint unless it is one). Which path runs is :func:`real_path`'s choice; CUDA tables never
    read the device.
    """
    from .dct import plane_to_blocks

    hp, wp = t.shape[-2:]
    if real_path(table):
        q = table_plane(table, hp, wp, torch.float64)
        z = t.to(torch.float64) / (q * 8.0)
        weight = plane_to_blocks(z.to(weight_dtype)) if need_weight else None
        return round_half_away(z).float(), weight
    q = table_plane(table, hp, wp)
    recip = 1.0 / (q * 8.0)
    a = t.abs()
    if need_weight:  # |z| in the weight's dtype
        d = a.to(weight_dtype) / (q.to(weight_dtype) * 8.0)
    r = a.add_(q * 4.0 + 0.5).mul_(recip).floor_()
    # z with its sign (round_half_away(z) is r: |z| is at least 1 / 16Q from a tie unless it is one, exactly)
    weight = plane_to_blocks(torch.copysign(d, t.to(weight_dtype))) if need_weight else None
    if r.requires_grad:  # (autograd: copysign needs its inputs unmodified)
        return torch.copysign(r, t), weight
    return r.copysign_(t), weight


def dequantize(r: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``c = round_half_away(r Q)``: libjpeg-turbo's dequantization (jddctmgr.c), ``r Q`` itself for integer steps.

    Args:
        r: ``(N, K, Hp, Wp)`` quantized integer coefficients in the plane layout (any float dtype).
        table: ``(8, 8)`` or ``(N, 8, 8)`` steps (>= 1), natural order.

    Returns:
        ``(N, K, Hp, Wp)`` float32 dequantized coefficients (orthonormal scale), integers: the rounding only acts on
        non-integer steps (which no file holds), so that the inverse DCT stays an integer transform. Integer steps
        take float32 (``|r Q| <= 2048 < 2**24``: exact), others float64 (``r Q`` exact, then rounded).
    """
    hp, wp = r.shape[-2:]
    if real_path(table):
        return round_half_away(r.to(torch.float64) * table_plane(table, hp, wp, torch.float64)).float()
    q = table_plane(table, hp, wp)
    if r.requires_grad or r.dtype != torch.float32:
        return r.float() * q
    return r.mul(q)


def rounding_weight(z: torch.Tensor, mode: str) -> Optional[torch.Tensor]:
    """``d c' / d c`` of coefficient rounding in backward ``mode`` (its record's ``weight`` in
    :data:`fdgpu.choices.BACKWARD_MODES`), or None where it is 1 (``ste``)."""
    weight = _adjoint(mode).weight
    return None if weight is None else weight(z, round_half_away(z))


def soft_weight(z: torch.Tensor) -> torch.Tensor:
    """``d c' / d c = 3 (z - round z)**2``: the derivative of the soft-rounding surrogate ``Q (r + (z - r)**3)``
    (Shin & Song 2017, ``r = round z`` held constant) with respect to the coefficient ``c = Q z``."""
    w = rounding_weight(z, "soft")
    assert w is not None  # soft has a weight
    return w


def table_factor(z: torch.Tensor, mode: str) -> torch.Tensor:
    """``d c' / d Q`` at fixed ``c``, ``z = c / Q``, for ``c' = Q round(c / Q)``: the ``table_factor`` of ``mode``'s
    record in :data:`fdgpu.choices.BACKWARD_MODES`, e.g.

    * ``"ste"``: ``round(z) - z``, the straight-through estimate of LSQ (Esser et al. 2020);
    * ``"soft"``: the derivative of the surrogate ``Q (r + (z - r)**3)``: ``r + d**3 - 3 d**2 z``, ``d = z - r``.
    """
    return _adjoint(mode).table_factor(z, round_half_away(z))


def _adjoint(mode: str):
    rec = BACKWARD_MODES.get(mode)
    if rec is None or rec.kind != "adjoint":
        adjoints = [m for m, r in BACKWARD_MODES.items() if r.kind == "adjoint"]
        raise ValueError(f"mode: expected one of {adjoints}, got {mode!r}")
    return rec

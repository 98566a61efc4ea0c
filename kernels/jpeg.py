"""Triton kernels for the JPEG round trip, forward and backward, mirroring :mod:`fdgpu.reference.jpeg`.

Arithmetic. The forward computes libjpeg-turbo's integers: 8-bit samples, the 16.16 fixed-point colour
conversion and downsampling (integers below 2^24, exact in fp32), then in int32 the accurate integer DCT
``jfdctint`` (:func:`_fdct`), the quantizer ``sign(t) ((|t| + 4q) // 8q)`` as a floor division by a per-column
fp32 reciprocal of ``8q`` (:func:`_floor_div8q`, with its exactness proof), dequantization and ``jidctint``
(:func:`_idct`). Each 1-D DCT pass is the 8x8 integer matrix ``A`` of the butterfly (``kernels.launch.fdct_matrix``)
applied by a broadcast multiply-accumulate whose tap axis stays in each thread's registers (:func:`_rows_pass`,
:func:`_cols_pass`), then libjpeg's DESCALE; no ``tl.dot``. The backward applies the same separable passes in
fp32 with the reference's orthonormal DCT matrix ``D``.

Layout. A tile of whole 8x8 blocks is held as ``[BLOCKS, 64]`` (one row per block, column ``k = 8 r + c`` for the
sample at row r, column c of the block). A tile is ``TBH x TBW`` blocks (sizes per kernel in
``kernels.launch.CONFIGS``), always a whole number of MCUs, so that the edge-replication padding of an image (which
never leaves its last MCU) can be folded back inside one program in the backward pass.

Kernels (the launchers are :func:`forward`, :func:`backward`, :func:`encode` and :func:`decode` in
``kernels/launch.py``, re-exported by ``kernels/__init__.py``):

* ``_jpeg_fwd_kernel``: grayscale and 4:4:4, fully fused: load RGB once, 8-bit rounding, fixed-point RGB->YCbCr,
  then per plane (a 3-trip runtime loop for colour) level shift, jfdctint, quantize, dequantize, jidctint, range
  limit; fixed-point YCbCr->RGB, clamp, /255, store once.
* ``_jpeg_fwd_sub_kernel`` + ``_jpeg_up_kernel`` (4:2:2, 4:2:0): libjpeg's "fancy" upsampling needs the chroma
  samples of neighbouring MCUs, so the pipeline is split. The first kernel codes Y, Cb and Cr of its MCUs (two per
  program) from one read of their RGB and writes the decoded 8-bit samples (uint8, exact: integers in 0..255); the
  second runs one thread per chroma sample, producing its 2x2 (4:2:0) or 2x1 (4:2:2) output pixels in int32 from
  the 3x3 neighbourhood, and converts to RGB. Bytes per pixel: 12 read + 1 + 0.5 (4:2:0) written, then 1.5 read +
  12 written = 27 B/px instead of 24 for a single fused pass (see docs/kernels.md for the halo alternative).
* ``_jpeg_bwd_chroma_kernel`` (4:2:x): adjoint of upsampling + colour conversion gathered per chroma sample; writes
  the chroma-plane gradient (fp32, chroma resolution). ``_jpeg_bwd_chroma_soft_kernel`` (soft) then applies, in
  place, the coefficient-domain weight ``3 (z - round z)^2`` with ``z`` recomputed from ``x``, and folds the
  replicated chroma rows.
* ``_jpeg_bwd_kernel``: luma (and 4:4:4 chroma) gradient, soft weights recomputed from ``x``, the chroma gradient
  of the previous kernel spread back over its box, transposed RGB->YCbCr, fold of the padding, store once.
* ``_jpeg_bwd_table_kernel`` (only when a table requires grad): per tile and plane, the partial table gradient
  ``sum over blocks of DCT(plane gradient) * dc'/dQ`` with ``dc'/dQ`` (ste: LSQ's ``round z - z``; soft: the
  surrogate's ``r + d^3 - 3 d^2 z``) recomputed from ``x``; the launcher sums the partials in a fixed order (no
  atomics: the result is deterministic) per image, and over the batch for a shared table.
* ``_jpeg_encode_kernel`` / ``_jpeg_decode_kernel`` (``fdgpu.encode`` / ``fdgpu.decode``): the forward's stages
  with the quantized coefficients stored between them; the decoder's chroma goes through ``_jpeg_up_kernel``.

The backward kernels take the mode as the string constexpr ``MODE`` (``"ste"`` or ``"soft"``), as the launchers do.
"""
from __future__ import annotations

import struct

import triton
import triton.language as tl

from fdgpu.reference.color import RGB_TO_YCC, RGB_TO_YCC_BIAS, RGB_TO_YCC_FIX, YCC_TO_RGB, YCC_TO_RGB_FIX

# libjpeg's 16.16 fixed-point constants (jccolor.c / jdcolor.c), taken from the reference so that both agree.
# All products and sums below stay integers under 2**24, so plain fp32 FMAs compute them exactly.
_YR = tl.constexpr(float(RGB_TO_YCC_FIX[0][0]))
_YG = tl.constexpr(float(RGB_TO_YCC_FIX[0][1]))
_YB = tl.constexpr(float(RGB_TO_YCC_FIX[0][2]))
_BR = tl.constexpr(float(RGB_TO_YCC_FIX[1][0]))
_BG = tl.constexpr(float(RGB_TO_YCC_FIX[1][1]))
_BB = tl.constexpr(float(RGB_TO_YCC_FIX[1][2]))
_RR = tl.constexpr(float(RGB_TO_YCC_FIX[2][0]))
_RG = tl.constexpr(float(RGB_TO_YCC_FIX[2][1]))
_RB = tl.constexpr(float(RGB_TO_YCC_FIX[2][2]))
_Y0 = tl.constexpr(float(RGB_TO_YCC_BIAS[0]))
_C0 = tl.constexpr(float(RGB_TO_YCC_BIAS[1]))
_R_CR = tl.constexpr(float(YCC_TO_RGB_FIX[0][1]))
_G_CB = tl.constexpr(float(YCC_TO_RGB_FIX[1][0]))
_G_CR = tl.constexpr(float(YCC_TO_RGB_FIX[1][1]))
_B_CB = tl.constexpr(float(YCC_TO_RGB_FIX[2][0]))
# Real-valued maps for the adjoints (the backward is defined on the real-valued pipeline L).
_LYR = tl.constexpr(RGB_TO_YCC[0][0])
_LYG = tl.constexpr(RGB_TO_YCC[0][1])
_LYB = tl.constexpr(RGB_TO_YCC[0][2])
_LBR = tl.constexpr(RGB_TO_YCC[1][0])
_LBG = tl.constexpr(RGB_TO_YCC[1][1])
_LBB = tl.constexpr(RGB_TO_YCC[1][2])
_LRR = tl.constexpr(RGB_TO_YCC[2][0])
_LRG = tl.constexpr(RGB_TO_YCC[2][1])
_LRB = tl.constexpr(RGB_TO_YCC[2][2])
_LR_CR = tl.constexpr(YCC_TO_RGB[0][1])
_LG_CB = tl.constexpr(YCC_TO_RGB[1][0])
_LG_CR = tl.constexpr(YCC_TO_RGB[1][1])
_LB_CB = tl.constexpr(YCC_TO_RGB[2][0])
_INV_FIX = tl.constexpr(1.0 / 65536)
# the same YCbCr -> RGB constants as integers (the upsampler computes in int32)
_IR_CR = tl.constexpr(YCC_TO_RGB_FIX[0][1])
_IG_CB = tl.constexpr(YCC_TO_RGB_FIX[1][0])
_IG_CR = tl.constexpr(YCC_TO_RGB_FIX[1][1])
_IB_CB = tl.constexpr(YCC_TO_RGB_FIX[2][0])
# v / 255 = v 65793 2^-24 + v fl(1/255) 2^-24 (see _div255)
_K255_HI = tl.constexpr(65793.0 / 2 ** 24)
_K255_LO = tl.constexpr(struct.unpack('f', struct.pack('f', 1 / 255))[0] / 2 ** 24)
_HALF_FIX = tl.constexpr(32768.0)


# ----------------------------------------------------------------------------------------------------------------
# Stages (device functions), named after the reference stages
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _to_8bit(b_x):
    """floor(255 x + 0.5) clamped to 0..255: the 8-bit sample an encoder receives."""
    return tl.minimum(tl.maximum(tl.floor(b_x * 255.0 + 0.5), 0.0), 255.0)


@triton.jit
def _rgb_to_y(b_r, b_g, b_b):
    return tl.floor((b_r * _YR + b_g * _YG + b_b * _YB + _Y0) * _INV_FIX)


@triton.jit
def _rgb_to_cb(b_r, b_g, b_b):
    return tl.floor((b_r * _BR + b_g * _BG + b_b * _BB + _C0) * _INV_FIX)


@triton.jit
def _rgb_to_cr(b_r, b_g, b_b):
    return tl.floor((b_r * _RR + b_g * _RG + b_b * _RB + _C0) * _INV_FIX)


@triton.jit
def _rgb_to_c(b_r, b_g, b_b, i_pl):
    """Cb (``i_pl`` 0) or Cr (1) of a program that codes one chroma plane: the constants chosen per program, so only
    that plane is computed (the same operations as :func:`_rgb_to_cb` / :func:`_rgb_to_cr`, exact: integers below
    2^24)."""
    c_r = tl.where(i_pl == 0, _BR, _RR)
    c_g = tl.where(i_pl == 0, _BG, _RG)
    c_b = tl.where(i_pl == 0, _BB, _RB)
    return tl.floor((b_r * c_r + b_g * c_g + b_b * c_b + _C0) * _INV_FIX)


@triton.jit
def _div255(b_v):
    """``v / 255`` correctly rounded (as torch's ``uint8 / 255``) for integer-valued fp32 ``v`` in 0..255, in three
    fp32 operations instead of an IEEE division. ``v / 255 = (65793 v + v / 255) 2^-24`` (65793 = 0x010101, the
    repeating 8-bit pattern of 1/255): the first product is an exact integer below 2^24, the second term is rounded
    once (``v fl(1/255)``, error below 2^-24 of it), and the exact sum lies at least ``2^-8 / 255`` of its own scale
    from every rounding boundary (its fraction repeats the 8 bits of ``v``), far more than that error, so the one
    rounding of the addition is the correct rounding of ``v / 255``. Scaling both terms by 2^-24 is exact.
    ``tests/test_kernels.py::test_div255_exhaustive`` checks all 256 values."""
    return b_v * _K255_HI + b_v * _K255_LO


@triton.jit
def _rgb_store(p_o, o_o, m_o, HW, b_y, b_tr, b_tg, b_tb):
    """jdcolor.c from the fixed-point chroma terms ``t`` (integers): RGB = Y + ((t + 2^15) >> 16), range-limited to
    0..255, stored as /255 in three planes of HW samples."""
    # _div255: k / 255 correctly rounded, as users compute uint8 / 255 (k * (1 / 255) is one ulp off for 130 levels)
    b_r = b_y + tl.floor((b_tr + _HALF_FIX) * _INV_FIX)
    b_g = b_y + tl.floor((b_tg + _HALF_FIX) * _INV_FIX)
    b_b = b_y + tl.floor((b_tb + _HALF_FIX) * _INV_FIX)
    tl.store(p_o + o_o, _div255(tl.minimum(tl.maximum(b_r, 0.0), 255.0)), mask=m_o)
    tl.store(p_o + HW + o_o, _div255(tl.minimum(tl.maximum(b_g, 0.0), 255.0)), mask=m_o)
    tl.store(p_o + 2 * HW + o_o, _div255(tl.minimum(tl.maximum(b_b, 0.0), 255.0)), mask=m_o)


@triton.jit
def _consts(p_k):
    """The two 8x8 matrices of the constants buffer (see ``kernels.launch._consts``): ``A`` (int32), the 1-D
    jfdctint map at 2^13 scale (its transpose is the 1-D jidctint map), and ``D`` (fp32), the orthonormal DCT-II
    whose transform the real-valued backward differentiates."""
    o_i = tl.arange(0, 8)
    o_m = o_i[:, None] * 8 + o_i[None, :]                                  # [8, 8]
    b_a = tl.load(p_k + o_m)                                               # [8, 8] int32  A[u, c]
    b_d = tl.load(p_k + 64 + o_m).to(tl.float32, bitcast=True)             # [8, 8] fp32   D[u, c]
    return b_a, b_d


@triton.jit
def _rows_pass(b_x, b_m):
    """[NB, 8, 8] -> [NB, 8, 8]: ``out[b, r, i] = sum_j m[i, j] x[b, r, j]`` (a 1-D transform of every row), as a
    broadcast multiply-accumulate in the dtype of the operands (int32: exact, wrapping like libjpeg's INT32)."""
    b_xt = tl.permute(b_x, (2, 0, 1))                                      # [8 j, NB, 8 r]
    return tl.sum(b_xt[:, :, :, None] * tl.trans(b_m)[:, None, None, :], axis=0)


@triton.jit
def _cols_pass(b_x, b_m):
    """[NB, 8, 8] -> [NB, 8, 8]: ``out[b, i, c] = sum_j m[i, j] x[b, j, c]`` (a 1-D transform of every column)."""
    b_xt = tl.permute(b_x, (1, 0, 2))                                      # [8 j, NB, 8 c]
    return tl.sum(b_xt[:, :, None, :] * tl.trans(b_m)[:, None, :, None], axis=0)


@triton.jit
def _descale(b_x, N: tl.constexpr):
    """libjpeg's DESCALE: round half up and shift right by N (arithmetic shift: floor for negative values)."""
    return (b_x + (1 << (N - 1))) >> N


@triton.jit
def _fdct(b_s, b_a, NB: tl.constexpr):
    """jfdctint on [NB, 64] int32 level-shifted samples: rows (descale by CONST_BITS - PASS1_BITS = 11), then
    columns (CONST_BITS + PASS1_BITS = 15); the output is the DCT scaled by 8, natural order ``8u + v``."""
    b_x = tl.reshape(b_s, (NB, 8, 8))
    b_x = _descale(_rows_pass(b_x, b_a), 11)
    b_x = _descale(_cols_pass(b_x, b_a), 15)
    return tl.reshape(b_x, (NB, 64))


@triton.jit
def _idct(b_c, b_a, NB: tl.constexpr):
    """jidctint on [NB, 64] int32 dequantized coefficients: columns (descale by 11), then rows (by CONST_BITS +
    PASS1_BITS + 3 = 18), with the transposed matrix; returns sample - 128 before range limiting."""
    b_at = tl.trans(b_a)
    b_x = tl.reshape(b_c, (NB, 8, 8))
    b_x = _descale(_cols_pass(b_x, b_at), 11)
    b_x = _descale(_rows_pass(b_x, b_at), 18)
    return tl.reshape(b_x, (NB, 64))


@triton.jit
def _round_half_away(b_z):
    return tl.where(b_z < 0, -tl.floor(0.5 - b_z), tl.floor(b_z + 0.5))


# Steps are clamped to this inside the quantizer (and the integer-step tests): |t| < 2^15 (jfdctint output of 8-bit
# samples: 8 x an orthonormal coefficient of at most 2048), so every step from 2^16 quantizes every coefficient to
# 0, and 2^16 keeps |t| + 4q, 8q and r q far inside int32.
_Q_CLAMP = tl.constexpr(65536.0)


@triton.jit
def _floor_div8q(b_t, b_q):
    """``(|t| + 4q) // 8q`` for int32 ``t`` (``|t| < 2^15``: jfdctint output of 8-bit samples) and integer-valued
    fp32 steps ``q`` [1, 64] in 1..2^16 (the quantizer's clamp), by one reciprocal per column:
    ``floor(fl(fl(n + 1/2) r))`` with ``n = |t| + 4q`` and ``r`` a reciprocal of ``8q``, in fp32 (an int32 division
    is emulated in about 20 integer instructions per element; here a reciprocal per column, then per element an
    addition, a product and the conversions).

    Exact for any ``r`` within 4 ulp of ``1 / 8q`` (the GPU's ``div.full.f32`` is within 2, the interpreter's
    division is correctly rounded): ``n + 1/2 <= 2^15 + 2^18 + 1/2 < 2^19`` and ``8q <= 2^19`` are exact in fp32,
    and the computed quotient is ``v (1 + e)`` with ``v = (n + 1/2) / 8q`` and ``|e| <= 2^-21 + 2^-24 + 2^-45 <
    2^-20`` (the reciprocal, the rounded product). ``v`` lies at least ``1 / (2 * 8q)`` from every integer (its
    numerator is an odd multiple of 1/2), and ``v |e| < 2^19 2^-20 / 8q = 1 / (2 * 8q)``: the computed quotient
    lies strictly between the same two integers as ``v``, so its floor is ``floor(v) = n // 8q``.
    ``tests/test_kernels.py::test_floor_div8q_exact`` checks every step, with the correctly rounded reciprocal and
    each one up to 4 ulp away, at both sides of every quotient boundary (``n = 8qk - 1`` and ``8qk``) and at the
    ends of the range, which covers every ``n`` since the computed quotient is monotone in ``n``."""
    b_rcp = 1.0 / (8.0 * b_q)                                                        # [1, 64]
    b_n = tl.abs(b_t).to(tl.float32) + (4.0 * b_q + 0.5)                            # n + 1/2, exact
    return tl.floor(b_n * b_rcp).to(tl.int32)


@triton.jit
def _quantize(b_t, b_q):
    """libjpeg-turbo's quantizer and dequantizer on jfdctint output ``t`` (int32, DCT x 8) with steps ``q`` (fp32
    [1, 64]): returns ``(r, c)``, ``r = round_half_away(t / 8q)`` and the dequantized coefficient ``c`` (int32).

    Integer steps (every JPEG table): ``r = sign(t) ((|t| + 4q) // 8q)``, ``c = r q`` -- what the encoder's
    reciprocal multiply computes. The floor division is by a per-column reciprocal in fp32 (:func:`_floor_div8q`),
    exact for these operands. Non-integer steps (fractional FD strengths), as the reference defines
    them: the quotient in float64 (correctly rounded: a tie is exact, any other quotient lies at least 1 / (8 m)
    from a rounding boundary, m < 2^24 the significand of 8q), and ``c = round_half_away(r q)``. The branch is per
    program on the table, so integer tables never pay for float64.

    Steps above :data:`_Q_CLAMP` are clamped to it first: every quotient is then 0 either way (``|t| < 2^15``, so
    ``|t| / 8q < 1/16``) and ``c = 0``, while ``8 q`` of a larger step would wrap int32 (steps from 2^28) and a step
    from 2^31 would not convert to int32 at all. With the clamp every int32 product stays below 2^20."""
    b_q = tl.minimum(b_q, _Q_CLAMP)
    b_qi = b_q.to(tl.int32)
    if tl.min(tl.where(b_qi.to(tl.float32) == b_q, 1, 0)) == 1:
        b_m = _floor_div8q(b_t, b_q)
        b_r = tl.where(b_t < 0, -b_m, b_m)
        b_c = b_r * b_qi
    else:
        b_q64 = b_q.to(tl.float64)
        b_r64 = _round_half_away(b_t.to(tl.float64) / (8.0 * b_q64))  # f64 "/" is IEEE (div.rn.f64)
        b_r = b_r64.to(tl.int32)
        b_c = _round_half_away(b_r64 * b_q64).to(tl.int32)
    return b_r, b_c


@triton.jit
def _codec(b_s, b_q, p_k, NB: tl.constexpr):
    """[NB, 64] 8-bit samples (fp32, integer-valued) -> decoded samples (fp32 0..255): level shift, jfdctint,
    quantize, dequantize, jidctint, + 128 and the range limit (a clamp, as libjpeg-turbo's SIMD IDCT saturates).
    All int32."""
    b_a, b_d = _consts(p_k)
    b_r, b_c = _quantize(_fdct(b_s.to(tl.int32) - 128, b_a, NB), b_q)
    b_v = _idct(b_c, b_a, NB) + 128
    return tl.minimum(tl.maximum(b_v, 0), 255).to(tl.float32)


@triton.jit
def _soft_weight(b_s, b_q, p_k, NB: tl.constexpr):
    """3 (z - round z)^2, the derivative of Shin & Song's surrogate at ``z = t / (8 q)``: the jfdctint coefficient
    ``t`` of the samples ``b_s`` over the divisor of the integer quantizer, ``round z`` being its result."""
    b_a, b_d = _consts(p_k)
    b_t = _fdct(b_s.to(tl.int32) - 128, b_a, NB)
    b_r, b_c = _quantize(b_t, b_q)
    # z - round z = (t - 8 q r) / 8q: the numerator by one fused multiply-add (exact for integer steps: integers
    # below 2^24; one rounding otherwise), so that the small difference keeps fp32's relative precision, which
    # the difference of a rounded z (|z| up to ~1000 for steps of 1) and r would not.
    # (divided as (numerator / 8) / q, exactly the same quotient: 8 q is inf for steps above 4.25e37, and r = 0
    # there -- the clamped step in the product leaves it unchanged below the clamp, where r may be non-zero)
    b_e = tl.math.div_rn(tl.fma(-8.0 * tl.minimum(b_q, _Q_CLAMP), b_r.to(tl.float32), b_t.to(tl.float32)) * 0.125,
                         b_q)
    return 3.0 * b_e * b_e


@triton.jit
def _coef_adjoint(b_g, b_w, p_k, NB: tl.constexpr):
    """IDCT(weight * DCT(g)) with the orthonormal DCT (fp32, separable): the adjoint of the soft-rounded
    coefficient stage of the real-valued pipeline."""
    b_a, b_d = _consts(p_k)
    b_x = tl.reshape(b_g, (NB, 8, 8))
    b_c = _cols_pass(_rows_pass(b_x, b_d), b_d)
    b_c = b_c * tl.reshape(b_w, (NB, 8, 8))
    b_dt = tl.trans(b_d)
    return tl.reshape(_rows_pass(_cols_pass(b_c, b_dt), b_dt), (NB, 64))


@triton.jit
def _program(NT_W, NT):
    """(image, tile row, tile column) of this program on a 1-D grid of ``n * NT`` programs, ``NT_W`` per tile row:
    axis 0 is the only grid axis that may exceed 65,535 programs (the launcher keeps it below 2^31)."""
    i_p = tl.program_id(0).to(tl.int64)
    i_r = i_p % NT
    return i_p // NT, i_r // NT_W, i_r % NT_W


@triton.jit
def _block_coords(i_th, i_tw, TBH: tl.constexpr, TBW: tl.constexpr):
    """Rows and columns (in samples) of a TBH x TBW tile of blocks in [BLOCKS, 64] layout, and the block row/col."""
    o_b = tl.arange(0, TBH * TBW)
    o_k = tl.arange(0, 64)
    o_bh = i_th * TBH + o_b // TBW                                        # [BLOCKS]
    o_bw = i_tw * TBW + o_b % TBW                                         # [BLOCKS]
    o_r = o_bh[:, None] * 8 + (o_k // 8)[None, :]                         # [BLOCKS, 64]
    o_c = o_bw[:, None] * 8 + (o_k % 8)[None, :]                          # [BLOCKS, 64]
    return o_bh, o_bw, o_r, o_c


@triton.jit
def _load_table(p_q, i_n, s_q):
    o_k = tl.arange(0, 64)
    return tl.load(p_q + i_n * s_q + o_k)[None, :]                       # [1, 64]; s_q = 0: shared table


@triton.jit
def _load_rgb8_at(p_xn, o_x, m, HW):
    """8-bit RGB of the pixels at offsets ``o_x`` of an image's planes (HW samples each)."""
    b_r = _to_8bit(tl.load(p_xn + o_x, mask=m, other=0.0))
    b_g = _to_8bit(tl.load(p_xn + HW + o_x, mask=m, other=0.0))
    b_b = _to_8bit(tl.load(p_xn + 2 * HW + o_x, mask=m, other=0.0))
    return b_r, b_g, b_b


@triton.jit
def _load_rgb8(p_xn, o_r, o_c, m, H, W):
    """8-bit RGB at edge-replicated positions (rows/cols clamped into the image): 3 x [BLOCKS, 64]."""
    o_x = tl.minimum(o_r, H - 1) * W + tl.minimum(o_c, W - 1)
    HW = H.to(tl.int64) * W
    b_r = _to_8bit(tl.load(p_xn + o_x, mask=m, other=0.0))
    b_g = _to_8bit(tl.load(p_xn + HW + o_x, mask=m, other=0.0))
    b_b = _to_8bit(tl.load(p_xn + 2 * HW + o_x, mask=m, other=0.0))
    return b_r, b_g, b_b


@triton.jit
def _downsampled_chroma(p_xn, o_j, o_i, m, H, W, HC, i_pl, HS: tl.constexpr, VS: tl.constexpr):
    """Box-averaged Cb (``i_pl`` 0) or Cr (1) at chroma sample (o_j, o_i) with libjpeg's alternating bias; rows past
    the real chroma height repeat the last downsampled row (jcsample.c + jccoefct.c edge expansion). [BLOCKS, 64].
    Only the program's own plane is computed: computing both and selecting one cost a 4:2:0 chroma program 9 % more
    instructions and 16 more registers."""
    o_j = tl.minimum(o_j, HC - 1)
    b_c = tl.zeros(o_j.shape, dtype=tl.float32)
    for dy in tl.static_range(VS):
        for dx in tl.static_range(HS):
            b_r, b_g, b_b = _load_rgb8(p_xn, o_j * VS + dy, o_i * HS + dx, m, H, W)
            b_c += _rgb_to_c(b_r, b_g, b_b, i_pl)
    if HS * VS > 1:
        # bias 1, 2, 1, 2, ... (2x2) or 0, 1, 0, 1, ... (2x1) along each output row
        b_bias = (o_i % 2).to(tl.float32) + (1.0 if VS == 2 else 0.0)
        b_c = tl.floor((b_c + b_bias) * (1.0 / (HS * VS)))
    return b_c




# ----------------------------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _jpeg_fwd_kernel(p_x, p_y, p_lq, p_cq, p_k, s_lq, s_cq, H, W, NBH, NBW, NT_W, NT,
                     C: tl.constexpr, TBH: tl.constexpr, TBW: tl.constexpr):
    """Grayscale (C=1) and 4:4:4 (C=3), fully fused. Grid: (N * NT,), NT = cdiv(NBH, TBH) * NT_W tiles,
    NT_W = cdiv(NBW, TBW)."""
    i_n, i_th, i_tw = _program(NT_W, NT)
    HW = H.to(tl.int64) * W
    p_xn = p_x + i_n * C * HW
    p_yn = p_y + i_n * C * HW
    o_bh, o_bw, o_r, o_c = _block_coords(i_th, i_tw, TBH, TBW)
    m_b = (o_bh < NBH)[:, None] & (o_bw < NBW)[:, None]                    # [BLOCKS, 1] block inside the plane
    m_o = (o_r < H) & (o_c < W)                                            # [BLOCKS, 64] real pixel
    o_o = o_r * W + o_c
    b_lq = _load_table(p_lq, i_n, s_lq)                                    # [1, 64]
    if C == 1:
        o_x = tl.minimum(o_r, H - 1) * W + tl.minimum(o_c, W - 1)
        b_s = _to_8bit(tl.load(p_xn + o_x, mask=m_b, other=0.0))          # [BLOCKS, 64]
        tl.store(p_yn + o_o, _div255(_codec(b_s, b_lq, p_k, TBH * TBW)), mask=m_o)
    else:
        b_cq = _load_table(p_cq, i_n, s_cq)
        b_r, b_g, b_b = _load_rgb8(p_xn, o_r, o_c, m_b, H, W)
        # One plane per iteration of a runtime loop so that the three codecs never overlap (unrolled, the kernel
        # needed 255 registers and spilled 672 B on sm_80). Decoded Y and the fixed-point chroma terms of jdcolor.c
        # are accumulated; they are integers, so the sums are exact.
        b_y = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
        b_tr = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
        b_tg = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
        b_tb = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
        for pl in range(3):
            b_s = tl.where(pl == 0, _rgb_to_y(b_r, b_g, b_b),
                           tl.where(pl == 1, _rgb_to_cb(b_r, b_g, b_b), _rgb_to_cr(b_r, b_g, b_b)))
            b_v = _codec(b_s, tl.where(pl == 0, b_lq, b_cq), p_k, TBH * TBW)
            b_d = b_v - 128.0
            b_y += tl.where(pl == 0, b_v, 0.0)
            b_tr += tl.where(pl == 2, b_d * _R_CR, 0.0)
            b_tg += tl.where(pl == 1, b_d * _G_CB, tl.where(pl == 2, b_d * _G_CR, 0.0))
            b_tb += tl.where(pl == 1, b_d * _B_CB, 0.0)
        _rgb_store(p_yn, o_o, m_o, HW, b_y, b_tr, b_tg, b_tb)


@triton.jit
def _jpeg_fwd_sub_kernel(p_x, p_yb, p_cb, p_lq, p_cq, p_k, s_lq, s_cq, H, W, HC, WC, NBH, NBW, NT_W, NT,
                         HS: tl.constexpr, VS: tl.constexpr, TBH: tl.constexpr, TBW: tl.constexpr):
    """4:2:2 / 4:2:0 encode + decode of a tile of TBH x TBW MCUs from one read of its RGB. The pixels are loaded in
    a box layout ``[VS, HS, MCUS, 64]`` (pixel (dy, dx) of chroma sample k of each MCU's chroma block: the box axes
    lead, so each thread holds the boxes of its chroma samples): Y, Cb and Cr per pixel, the chroma box sums
    in-thread, then Y is permuted to the luma blocks ``[MCUS * VS * HS, 64]`` (one layout conversion) and the luma
    and the ``[2 * MCUS, 64]`` chroma blocks (Cb, then Cr) go through one codec each. Writes decoded luma (uint8,
    ``(N, H, W)``) and decoded chroma (uint8, ``(N, 2, HC, WC)``: the real chroma region, all that the upsampler
    reads). Chroma rows past HC repeat the last downsampled row (jcsample.c + jccoefct.c edge expansion); luma
    rows past H repeat the last pixel row. Grid: (N * NT,), NT = cdiv(NBH / VS, TBH) * NT_W,
    NT_W = cdiv(NBW / HS, TBW)."""
    NL: tl.constexpr = VS * HS
    NC: tl.constexpr = TBH * TBW
    i_n, i_th, i_tw = _program(NT_W, NT)
    HW = H.to(tl.int64) * W
    p_xn = p_x + i_n * 3 * HW
    # chroma sample coordinates (int32: below HC, WC) of the tile's chroma blocks, [NC, 64]
    o_b = tl.arange(0, NC)
    o_k = tl.arange(0, 64)
    o_cbh = i_th.to(tl.int32) * TBH + o_b // TBW                           # [NC] chroma block (= MCU) row
    o_cbw = i_tw.to(tl.int32) * TBW + o_b % TBW
    m_b = ((o_cbh < NBH // VS) & (o_cbw < NBW // HS))[:, None]             # [NC, 1] MCU inside the image
    o_j = o_cbh[:, None] * 8 + (o_k // 8)[None, :]                         # [NC, 64]
    o_i = o_cbw[:, None] * 8 + (o_k % 8)[None, :]
    # the box of each chroma sample, edge-replicated: [VS, HS, NC, 64]
    o_dy = tl.arange(0, VS)[:, None, None, None]
    o_dx = tl.arange(0, HS)[None, :, None, None]
    o_y = tl.minimum(VS * tl.minimum(o_j, HC - 1)[None, None, :, :] + o_dy, H - 1)
    o_x = tl.minimum(HS * o_i[None, None, :, :] + o_dx, W - 1)
    b_r, b_g, b_b = _load_rgb8_at(p_xn, o_y.to(tl.int64) * W + o_x, m_b[None, None, :, :], HW)
    b_cb = tl.sum(tl.sum(_rgb_to_cb(b_r, b_g, b_b), axis=0), axis=0)      # [NC, 64], in-thread sums
    b_cr = tl.sum(tl.sum(_rgb_to_cr(b_r, b_g, b_b), axis=0), axis=0)
    b_y = _rgb_to_y(b_r, b_g, b_b)                                         # [VS, HS, NC, 64]
    if VS == 2:
        # luma rows past H repeat row H - 1, the pixel of dy = 1 of the same box (the box rows of a chroma row past
        # HC are those of row HC - 1, which for an even H are H - 2 and H - 1)
        b_y1 = tl.sum(tl.where(o_dy == 1, b_y, 0.0), axis=0)               # [HS, NC, 64]
        b_y = tl.where((o_dy == 0) & (VS * o_j[None, None, :, :] >= H), b_y1[None, :, :, :], b_y)
    if HS * VS > 1:
        # libjpeg's downsampling: bias 1, 2, 1, 2, ... (2x2) or 0, 1, 0, 1, ... (2x1) along each output row
        b_bias = (o_i % 2).to(tl.float32) + (1.0 if VS == 2 else 0.0)
        b_cb = tl.floor((b_cb + b_bias) * (1.0 / (HS * VS)))
        b_cr = tl.floor((b_cr + b_bias) * (1.0 / (HS * VS)))
    # Y to the luma blocks: j = (8 / VS) jb + jj, i = (8 / HS) ib + ii; block (b, jb, ib), row VS jj + dy, column
    # HS ii + dx
    b_y = tl.reshape(b_y, (VS, HS, NC, VS, 8 // VS, HS, 8 // HS))
    b_y = tl.reshape(tl.permute(b_y, (2, 3, 5, 4, 0, 6, 1)), (NC * NL, 64))
    o_lb = tl.arange(0, NC * NL)                                           # luma block of the tile: (b, jb, ib)
    o_lbh = VS * (i_th.to(tl.int32) * TBH + (o_lb // NL) // TBW) + (o_lb % NL) // HS
    o_lbw = HS * (i_tw.to(tl.int32) * TBW + (o_lb // NL) % TBW) + o_lb % HS
    m_l = ((o_lbh < NBH) & (o_lbw < NBW))[:, None]
    o_r = o_lbh[:, None] * 8 + (o_k // 8)[None, :]                         # [NC * NL, 64]
    o_c = o_lbw[:, None] * 8 + (o_k % 8)[None, :]
    b_v = _codec(b_y, _load_table(p_lq, i_n, s_lq), p_k, NC * NL)
    tl.store(p_yb + i_n * HW + o_r.to(tl.int64) * W + o_c, b_v.to(tl.uint8), mask=m_l & (o_r < H) & (o_c < W))
    # chroma: [2 NC, 64], Cb blocks then Cr blocks
    b_c = tl.reshape(tl.permute(tl.join(b_cb, b_cr), (2, 0, 1)), (2 * NC, 64))
    b_v = _codec(b_c, _load_table(p_cq, i_n, s_cq), p_k, 2 * NC)
    o_q = tl.arange(0, 2 * NC)                                             # plane * NC + b
    o_qh = i_th.to(tl.int32) * TBH + (o_q % NC) // TBW
    o_qw = i_tw.to(tl.int32) * TBW + (o_q % NC) % TBW
    m_q = ((o_qh < NBH // VS) & (o_qw < NBW // HS))[:, None]
    o_cj = o_qh[:, None] * 8 + (o_k // 8)[None, :]                         # [2 NC, 64]
    o_ci = o_qw[:, None] * 8 + (o_k % 8)[None, :]
    HWC = HC.to(tl.int64) * WC
    p_o = p_cb + i_n * 2 * HWC + (o_q // NC).to(tl.int64)[:, None] * HWC + o_cj.to(tl.int64) * WC + o_ci
    tl.store(p_o, b_v.to(tl.uint8), mask=m_q & (o_cj < HC) & (o_ci < WC))


@triton.jit
def _ycc_store(p_o, o_x, m, HW, b_y, b_cb, b_cr):
    """jdcolor.c in int32 for one set of output pixels: RGB = Y + ((FIX(c) (C - 128) + 2^15) >> 16), range-limited
    to 0..255, stored / 255 into three planes of HW samples at ``p_o + o_x`` (``p_o``: the row's pointer)."""
    b_cb = b_cb - 128
    b_cr = b_cr - 128
    b_r = b_y + ((b_cr * _IR_CR + 32768) >> 16)
    b_g = b_y + ((b_cb * _IG_CB + b_cr * _IG_CR + 32768) >> 16)
    b_b = b_y + ((b_cb * _IB_CB + 32768) >> 16)
    tl.store(p_o + o_x, _div255(tl.minimum(tl.maximum(b_r, 0), 255).to(tl.float32)), mask=m)
    tl.store(p_o + HW + o_x, _div255(tl.minimum(tl.maximum(b_g, 0), 255).to(tl.float32)), mask=m)
    tl.store(p_o + 2 * HW + o_x, _div255(tl.minimum(tl.maximum(b_b, 0), 255).to(tl.float32)), mask=m)


@triton.jit
def _tap3(p_r, o_l, o_c, o_rt, m):
    """Three chroma samples of one row (``p_r``: the row's pointer, [CH, 1]) at columns left, centre, right (int32
    [1, CW]), as int32."""
    return (tl.load(p_r + o_l, mask=m, other=0).to(tl.int32), tl.load(p_r + o_c, mask=m, other=0).to(tl.int32),
            tl.load(p_r + o_rt, mask=m, other=0).to(tl.int32))


@triton.jit
def _jpeg_up_kernel(p_yb, p_cb, p_o, H, W, HC, WC, NT_W, NT, HS: tl.constexpr, VS: tl.constexpr,
                    FANCY: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    """Upsample decoded chroma, YCbCr -> RGB, /255, for a BH x BW tile of output pixels: one thread per chroma
    sample ([BH / VS, BW / HS] samples) producing its VS x HS output pixels from its neighbourhood, all in int32
    (jdsample.c, libjpeg's "fancy" triangle filter: h2v2 column sums ``v = 3 near + far`` of the 3 x 3
    neighbourhood, then ``(3 v + v_side + 8 | 7) >> 4``; h2v1 ``(3 near + far + 1 | 2) >> 2``; edges repeat the
    outermost sample; without FANCY, replication). Rows are addressed by int64 pointers, columns by int32 offsets.
    Grid (N * NT,), NT = cdiv(H, BH) * NT_W, NT_W = cdiv(W, BW)."""
    CH: tl.constexpr = BH // VS
    CW: tl.constexpr = BW // HS
    i_n, i_h, i_w = _program(NT_W, NT)
    HW = H.to(tl.int64) * W
    HWC = HC.to(tl.int64) * WC
    o_j = (i_h * CH).to(tl.int32) + tl.arange(0, CH)[:, None]             # [CH, 1] chroma rows
    o_i = (i_w * CW).to(tl.int32) + tl.arange(0, CW)[None, :]             # [1, CW] chroma columns
    m_s = (o_j < HC) & (o_i < WC)                                          # [CH, CW] real chroma samples
    p_cn = p_cb + i_n * 2 * HWC                                            # this image's Cb plane (Cr: + HWC)
    p_row = p_cn + o_j.to(tl.int64) * WC                                   # [CH, 1]
    p_yn = p_yb + i_n * HW
    p_on = p_o + i_n * 3 * HW
    if FANCY:
        o_l = tl.maximum(o_i - 1, 0)
        o_rt = tl.minimum(o_i + 1, WC - 1)
        if VS == 2:
            p_up = p_cn + tl.maximum(o_j - 1, 0).to(tl.int64) * WC
            p_dn = p_cn + tl.minimum(o_j + 1, HC - 1).to(tl.int64) * WC
            for pl in tl.static_range(2):
                l0, c0, r0 = _tap3(p_row + pl * HWC, o_l, o_i, o_rt, m_s)
                l1, c1, r1 = _tap3(p_up + pl * HWC, o_l, o_i, o_rt, m_s)
                l2, c2, r2 = _tap3(p_dn + pl * HWC, o_l, o_i, o_rt, m_s)
                # column sums 3 near + far towards the row above (output row 2j) and below (2j + 1)
                u_l, u_c, u_r = 3 * l0 + l1, 3 * c0 + c1, 3 * r0 + r1
                d_l, d_c, d_r = 3 * l0 + l2, 3 * c0 + c2, 3 * r0 + r2
                a00 = (3 * u_c + u_l + 8) >> 4
                a01 = (3 * u_c + u_r + 7) >> 4
                a10 = (3 * d_c + d_l + 8) >> 4
                a11 = (3 * d_c + d_r + 7) >> 4
                if pl == 0:
                    cb00, cb01, cb10, cb11 = a00, a01, a10, a11
                else:
                    cr00, cr01, cr10, cr11 = a00, a01, a10, a11
        else:
            for pl in tl.static_range(2):
                l0, c0, r0 = _tap3(p_row + pl * HWC, o_l, o_i, o_rt, m_s)
                a00 = (3 * c0 + l0 + 1) >> 2
                a01 = (3 * c0 + r0 + 2) >> 2
                if pl == 0:
                    cb00, cb01, cb10, cb11 = a00, a01, a00, a01
                else:
                    cr00, cr01, cr10, cr11 = a00, a01, a00, a01
    else:
        cb00 = tl.load(p_row + o_i, mask=m_s, other=0).to(tl.int32)
        cr00 = tl.load(p_row + HWC + o_i, mask=m_s, other=0).to(tl.int32)
        cb01, cb10, cb11 = cb00, cb00, cb00
        cr01, cr10, cr11 = cr00, cr00, cr00
    for dy in tl.static_range(VS):
        o_y = VS * o_j + dy                                                # [CH, 1] output rows
        p_yr = p_yn + o_y.to(tl.int64) * W
        p_or = p_on + o_y.to(tl.int64) * W
        for dx in tl.static_range(HS):
            o_x = HS * o_i + dx                                            # [1, CW] output columns
            m = (o_y < H) & (o_x < W)
            b_y = tl.load(p_yr + o_x, mask=m, other=0).to(tl.int32)
            if dy == 0:
                if dx == 0:
                    _ycc_store(p_or, o_x, m, HW, b_y, cb00, cr00)
                else:
                    _ycc_store(p_or, o_x, m, HW, b_y, cb01, cr01)
            else:
                if dx == 0:
                    _ycc_store(p_or, o_x, m, HW, b_y, cb10, cr10)
                else:
                    _ycc_store(p_or, o_x, m, HW, b_y, cb11, cr11)


# ----------------------------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _grad_chroma(p_gn, o_y, o_x, m, HW, W, i_pl):
    """Gradient reaching chroma plane ``i_pl`` (0: Cb, 1: Cr) at pixels (o_y, o_x) through the real-valued
    YCbCr -> RGB map: Cb feeds G and B, Cr feeds R and G, so two channel loads (G, B or R, G), not three."""
    o_g = o_y * W + o_x
    b_g1 = tl.load(p_gn + (1 - i_pl) * HW + o_g, mask=m, other=0.0)      # G (Cb) or R (Cr)
    b_g2 = tl.load(p_gn + (2 - i_pl) * HW + o_g, mask=m, other=0.0)      # B (Cb) or G (Cr)
    return tl.where(i_pl == 0, _LG_CB, _LR_CR) * b_g1 + tl.where(i_pl == 0, _LB_CB, _LG_CR) * b_g2


@triton.jit
def _tap(o_s, t: tl.constexpr, n, L, FANCY: tl.constexpr):
    """Tap ``t`` of the adjoint of 2x upsampling for chroma sample ``o_s`` (n samples, L outputs): (position,
    weight). Fancy: outputs 2s, 2s+1 weigh 3/4 (plus 1/4 at the repeated edges), 2s-1 and 2s+2 weigh 1/4."""
    if FANCY:
        if t == 0:
            o_p = 2 * o_s
            b_w = tl.where(o_s == 0, 1.0, 0.75)
        elif t == 1:
            o_p = 2 * o_s + 1
            b_w = tl.where(o_s == n - 1, 1.0, 0.75)
        elif t == 2:
            o_p = 2 * o_s - 1
            b_w = tl.full(o_s.shape, 0.25, tl.float32)
        else:
            o_p = 2 * o_s + 2
            b_w = tl.full(o_s.shape, 0.25, tl.float32)
    else:
        o_p = 2 * o_s + t
        b_w = tl.full(o_s.shape, 1.0, tl.float32)
    return o_p, tl.where((o_p >= 0) & (o_p < L), b_w, 0.0)


@triton.jit
def _fold_rows_block(b_g, o_j, HC, NB: tl.constexpr):
    """Rows >= HC of a padded plane replicated row HC - 1 (inside one block): fold their gradient back onto it."""
    o_j3 = tl.reshape(o_j, (NB, 8, 8))
    b_g3 = tl.reshape(b_g, (NB, 8, 8))
    b_f = tl.sum(tl.where(o_j3 >= HC - 1, b_g3, 0.0), axis=1)              # [BLOCKS, 8]
    return tl.reshape(tl.where(o_j3 == HC - 1, b_f[:, None, :], b_g3), (NB, 64))


@triton.jit
def _jpeg_bwd_chroma_kernel(p_g, p_gc, H, W, HC, WC, WCP, NBHC, NBWC, NT_W, NT,
                            HS: tl.constexpr, VS: tl.constexpr, FANCY: tl.constexpr,
                            TBH: tl.constexpr, TBW: tl.constexpr):
    """Chroma-plane gradient ``(N, 2, HC, WCP)`` (WCP = padded width / HS) for 4:2:x: the adjoint of upsampling
    and of YCbCr -> RGB, gathered per chroma sample (zero past the real WC columns). One plane per program (Cb and
    Cr of a tile adjacent in launch order). Grid (N * NT,), NT = cdiv(NBHC, TBH) * NT_W, NT_W = 2 * cdiv(NBWC, TBW)."""
    i_n, i_th, i_q = _program(NT_W, NT)
    i_pl = i_q % 2
    i_tw = i_q // 2
    HW = H.to(tl.int64) * W
    p_gn = p_g + i_n * 3 * HW
    o_bh, o_bw, o_j, o_i = _block_coords(i_th, i_tw, TBH, TBW)           # [BLOCKS, 64] chroma sample coords
    m_b = (o_bh < NBHC)[:, None] & (o_bw < NBWC)[:, None]
    m_s = m_b & (o_j < HC) & (o_i < WC)                                    # real chroma samples
    b_gc = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
    NT_X: tl.constexpr = 4 if FANCY else HS
    NT_Y: tl.constexpr = (4 if FANCY else 2) if VS == 2 else 1
    for ty in tl.static_range(NT_Y):
        if VS == 2:
            o_py, b_wy = _tap(o_j, ty, HC, H, FANCY)
        else:
            o_py = o_j
            b_wy = tl.where(o_j < H, 1.0, 0.0)
        for tx in tl.static_range(NT_X):
            o_px, b_wx = _tap(o_i, tx, WC, W, FANCY)
            b_w = b_wy * b_wx
            b_gc += b_w * _grad_chroma(p_gn, o_py, o_px, m_s & (b_w != 0.0), HW, W, i_pl)
    HWC = HC.to(tl.int64) * WCP
    tl.store(p_gc + i_n * 2 * HWC + i_pl * HWC + o_j * WCP + o_i, b_gc, mask=m_b & (o_j < HC) & (o_i < WCP))


@triton.jit
def _jpeg_bwd_chroma_soft_kernel(p_x, p_cq, p_k, p_gc, s_cq, H, W, HC, WCP, NBHC, NBWC, NT_W, NT,
                                 HS: tl.constexpr, VS: tl.constexpr, TBH: tl.constexpr, TBW: tl.constexpr):
    """Soft mode, in place on the chroma-plane gradient: IDCT(weight * DCT(g)) with the weights recomputed from
    ``x``, then the fold of the replicated chroma rows (>= HC) onto row HC - 1. A separate kernel: fused with the
    gather above, the 4:2:0 variant spilled on sm_90. Grid as ``_jpeg_bwd_chroma_kernel``."""
    i_n, i_th, i_q = _program(NT_W, NT)
    i_pl = i_q % 2
    i_tw = i_q // 2
    o_bh, o_bw, o_j, o_i = _block_coords(i_th, i_tw, TBH, TBW)
    m_b = (o_bh < NBHC)[:, None] & (o_bw < NBWC)[:, None]
    HWC = HC.to(tl.int64) * WCP
    o_g = i_n * 2 * HWC + i_pl * HWC + o_j * WCP + o_i
    m_g = m_b & (o_j < HC) & (o_i < WCP)
    b_g = tl.load(p_gc + o_g, mask=m_g, other=0.0)                          # [BLOCKS, 64]; 0 in replicated rows
    b_c = _downsampled_chroma(p_x + i_n * 3 * (H.to(tl.int64) * W), o_j, o_i, m_b, H, W, HC, i_pl, HS, VS)
    b_w = _soft_weight(b_c, _load_table(p_cq, i_n, s_cq), p_k, TBH * TBW)
    b_g = _fold_rows_block(_coef_adjoint(b_g, b_w, p_k, TBH * TBW), o_j, HC, TBH * TBW)
    tl.store(p_gc + o_g, b_g, mask=m_g)


@triton.jit
def _fold_store(p_o, b_v, o_r, o_c, H, W, TBH: tl.constexpr, TBW: tl.constexpr, FOLD: tl.constexpr):
    """Adjoint of edge replication: sum padded rows onto row H-1 and padded columns onto column W-1 (the padding
    never leaves the tile, which holds whole MCUs), then store the real pixels."""
    if FOLD:
        b_v4 = tl.reshape(b_v, (TBH, TBW, 8, 8))
        o_r4 = tl.reshape(o_r, (TBH, TBW, 8, 8))
        o_c4 = tl.reshape(o_c, (TBH, TBW, 8, 8))
        b_f = tl.sum(tl.sum(tl.where(o_r4 >= H - 1, b_v4, 0.0), axis=2), axis=0)        # [TBW, 8]
        b_v4 = tl.where(o_r4 == H - 1, b_f[None, :, None, :], b_v4)
        b_f = tl.sum(tl.sum(tl.where(o_c4 >= W - 1, b_v4, 0.0), axis=3), axis=1)        # [TBH, 8]
        b_v4 = tl.where(o_c4 == W - 1, b_f[:, None, :, None], b_v4)
        b_v = tl.reshape(b_v4, (TBH * TBW, 64))
    tl.store(p_o + o_r * W + o_c, b_v, mask=(o_r < H) & (o_c < W))


@triton.jit
def _jpeg_bwd_kernel(p_g, p_x, p_gc, p_lq, p_cq, p_k, p_o, s_lq, s_cq, H, W, HC, WCP, NBH, NBW, NT_W, NT,
                     C: tl.constexpr, HS: tl.constexpr, VS: tl.constexpr, MODE: tl.constexpr,
                     TBH: tl.constexpr, TBW: tl.constexpr):
    """grad_x of the ste and soft modes (``MODE``) on a TBH x TBW tile of luma blocks (whole MCUs).

    Luma (and, for 4:4:4, chroma) gradients in the block layout, soft weights recomputed from ``x``; for 4:2:x the
    chroma-plane gradient ``p_gc`` of ``_jpeg_bwd_chroma_kernel`` is spread over its box (downsample adjoint); then
    the transposed RGB -> YCbCr map and the fold of the padding. Grid (N * NT,), NT = cdiv(NBH, TBH) * NT_W,
    NT_W = cdiv(NBW, TBW)."""
    SOFT: tl.constexpr = MODE == "soft"
    i_n, i_th, i_tw = _program(NT_W, NT)
    HW = H.to(tl.int64) * W
    p_gn = p_g + i_n * C * HW
    p_xn = p_x + i_n * C * HW
    p_on = p_o + i_n * C * HW
    o_bh, o_bw, o_r, o_c = _block_coords(i_th, i_tw, TBH, TBW)
    m_b = (o_bh < NBH)[:, None] & (o_bw < NBW)[:, None]
    m_g = m_b & (o_r < H) & (o_c < W)                                      # real pixels: the output gradient
    o_g = o_r * W + o_c
    if C == 1:
        b_gy = tl.load(p_gn + o_g, mask=m_g, other=0.0)                    # [BLOCKS, 64]
        if SOFT:
            o_x = tl.minimum(o_r, H - 1) * W + tl.minimum(o_c, W - 1)
            b_s = _to_8bit(tl.load(p_xn + o_x, mask=m_b, other=0.0))
            b_w = _soft_weight(b_s, _load_table(p_lq, i_n, s_lq), p_k, TBH * TBW)
            b_gy = _coef_adjoint(b_gy, b_w, p_k, TBH * TBW)
        _fold_store(p_on, b_gy, o_r, o_c, H, W, TBH, TBW, SOFT)
    else:
        b_gr = tl.load(p_gn + o_g, mask=m_g, other=0.0)
        b_gg = tl.load(p_gn + HW + o_g, mask=m_g, other=0.0)
        b_gb = tl.load(p_gn + 2 * HW + o_g, mask=m_g, other=0.0)
        b_gy = b_gr + b_gg + b_gb
        if HS * VS == 1:
            b_gcb = b_gg * _LG_CB + b_gb * _LB_CB
            b_gcr = b_gr * _LR_CR + b_gg * _LG_CR
        if SOFT:
            b_r, b_g, b_b = _load_rgb8(p_xn, o_r, o_c, m_b, H, W)
            b_lq = _load_table(p_lq, i_n, s_lq)
            if HS * VS == 1:
                # 4:4:4: Y, Cb, Cr one per iteration of a runtime loop (one plane's DCTs live at a time)
                b_cq = _load_table(p_cq, i_n, s_cq)
                b_ay = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
                b_acb = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
                b_acr = tl.zeros((TBH * TBW, 64), dtype=tl.float32)
                for pl in range(3):
                    b_s = tl.where(pl == 0, _rgb_to_y(b_r, b_g, b_b),
                                   tl.where(pl == 1, _rgb_to_cb(b_r, b_g, b_b), _rgb_to_cr(b_r, b_g, b_b)))
                    b_w = _soft_weight(b_s, tl.where(pl == 0, b_lq, b_cq), p_k, TBH * TBW)
                    b_gp = tl.where(pl == 0, b_gy, tl.where(pl == 1, b_gcb, b_gcr))
                    b_gp = _coef_adjoint(b_gp, b_w, p_k, TBH * TBW)
                    b_ay += tl.where(pl == 0, b_gp, 0.0)
                    b_acb += tl.where(pl == 1, b_gp, 0.0)
                    b_acr += tl.where(pl == 2, b_gp, 0.0)
                b_gy, b_gcb, b_gcr = b_ay, b_acb, b_acr
            else:
                b_w = _soft_weight(_rgb_to_y(b_r, b_g, b_b), b_lq, p_k, TBH * TBW)
                b_gy = _coef_adjoint(b_gy, b_w, p_k, TBH * TBW)
        if HS * VS > 1:
            # downsample adjoint: every pixel of a chroma sample's box gets 1/(HS*VS) of its gradient; rows past the
            # downsampled region (>= HC*VS) get nothing. Loaded after the luma DCTs: loaded before, they kept the
            # soft variants at the 255-register cap.
            o_j = o_r // VS
            m_c = m_b & (o_j < HC)
            HWC = HC.to(tl.int64) * WCP
            o_cc = i_n * 2 * HWC + o_j * WCP + o_c // HS
            b_gcb = tl.load(p_gc + o_cc, mask=m_c, other=0.0) * (1.0 / (HS * VS))
            b_gcr = tl.load(p_gc + HWC + o_cc, mask=m_c, other=0.0) * (1.0 / (HS * VS))
        # transposed real-valued RGB -> YCbCr
        FOLD: tl.constexpr = SOFT or (HS * VS > 1)
        _fold_store(p_on, b_gy * _LYR + b_gcb * _LBR + b_gcr * _LRR, o_r, o_c, H, W, TBH, TBW, FOLD)
        _fold_store(p_on + HW, b_gy * _LYG + b_gcb * _LBG + b_gcr * _LRG, o_r, o_c, H, W, TBH, TBW, FOLD)
        _fold_store(p_on + 2 * HW, b_gy * _LYB + b_gcb * _LBB + b_gcr * _LRB, o_r, o_c, H, W, TBH, TBW, FOLD)


# ----------------------------------------------------------------------------------------------------------------
# Table gradients
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _quotient(b_t, b_q):
    """``z = t / 8q`` in fp32, as the reference saves it: the correctly rounded fp32 quotient for integer steps, the
    float64 quotient rounded to fp32 otherwise (the two agree for integer steps; the branch, per program on the
    table as in ``_quantize``, keeps float64 off integer tables)."""
    b_qc = tl.minimum(b_q, _Q_CLAMP)  # a step from 2^31 does not convert to int32 (see _quantize)
    b_qi = b_qc.to(tl.int32)
    if tl.min(tl.where(b_qi.to(tl.float32) == b_qc, 1, 0)) == 1:
        # t / 8 is exact, and (t / 8) / q is t / 8q correctly rounded without 8q's overflow for steps above 4.25e37
        b_z = tl.math.div_rn(b_t.to(tl.float32) * 0.125, b_q)
    else:
        b_z = (b_t.to(tl.float64) / (8.0 * b_q.to(tl.float64))).to(tl.float32)
    return b_z


@triton.jit
def _table_factor(b_z, MODE: tl.constexpr):
    """``dc'/dQ`` at fixed ``c`` for ``c' = Q round(c / Q)``, ``z = c / Q``, ``r = round z``, ``d = z - r``; ste:
    ``-d`` (LSQ); soft: ``r + d d (d - 3 z)``, the surrogate ``Q (r + d^3)``'s. The reference's operations in its
    order (``fdgpu.reference.quantize.table_factor``), so that the factor has its bits."""
    b_r = _round_half_away(b_z)
    b_d = b_z - b_r
    if MODE == "ste":
        b_f = -b_d
    else:
        b_f = b_r + b_d * b_d * (b_d - 3.0 * b_z)
    return b_f


@triton.jit
def _jpeg_bwd_table_kernel(p_g, p_x, p_gc, p_lq, p_cq, p_k, p_t, s_lq, s_cq, H, W, HC, WCP, NBH, NBW, NT_W, NT,
                           C: tl.constexpr, HS: tl.constexpr, VS: tl.constexpr, MODE: tl.constexpr,
                           TBH: tl.constexpr, TBW: tl.constexpr):
    """Partial table gradients: for one plane of a tile of MCUs, ``sum over its blocks of DCT(g) * dc'/dQ`` ([64],
    natural order), ``g`` the gradient reaching the plane's decoded samples (zero in the padding, as in the
    reference) and ``dc'/dQ`` (:func:`_table_factor`) from the quotients recomputed from ``x``.

    Programs per tile: the VS x HS luma tiles of TBH x TBW blocks, then Cb and Cr (C = 3); one program for
    grayscale. For 4:2:x the chroma-plane gradient is ``p_gc`` of ``_jpeg_bwd_chroma_kernel`` before the soft
    weighting (this kernel runs before ``_jpeg_bwd_chroma_soft_kernel``). Writes ``p_t[n, program, 64]``: the
    launcher sums them in a fixed order. Grid (N * NT,), NT = cdiv(NBH / VS, TBH) * NT_W,
    NT_W = NP * cdiv(NBW / HS, TBW), NP = VS * HS + 2 (C = 3) or 1."""
    NL: tl.constexpr = VS * HS
    NP: tl.constexpr = NL + 2 if C == 3 else 1
    NB: tl.constexpr = TBH * TBW
    i_n, i_th, i_q = _program(NT_W, NT)
    i_p = i_q % NP
    i_tw = i_q // NP
    HW = H.to(tl.int64) * W
    p_xn = p_x + i_n * C * HW
    p_gn = p_g + i_n * C * HW
    if C == 1:
        o_bh, o_bw, o_r, o_c = _block_coords(i_th, i_tw, TBH, TBW)
        m_b = (o_bh < NBH)[:, None] & (o_bw < NBW)[:, None]
        o_x = tl.minimum(o_r, H - 1) * W + tl.minimum(o_c, W - 1)
        b_s = _to_8bit(tl.load(p_xn + o_x, mask=m_b, other=0.0))
        b_g = tl.load(p_gn + o_r * W + o_c, mask=m_b & (o_r < H) & (o_c < W), other=0.0)
        b_q = _load_table(p_lq, i_n, s_lq)
    elif i_p < NL:
        o_bh, o_bw, o_r, o_c = _block_coords(i_th * VS + i_p // HS, i_tw * HS + i_p % HS, TBH, TBW)
        m_b = (o_bh < NBH)[:, None] & (o_bw < NBW)[:, None]
        b_r, b_gr, b_b = _load_rgb8(p_xn, o_r, o_c, m_b, H, W)
        b_s = _rgb_to_y(b_r, b_gr, b_b)
        o_g = o_r * W + o_c
        m_g = m_b & (o_r < H) & (o_c < W)
        # the Y gradient of the real-valued YCbCr -> RGB map: R + G + B, summed as _jpeg_bwd_kernel does
        b_g = (tl.load(p_gn + o_g, mask=m_g, other=0.0) + tl.load(p_gn + HW + o_g, mask=m_g, other=0.0)
               + tl.load(p_gn + 2 * HW + o_g, mask=m_g, other=0.0))
        b_q = _load_table(p_lq, i_n, s_lq)
    else:
        i_pl = i_p - NL                                                    # 0: Cb, 1: Cr
        o_bh, o_bw, o_j, o_i = _block_coords(i_th, i_tw, TBH, TBW)
        m_b = (o_bh < NBH // VS)[:, None] & (o_bw < NBW // HS)[:, None]
        if NL == 1:
            b_r, b_gr, b_b = _load_rgb8(p_xn, o_j, o_i, m_b, H, W)
            # (both planes and a select: _rgb_to_c here spilled 8 bytes on sm_90)
            b_s = tl.where(i_pl == 0, _rgb_to_cb(b_r, b_gr, b_b), _rgb_to_cr(b_r, b_gr, b_b))
            b_g = _grad_chroma(p_gn, o_j, o_i, m_b & (o_j < H) & (o_i < W), HW, W, i_pl)
        else:
            b_s = _downsampled_chroma(p_xn, o_j, o_i, m_b, H, W, HC, i_pl, HS, VS)
            HWC = HC.to(tl.int64) * WCP
            b_g = tl.load(p_gc + i_n * 2 * HWC + i_pl * HWC + o_j * WCP + o_i, mask=m_b & (o_j < HC) & (o_i < WCP),
                          other=0.0)                                       # 0 in the replicated rows, as reference
        b_q = _load_table(p_cq, i_n, s_cq)
    b_a, b_d = _consts(p_k)
    b_f = _table_factor(_quotient(_fdct(b_s.to(tl.int32) - 128, b_a, NB), b_q), MODE)
    b_c = tl.reshape(_cols_pass(_rows_pass(tl.reshape(b_g, (NB, 8, 8)), b_d), b_d), (NB, 64))  # DCT(g)
    b_t = tl.sum(tl.where(m_b, b_c * b_f, 0.0), axis=0)                   # [64]
    tl.store(p_t + ((i_n * NT + i_th * NT_W + i_q) * 64 + tl.arange(0, 64)), b_t)


# ----------------------------------------------------------------------------------------------------------------
# The two halves (fdgpu.encode / fdgpu.decode): the forward's stages with the quantized coefficients stored between
# them, in the torch reference's plane layout (coefficient (u, v) of block (i, j) at [8 i + u, 8 j + v]) as fp32.
# ----------------------------------------------------------------------------------------------------------------
@triton.jit
def _dequantize(b_r, b_q):
    """The decoder's dequantization of quantized integers ``r`` (int32 [NB, 64]) with steps ``q`` (fp32 [1, 64]):
    ``r q`` (int32) for integer steps, ``round_half_away(r q)`` in float64 otherwise -- the ``c`` of
    :func:`_quantize`, from ``r`` alone. Steps are clamped as there (the callers check ``|r q| <= 2048``, so a
    non-zero ``r`` never meets a step above 2048)."""
    b_q = tl.minimum(b_q, _Q_CLAMP)
    b_qi = b_q.to(tl.int32)
    if tl.min(tl.where(b_qi.to(tl.float32) == b_q, 1, 0)) == 1:
        b_c = b_r * b_qi
    else:
        b_c = _round_half_away(b_r.to(tl.float64) * b_q.to(tl.float64)).to(tl.int32)
    return b_c


@triton.jit
def _idct_wide(b_c, b_a, NB: tl.constexpr):
    """:func:`_idct` for dequantized coefficients up to 2048 in magnitude (any decodable file's): the first pass's
    sums stay below 2^28 in int32, the second pass's (up to 2^32) are summed in int64."""
    b_at = tl.trans(b_a)
    b_x = tl.reshape(b_c, (NB, 8, 8))
    b_x = _descale(_cols_pass(b_x, b_at), 11)
    b_x = _descale(_rows_pass(b_x.to(tl.int64), b_at.to(tl.int64)), 18)
    return tl.reshape(b_x, (NB, 64)).to(tl.int32)


@triton.jit
def _jpeg_encode_kernel(p_x, p_qy, p_qc, p_lq, p_cq, p_k, s_lq, s_cq, H, W, HC, NBH, NBW, NT_W, NT,
                        C: tl.constexpr, HS: tl.constexpr, VS: tl.constexpr, TBH: tl.constexpr, TBW: tl.constexpr):
    """The encoder half: 8-bit samples, colour, chroma downsampling, jfdctint, the quantizer; stores ``r`` into
    ``qy`` ``(N, 1, 8 NBH, 8 NBW)`` and ``qc`` ``(N, 2, 8 NBH / VS, 8 NBW / HS)``. Programs per
    chroma tile: VS * HS luma tiles, then Cb and Cr (luma only for C = 1), one codec each.
    Grid: (N * NT,), NT = cdiv(NBH / VS, TBH) * NT_W, NT_W = NP * cdiv(NBW / HS, TBW)."""
    NL: tl.constexpr = VS * HS
    NP: tl.constexpr = NL + 2 * (C // 3)  # Cb and Cr programs for colour
    i_n, i_th, i_q = _program(NT_W, NT)
    i_p = i_q % NP
    i_tw = i_q // NP
    HW = H.to(tl.int64) * W
    p_xn = p_x + i_n * C * HW
    HP = NBH.to(tl.int64) * 8
    WP = NBW * 8
    if i_p < NL:
        o_bh, o_bw, o_r, o_c = _block_coords(i_th * VS + i_p // HS, i_tw * HS + i_p % HS, TBH, TBW)
        m_b = (o_bh < NBH)[:, None] & (o_bw < NBW)[:, None]
        if C == 1:
            o_x = tl.minimum(o_r, H - 1) * W + tl.minimum(o_c, W - 1)
            b_s = _to_8bit(tl.load(p_xn + o_x, mask=m_b, other=0.0))
        else:
            b_r, b_g, b_b = _load_rgb8(p_xn, o_r, o_c, m_b, H, W)
            b_s = _rgb_to_y(b_r, b_g, b_b)
        b_q = _load_table(p_lq, i_n, s_lq)
        p_o = p_qy + i_n * HP * WP + o_r * WP + o_c
    else:
        i_pl = i_p - NL                                                    # 0: Cb, 1: Cr
        o_bh, o_bw, o_j, o_i = _block_coords(i_th, i_tw, TBH, TBW)
        m_b = (o_bh < NBH // VS)[:, None] & (o_bw < NBW // HS)[:, None]
        b_s = _downsampled_chroma(p_xn, o_j, o_i, m_b, H, W, HC, i_pl, HS, VS)
        b_q = _load_table(p_cq, i_n, s_cq)
        HWC = (HP // VS) * (WP // HS)
        p_o = p_qc + i_n * 2 * HWC + i_pl * HWC + o_j * (WP // HS) + o_i
    b_a, b_d = _consts(p_k)
    b_r, b_c = _quantize(_fdct(b_s.to(tl.int32) - 128, b_a, TBH * TBW), b_q)
    tl.store(p_o, b_r.to(tl.float32), mask=m_b & (o_bh >= 0)[:, None])


@triton.jit
def _jpeg_decode_kernel(p_qy, p_qc, p_y, p_yb, p_cb, p_lq, p_bq, p_rq, p_k, s_q, H, W, HC, WC, NBH, NBW, NT_W, NT,
                        C: tl.constexpr, HS: tl.constexpr, VS: tl.constexpr, TBH: tl.constexpr,
                        TBW: tl.constexpr):
    """The decoder half up to the chroma upsampling: dequantization, jidctint (64-bit second pass), range limit.
    Luma goes to ``y`` (fp32 / 255, C = 1) or ``yb`` (uint8 ``(N, H, W)``), chroma to ``cb`` (uint8
    ``(N, 2, HC, WC)``), which :func:`_jpeg_up_kernel` upsamples and converts. Programs as
    :func:`_jpeg_encode_kernel`'s."""
    NL: tl.constexpr = VS * HS
    NP: tl.constexpr = NL + 2 * (C // 3)  # Cb and Cr programs for colour
    i_n, i_th, i_q = _program(NT_W, NT)
    i_p = i_q % NP
    i_tw = i_q // NP
    HW = H.to(tl.int64) * W
    HP = NBH.to(tl.int64) * 8
    WP = NBW * 8
    if i_p < NL:
        o_bh, o_bw, o_r, o_c = _block_coords(i_th * VS + i_p // HS, i_tw * HS + i_p % HS, TBH, TBW)
        m_b = (o_bh < NBH)[:, None] & (o_bw < NBW)[:, None]
        b_r = tl.load(p_qy + i_n * HP * WP + o_r * WP + o_c, mask=m_b & (o_bh >= 0)[:, None], other=0.0)
        b_q = _load_table(p_lq, i_n, s_q)
        m_o = m_b & (o_r < H) & (o_c < W)
        o_o = o_r * W + o_c
    else:
        i_pl = i_p - NL                                                    # 0: Cb, 1: Cr
        o_bh, o_bw, o_j, o_i = _block_coords(i_th, i_tw, TBH, TBW)
        m_b = (o_bh < NBH // VS)[:, None] & (o_bw < NBW // HS)[:, None]
        HWC = (HP // VS) * (WP // HS)
        b_r = tl.load(p_qc + i_n * 2 * HWC + i_pl * HWC + o_j * (WP // HS) + o_i, mask=m_b & (o_bh >= 0)[:, None],
                      other=0.0)
        b_q = tl.where(i_pl == 0, _load_table(p_bq, i_n, s_q), _load_table(p_rq, i_n, s_q))
        m_o = m_b & (o_j < HC) & (o_i < WC)
        o_o = (2 * i_n + i_pl) * (HC.to(tl.int64) * WC) + o_j * WC + o_i
    b_a, b_d = _consts(p_k)
    b_v = _idct_wide(_dequantize(b_r.to(tl.int32), b_q), b_a, TBH * TBW) + 128
    b_v = tl.minimum(tl.maximum(b_v, 0), 255)
    if i_p < NL:
        if C == 1:
            tl.store(p_y + i_n * HW + o_o, _div255(b_v.to(tl.float32)), mask=m_o)
        else:
            tl.store(p_yb + i_n * HW + o_o, b_v.to(tl.uint8), mask=m_o)
    else:
        tl.store(p_cb + o_o, b_v.to(tl.uint8), mask=m_o)

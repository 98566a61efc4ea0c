"""8x8 block DCTs: libjpeg-turbo's accurate integer transforms (the forward pipeline) and the orthonormal real DCT
(the linear map ``L`` and the backward modes).

**Integer transforms** (``jfdctint.c`` / ``jidctint.c``, "islow", libjpeg-turbo's default): each 1-D pass of
the Loeffler-Ligtenberg-Moschytz butterfly with 13-bit fixed-point constants is an integer linear map (every
multiply and add in it is exact) followed by a rounding right shift ``DESCALE(v, n) = (v + 2**(n-1)) >> n``. The
8x8 integer matrices of the passes are obtained here by running the butterflies (written out from the algorithm
in :func:`islow_fdct_1d` / :func:`islow_idct_1d`) on unit vectors, so a pass is one matmul + one descale:

* forward: rows then columns, ``n = 11`` then ``n = 15`` (``CONST_BITS - PASS1_BITS``, ``CONST_BITS + PASS1_BITS``);
  the output is 8x the orthonormal DCT of the level-shifted samples.
* inverse: columns then rows, ``n = 11`` then ``n = 18``; then ``+128`` and the range limit to 0..255.

Exactness: the matmuls run in float64; every product and partial sum is an integer below 2**31 (bounds in
:func:`fdct_islow` / :func:`idct_islow`), far inside float64's 2**53, so the result does not depend on the
summation order (BLAS blocking, threads). The same bounds make the passes expressible in int32 (the Triton
kernels mirror them there).

Speed, measured on the 2-core EPYC (single thread, one chunk of 12 planes of 224x224, float64): a separable pass
as one broadcast matmul ``F @ X`` over ``(B, 8, L)`` takes 1.1 ms, the same pass as a ``(64, 64)`` Kronecker
matmul 2.6 ms (8x the multiply-adds), and as a ``(rows, 8) @ (8, 8)`` GEMM 2.8 ms; elementwise butterflies
(~40 tensor ops per pass) were slower still. So each pass is a broadcast matmul in the block layout below, where
both passes put the long axis last.

Layout: a plane ``(..., H, W)`` (H, W multiples of 8) has coefficients ``(..., 64, H / 8, W / 8)``; channel
``8 u + v`` holds coefficient (u, v) (natural order: u vertical, v horizontal frequency) of every block.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- libjpeg-turbo's accurate integer DCT
CONST_BITS = 13
PASS1_BITS = 2
# FIX(c) = round(c * 2**13) of the rotation constants of jfdctint.c / jidctint.c (named by c).
FIX_0_298631336 = 2446
FIX_0_390180644 = 3196
FIX_0_541196100 = 4433
FIX_0_765366865 = 6270
FIX_0_899976223 = 7373
FIX_1_175875602 = 9633
FIX_1_501321110 = 12299
FIX_1_847759065 = 15137
FIX_1_961570560 = 16069
FIX_2_053119869 = 16819
FIX_2_562915447 = 20995
FIX_3_072711026 = 25172

# descale shifts of the passes
FDCT_SHIFTS = (CONST_BITS - PASS1_BITS, CONST_BITS + PASS1_BITS)            # 11, 15
IDCT_SHIFTS = (CONST_BITS - PASS1_BITS, CONST_BITS + PASS1_BITS + 3)        # 11, 18


def _odd_rotation(a4, a5, a6, a7):
    """The shared odd part of both transforms (LL&M figure 8, scaled by sqrt(2)): four inputs -> four outputs."""
    z1, z2, z3, z4 = a4 + a7, a5 + a6, a4 + a6, a5 + a7
    z5 = (z3 + z4) * FIX_1_175875602
    z1, z2 = z1 * -FIX_0_899976223, z2 * -FIX_2_562915447
    z3, z4 = z3 * -FIX_1_961570560 + z5, z4 * -FIX_0_390180644 + z5
    return (a4 * FIX_0_298631336 + z1 + z3, a5 * FIX_2_053119869 + z2 + z4,
            a6 * FIX_3_072711026 + z2 + z3, a7 * FIX_1_501321110 + z1 + z4)


def islow_fdct_1d(d):
    """One 1-D pass of jfdctint.c before its descale: 8 inputs (ints or tensors) -> 8 integer sums, outputs 0 and
    4 scaled by ``2**CONST_BITS`` (their descale then gives libjpeg's ``<< PASS1_BITS`` in pass 1 and
    ``DESCALE(., PASS1_BITS)`` in pass 2 exactly)."""
    t0, t7 = d[0] + d[7], d[0] - d[7]
    t1, t6 = d[1] + d[6], d[1] - d[6]
    t2, t5 = d[2] + d[5], d[2] - d[5]
    t3, t4 = d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * FIX_0_541196100
    o7, o5, o3, o1 = _odd_rotation(t4, t5, t6, t7)
    one = 1 << CONST_BITS
    return [(t10 + t11) * one, o1, z1 + t13 * FIX_0_765366865, o3,
            (t10 - t11) * one, o5, z1 + t12 * -FIX_1_847759065, o7]


def islow_idct_1d(c):
    """One 1-D pass of jidctint.c before its descale: 8 coefficients -> 8 integer sums (samples 0..7)."""
    z1 = (c[2] + c[6]) * FIX_0_541196100
    t2, t3 = z1 + c[6] * -FIX_1_847759065, z1 + c[2] * FIX_0_765366865
    t0, t1 = (c[0] + c[4]) * (1 << CONST_BITS), (c[0] - c[4]) * (1 << CONST_BITS)
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_rotation(c[7], c[5], c[3], c[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


def _matrix_of(pass_1d):
    """The 8x8 integer matrix ``M`` with ``pass_1d(x) == M @ x`` (columns = images of the unit vectors)."""
    cols = [pass_1d([int(i == j) for i in range(8)]) for j in range(8)]
    return tuple(tuple(cols[j][k] for j in range(8)) for k in range(8))


FDCT_MATRIX = _matrix_of(islow_fdct_1d)   # (8, 8) ints, row k = output frequency k
IDCT_MATRIX = _matrix_of(islow_idct_1d)   # (8, 8) ints, row n = output sample n


@functools.lru_cache(maxsize=32)
def _int_matrix(which: str, dtype, device) -> torch.Tensor:
    return torch.tensor(FDCT_MATRIX if which == "f" else IDCT_MATRIX, dtype=dtype, device=device)


def descale_(v: torch.Tensor, n: int) -> torch.Tensor:
    """libjpeg's ``DESCALE(v, n) = (v + 2**(n-1)) >> n`` (an arithmetic shift: floor) on integer-valued floats, in
    place. Exact: adding and scaling by powers of two lose nothing on integers below 2**52."""
    return v.add_(float(1 << (n - 1))).mul_(1.0 / (1 << n)).floor_()


def _separable(b: torch.Tensor, m: torch.Tensor, first: str, shifts) -> torch.Tensor:
    """Two descaled 1-D passes of ``m`` over blocks ``b`` ``(M, 8, 8, L)`` = (M, u, v, blocks); ``first`` is the
    axis of the first pass ("v": along rows, "u": along columns). Returns ``(M, 8, 8, L)``."""
    mm, _, _, nb = b.shape
    if first == "v":
        b = descale_(torch.matmul(m, b.reshape(mm * 8, 8, nb)), shifts[0])             # rows: v per (M, u)
        return descale_(torch.matmul(m, b.view(mm, 8, 8 * nb)), shifts[1]).view(mm, 8, 8, nb)  # columns: u
    b = descale_(torch.matmul(m, b.reshape(mm, 8, 8 * nb)), shifts[0])                  # columns: u
    return descale_(torch.matmul(m, b.view(mm * 8, 8, nb)), shifts[1]).view(mm, 8, 8, nb)  # rows: v


def fdct_islow(p: torch.Tensor) -> torch.Tensor:
    """libjpeg-turbo's accurate integer forward DCT of every 8x8 block: ``(..., H, W) -> (..., 64, H / 8, W / 8)``.

    Args:
        p: level-shifted samples (integers in -128..127, any float dtype), H and W multiples of 8.

    Returns:
        float64 integer coefficients, 8x the orthonormal DCT (|value| < 2**14), in the layout of :func:`block_dct`.

    Bounds (exactness, int32): pass 1 sums are at most ``128 * 8 * 2**13 = 2**23``, its outputs at most 2**12;
    pass 2 sums at most ``2**12 * 59,000 < 2**28``.
    """
    *lead, h, w = p.shape
    b = F.pixel_unshuffle(p.reshape(-1, 1, h, w).to(torch.float64), 8)               # [M, 64, h/8, w/8]
    m = _int_matrix("f", torch.float64, p.device)
    c = _separable(b.view(b.shape[0], 8, 8, -1), m, "v", FDCT_SHIFTS)
    return c.view(*lead, 64, h // 8, w // 8)


def idct_islow(c: torch.Tensor) -> torch.Tensor:
    """libjpeg-turbo's accurate integer inverse DCT (jidctint.c) of dequantized coefficients, with the level shift
    and the range limit: ``(..., 64, h, w) -> (..., 8h, 8w)`` samples in 0..255 (float64 integers).

    Args:
        c: dequantized coefficients (integers, the layout of :func:`block_dct`); libjpeg holds them in 16 bits.

    Bounds: with |c| < 2**15, pass 1 sums stay below ``2**15 * 59,000 < 2**31`` ... in practice (quantized
    coefficients of 8-bit images) far less. Pass-2 results outside -128..127 are clamped, as libjpeg-turbo's
    SIMD IDCT (used by Pillow on x86-64 and ARM) does with saturating packs.
    """
    *lead, _, h, w = c.shape
    b = c.reshape(-1, 8, 8, h * w).to(torch.float64)
    m = _int_matrix("i", torch.float64, c.device)
    s = _separable(b, m, "u", IDCT_SHIFTS).view(-1, 64, h, w)
    s = F.pixel_shuffle(s, 8).view(*lead, 8 * h, 8 * w)
    return s.add_(128.0).clamp_(0, 255)


# ---------------------------------------------------------------- the orthonormal real DCT (for L and backward)
def dct_matrix(dtype=torch.float32, device=None) -> torch.Tensor:
    """``(8, 8)`` orthonormal DCT-II matrix ``D[k, n] = c_k cos((2n + 1) k pi / 16)`` (JPEG's FDCT, T.81 A.3.3)."""
    k = torch.arange(8, dtype=torch.float64).view(8, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, 8)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2.0 / 8)
    d[0] *= 1 / math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _basis_cached(dtype, device) -> torch.Tensor:
    d = dct_matrix(torch.float64)
    k = torch.einsum("ui,vj->uvij", d, d).reshape(64, 1, 8, 8)
    return k.to(dtype=dtype, device=device)


def dct_basis(dtype=torch.float32, device=None) -> torch.Tensor:
    """``(64, 1, 8, 8)`` basis images: filter ``8 u + v`` is ``D[u, :]^T D[v, :]`` (the Kronecker DCT matrix)."""
    return _basis_cached(dtype, torch.device(device) if device is not None else torch.device("cpu"))


def block_dct(p: torch.Tensor) -> torch.Tensor:
    """Orthonormal 8x8 DCT of every block: ``(..., H, W) -> (..., 64, H / 8, W / 8)``. One matmul with the
    ``(64, 64)`` Kronecker matrix (on the 2-core CPU, 32 planes of 224x224 in float32: 3.3 ms, against 7.9 ms for
    two batched 8x8 matmuls and 7.4 ms for a stride-8 convolution)."""
    *lead, h, w = p.shape
    blocks = F.pixel_unshuffle(p.reshape(-1, 1, h, w), 8).flatten(2)          # [M, 64, h/8 * w/8]
    c = torch.matmul(dct_basis(p.dtype, p.device).view(64, 64), blocks)
    return c.view(*lead, 64, h // 8, w // 8)


def block_idct(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct` (and its adjoint, the DCT being orthonormal): ``(..., 64, h, w) -> (..., 8h, 8w)``."""
    *lead, _, h, w = c.shape
    blocks = torch.matmul(dct_basis(c.dtype, c.device).view(64, 64).t(), c.reshape(-1, 64, h * w))
    return F.pixel_shuffle(blocks.view(-1, 64, h, w), 8).view(*lead, 8 * h, 8 * w)

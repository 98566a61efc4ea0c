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

Exactness: every product and partial sum of a pass is an integer (times a power of two) that its float type holds
exactly: below 2**24 in float32 (pass 1 of the forward; the other two wide passes split their matrix in two
halves that each stay below 2**24), below 2**53 in float64 (pass 2 of the inverse, sums up to 2**31). So the
result does not depend on the summation order (BLAS blocking, threads). In int32 every sum fits (bounds in
:func:`fdct_islow` / :func:`idct_islow`): the Triton kernels can mirror the passes there.

Speed (CPU time, one thread, 12 planes of 224x224, the 2-core EPYC under load): the forward DCT as matmul passes
(:func:`fdct_islow`) takes 2.8 ms, the same butterflies as elementwise tensor ops 6.1 ms in int32 and 16.2 ms in
float64. Whole forward, batch 32 x 224^2, q75, 4:2:0: float64 matmul passes in the ``(..., 64, h, w)`` block layout
(pixel_unshuffle/shuffle copies) 1.93 ms per image, these float32/float64 passes in the plane layout 1.53 ms, the
float-DCT forward they replace 1.47 ms (same run).

Layout: the integer transforms work in place in the plane: coefficient (u, v) (natural order: u vertical, v
horizontal frequency) of block (i, j) sits at ``[8 i + u, 8 j + v]``. The orthonormal :func:`block_dct` returns
``(..., 64, H / 8, W / 8)`` (channel ``8 u + v``); :func:`plane_to_blocks` converts.
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


def _split(m, k: int):
    """``m = 2**k * hi + lo`` with ``lo`` in 0..2**k-1 (integer matrices as nested tuples)."""
    hi = tuple(tuple(v >> k for v in row) for row in m)
    lo = tuple(tuple(v & ((1 << k) - 1) for v in row) for row in m)
    return hi, lo


@functools.lru_cache(maxsize=64)
def _consts(name: str, device) -> torch.Tensor:
    """The pass matrices, with each descale's power of two folded in (exact), built once per device."""
    f32, f64 = torch.float32, torch.float64
    fh, fl = _split(FDCT_MATRIX, 6)
    gh, gl = _split(IDCT_MATRIX, 6)
    if name == "fdct1":   # rows, float32, transposed for (rows, 8) @ (8, 8): F^T / 2**11
        return torch.tensor(FDCT_MATRIX, dtype=f32, device=device).t().contiguous() / (1 << 11)
    if name == "fdct1_bias":  # + 1/2 (rounding), - 4 * 8 * 128 on output 0 (the level shift, see fdct_islow)
        return torch.tensor([0.5 - 4096.0] + [0.5] * 7, dtype=f32, device=device)
    if name == "fdct2":   # columns, float32 split: [F_hi / 2**9 ; F_lo / 2**6], (16, 8)
        return torch.cat([torch.tensor(fh, dtype=f32) / (1 << 9), torch.tensor(fl, dtype=f32) / (1 << 6)]).to(device)
    if name == "idct1":   # columns, float32 split: [G_hi / 2**5 ; G_lo / 2**6], (16, 8)
        return torch.cat([torch.tensor(gh, dtype=f32) / (1 << 5), torch.tensor(gl, dtype=f32) / (1 << 6)]).to(device)
    if name == "idct2":   # rows, float64: G^T / 2**18
        return torch.tensor(IDCT_MATRIX, dtype=f64, device=device).t().contiguous() / (1 << 18)
    if name == "idct2_bias":  # + 1/2 (rounding) + 128 (the level shift)
        return torch.full((8,), 128.5, dtype=f64, device=device)
    raise KeyError(name)


def _split_pass(x: torch.Tensor, m: torch.Tensor, lo_bias: float, lo_scale: float) -> torch.Tensor:
    """A descaled column pass (along H, groups of 8 rows) in float32 with the matrix split in two halves so that
    every product and partial sum stays an integer multiple of a power of two below 2**24 (exact):
    ``floor((2**6 A + B + 2**(n-1)) / 2**n) = floor(A' + floor(B' + lo_bias) * lo_scale)`` with
    ``A' = A / 2**(n-6)`` and ``B' = B / 2**6`` the two halves of ``m @ x``."""
    w = x.shape[-1]
    ab = torch.matmul(m, x.reshape(-1, 8, w))                  # [B, 16, W]
    a, b = ab[:, :8], ab[:, 8:]
    b = b.add_(lo_bias).floor_()
    return torch.add(a, b, alpha=lo_scale).floor_().view(x.shape)


def fdct_islow(p: torch.Tensor) -> torch.Tensor:
    """libjpeg-turbo's accurate integer forward DCT of every 8x8 block, in the plane:
    ``(..., H, W) -> (..., H, W)``, coefficient (u, v) of block (i, j) at ``[8 i + u, 8 j + v]``.

    Args:
        p: samples 0..255 (integer-valued, any float dtype), contiguous, H and W multiples of 8; the level shift by
            128 is applied here.

    Returns:
        float32 integer coefficients, 8x the orthonormal DCT (|value| <= 2**13).

    Exactness. Pass 1 (rows) runs in float32 on the unshifted samples: with ``F`` divided by 2**11, every product
    and partial sum is a multiple of 2**-11 below 2**13 (row 0: ``4 * sum(x) <= 8160``), i.e. an integer below 2**24
    in units of 2**-11. The level shift only moves output 0 of each row, by ``4 * 8 * 128 = 4096`` (the other rows of
    ``F`` sum to zero), and is folded into that output's rounding bias. Pass 2 (columns) has sums up to 2**28, too
    wide for float32: ``F = 64 F_hi + F_lo`` (``|F_hi| <= 178``, ``0 <= F_lo < 64``), each half's sums stay below
    2**23, and ``DESCALE(64 A + B, 15) = floor((A + floor((B + 2**14) / 64)) / 512)`` recombines them exactly.
    In int32 (the kernels): pass 1 sums <= ``128 * 65,536 = 2**23``, pass 2 sums <= ``2**12 * 65,536 = 2**28``.
    """
    *lead, h, w = p.shape
    x = p.to(torch.float32).reshape(-1, 8)
    y = torch.addmm(_consts("fdct1_bias", p.device), x, _consts("fdct1", p.device)).floor_()
    return _split_pass(y.view(-1, h, w), _consts("fdct2", p.device), 256.0, 1.0 / 512).view(*lead, h, w)


def idct_islow(c: torch.Tensor) -> torch.Tensor:
    """libjpeg-turbo's accurate integer inverse DCT (jidctint.c) of dequantized coefficients in the plane layout of
    :func:`fdct_islow`, with the level shift and the range limit: ``(..., H, W)`` -> samples 0..255 (float64).

    Args:
        c: dequantized integer coefficients (orthonormal scale), float32 or float64, |c| <= 2048 (the quantizer
            guarantees ``|c| <= |t| / 8 + Q / 2 <= 2 |t| / 8``; ``|c| <= 1152`` for steps <= 255).

    Exactness. Pass 1 (columns) in float32 with ``G = 64 G_hi + G_lo`` split as in :func:`fdct_islow` (each half's
    sums below 2**22), recombined by ``DESCALE(64 A + B, 11) = floor((A + floor((B + 2**10) / 64)) / 32)``. Pass 2
    (rows) in float64 (sums up to 2**31). In int32 (the kernels): with |c| <= 1152, pass 1 sums are at most
    ``1152 * 61,214 < 2**27`` and its outputs at most 34,433; pass 2 sums at most ``34,433 * 61,214 < 2**31``.
    Pass-2 results outside -128..127 are clamped, as libjpeg-turbo's SIMD IDCT (used by Pillow on x86-64 and ARM)
    does with saturating packs.
    """
    *lead, h, w = c.shape
    v = _split_pass(c.to(torch.float32).contiguous().view(-1, h, w), _consts("idct1", c.device), 16.0, 1.0 / 32)
    s = torch.addmm(_consts("idct2_bias", c.device), v.view(-1, 8).to(torch.float64), _consts("idct2", c.device))
    return s.floor_().clamp_(0, 255).view(*lead, h, w)


def plane_to_blocks(x: torch.Tensor) -> torch.Tensor:
    """Coefficient plane ``(..., H, W)`` -> the block layout ``(..., 64, H / 8, W / 8)`` of :func:`block_dct`."""
    *lead, h, w = x.shape
    return F.pixel_unshuffle(x.reshape(-1, 1, h, w), 8).view(*lead, 64, h // 8, w // 8)


def blocks_to_plane(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`plane_to_blocks`: ``(..., 64, h, w) -> (..., 8h, 8w)``."""
    *lead, _, h, w = c.shape
    return F.pixel_shuffle(c.reshape(-1, 64, h, w), 8).view(*lead, 8 * h, 8 * w)


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
    """Inverse of :func:`block_dct` (and its adjoint, the DCT being orthonormal):
    ``(..., 64, h, w) -> (..., 8h, 8w)``."""
    *lead, _, h, w = c.shape
    blocks = torch.matmul(dct_basis(c.dtype, c.device).view(64, 64).t(), c.reshape(-1, 64, h * w))
    return F.pixel_shuffle(blocks.view(-1, 64, h, w), 8).view(*lead, 8 * h, 8 * w)

"""Orthonormal 8x8 DCT-II of every block of a plane: one matmul with the 64x64 Kronecker DCT matrix.

Layout: a plane ``(..., H, W)`` (H, W multiples of 8) has coefficients ``(..., 64, H / 8, W / 8)``; channel
``8 u + v`` holds coefficient (u, v) (natural order) of every block. ``pixel_unshuffle`` gathers each block into
the channel dim, then one ``(64, 64)`` Kronecker-DCT matmul transforms all blocks: 4x the multiply-adds of the
separable form, but a single well-vectorised GEMM. On the 2-core CPU, for 32 planes of 224x224: 3.3 ms, against
7.9 ms for two batched 8x8 matmuls and 7.4 ms for a stride-8 convolution.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F


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
    return k.to(torch.float32).to(dtype=dtype, device=device)


def dct_basis(dtype=torch.float32, device=None) -> torch.Tensor:
    """``(64, 1, 8, 8)`` basis images: filter ``8 u + v`` is ``D[u, :]^T D[v, :]`` (the Kronecker DCT matrix)."""
    # Rounded to float32 for every dtype, so that float32, float64 and the Triton kernels use the same constants.
    # The entries of coefficients (0,0), (0,4), (4,0), (4,4) are then exactly +-1/8: with integer samples those
    # coefficients are exact, and their frequent exact ties (z = k + 1/2) round the same way everywhere.
    return _basis_cached(dtype, torch.device(device) if device is not None else torch.device("cpu"))


def block_dct(p: torch.Tensor) -> torch.Tensor:
    """Forward 8x8 DCT of every block: ``(..., H, W) -> (..., 64, H / 8, W / 8)``."""
    *lead, h, w = p.shape
    blocks = F.pixel_unshuffle(p.reshape(-1, 1, h, w), 8).flatten(2)          # [M, 64, h/8 * w/8]
    c = torch.matmul(dct_basis(p.dtype, p.device).view(64, 64), blocks)
    return c.view(*lead, 64, h // 8, w // 8)


def block_idct(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct` (and its adjoint, the DCT being orthonormal): ``(..., 64, h, w) -> (..., 8h, 8w)``."""
    *lead, _, h, w = c.shape
    blocks = torch.matmul(dct_basis(c.dtype, c.device).view(64, 64).t(), c.reshape(-1, 64, h * w))
    return F.pixel_shuffle(blocks.view(-1, 64, h, w), 8).view(*lead, 8 * h, 8 * w)

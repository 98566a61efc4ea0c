"""Orthonormal 8x8 DCT-II on whole planes, in place (no block permutes): ``C = D X D^T`` for every 8x8 block."""
from __future__ import annotations

import math

import torch


def dct_matrix(dtype=torch.float32, device=None) -> torch.Tensor:
    """``(8, 8)`` orthonormal DCT-II matrix ``D[k, n] = c_k cos((2n + 1) k pi / 16)`` (JPEG's FDCT, T.81 A.3.3)."""
    k = torch.arange(8, dtype=torch.float64).view(8, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, 8)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2.0 / 8)
    d[0] *= 1 / math.sqrt(2.0)
    return d.to(dtype=dtype, device=device)


def _blockwise(p: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    # p: (..., H, W) with H, W multiples of 8. Rows of each block: left @ block; columns: block @ right.
    *lead, h, w = p.shape
    out = torch.matmul(p.reshape(-1, w // 8, 8), right)            # [.. * H * W/8, 8] @ [8, 8]: columns
    out = torch.matmul(left, out.view(-1, 8, w))                    # [8, 8] @ [.. * H/8, 8, W]: rows
    return out.view(*lead, h, w)


def block_dct(p: torch.Tensor) -> torch.Tensor:
    """Forward 8x8 DCT of every block: ``(..., H, W) -> (..., H, W)`` (H, W multiples of 8), coefficient (u, v) of
    block (a, b) at ``[8a + u, 8b + v]``."""
    d = dct_matrix(p.dtype, p.device)
    return _blockwise(p, d, d.t())


def block_idct(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct` (and its adjoint, the DCT being orthonormal)."""
    d = dct_matrix(c.dtype, c.device)
    return _blockwise(c, d.t(), d)

"""Chroma down/upsampling as libjpeg-turbo does it (jcsample.c, jdsample.c), plus edge padding and the adjoints."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..choices import FACTORS  # noqa: F401  (subsampling name -> chroma factors; re-exported for the pipeline)


@functools.lru_cache(maxsize=256)
def _alternating(a: float, b: float, n: int, dtype, device) -> torch.Tensor:
    """``(n,)`` read-only constant a, b, a, b, ...: libjpeg's per-column rounding biases."""
    return torch.tensor([a, b], dtype=dtype, device=device).repeat((n + 1) // 2)[:n]


def pad_replicate(x: torch.Tensor, hp: int, wp: int) -> torch.Tensor:
    """Pad ``(N, C, H, W)`` to ``(N, C, hp, wp)`` by repeating the last row and column (libjpeg's edge expansion)."""
    h, w = x.shape[-2:]
    if (h, w) == (hp, wp):
        return x
    return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")


def pad_replicate_adjoint(g: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Adjoint of :func:`pad_replicate`: fold the padded rows/columns of ``(..., hp, wp)`` back onto row h-1/col w-1."""
    if g.shape[-1] > w:
        g = g[..., :w].clone() if g.shape[-1] == w else torch.cat(
            [g[..., : w - 1], g[..., w - 1:].sum(-1, keepdim=True)], dim=-1)
    if g.shape[-2] > h:
        g = torch.cat([g[..., : h - 1, :], g[..., h - 1:, :].sum(-2, keepdim=True)], dim=-2)
    return g


def downsample(c: torch.Tensor, hs: int, vs: int, exact: bool = True) -> torch.Tensor:
    """Box-average chroma by ``hs x vs``: ``(N, K, H, W) -> (N, K, H / vs, W / hs)`` (H, W multiples of the factors).

    ``exact`` reproduces libjpeg's integer rounding with its alternating bias (1, 2, 1, 2, ... for 2x2 and
    0, 1, 0, 1, ... for 2x1, restarting on every output row), else the real-valued mean.
    """
    if hs == 1 and vs == 1:
        return c
    s = c[..., 0::vs, 0::2] + c[..., 0::vs, 1::2]
    if vs == 2:
        s += c[..., 1::2, 0::2]
        s += c[..., 1::2, 1::2]
    if not exact:
        return s.mul_(1.0 / (hs * vs))
    w = s.shape[-1]
    bias = _alternating(*((1.0, 2.0) if vs == 2 else (0.0, 1.0)), w, c.dtype, c.device)
    return s.add_(bias).mul_(1.0 / (hs * vs)).floor_()


def downsample_adjoint(g: torch.Tensor, hs: int, vs: int) -> torch.Tensor:
    """Adjoint of the real-valued :func:`downsample`: ``(N, K, h, w) -> (N, K, h * vs, w * hs)``."""
    if hs == 1 and vs == 1:
        return g
    n, k, h, w = g.shape
    out = (g * (1.0 / (hs * vs))).view(n, k, h, 1, w, 1).expand(n, k, h, vs, w, hs)
    return out.reshape(n, k, h * vs, w * hs)


def uses_fancy(wc: int) -> bool:
    """libjpeg-turbo uses the triangle ("fancy") filter only when the chroma plane is wider than 2 samples."""
    return wc > 2


def _triangle_1d(p: torch.Tensor, dim: int) -> torch.Tensor:
    """Along ``dim`` (-1 or -2) of an edge-padded plane (n + 2 samples): even outputs 3 c[i] + c[i - 1], odd outputs
    3 c[i] + c[i + 1], interleaved to 2n samples (unscaled, unrounded). Both phases are written straight into the
    strided halves of one output tensor (no stack/cat pass)."""
    n = p.shape[dim] - 2
    mid = p.narrow(dim, 1, n)
    if torch.is_grad_enabled() and p.requires_grad:  # out= writes are not differentiable: stack instead
        even = torch.add(p.narrow(dim, 0, n), mid, alpha=3)
        odd = torch.add(p.narrow(dim, 2, n), mid, alpha=3)
        return torch.stack([even, odd], dim=dim).flatten(dim - 1, dim)
    shape = list(p.shape)
    shape[dim] = n
    shape.insert(len(shape) + dim + 1, 2)  # [..., n, 2, (w)]: phase right after the upsampled dim
    out = torch.empty(shape, dtype=p.dtype, device=p.device)
    phase = out.dim() + dim  # the new size-2 dim
    torch.add(p.narrow(dim, 0, n), mid, alpha=3, out=out.select(phase, 0))
    torch.add(p.narrow(dim, 2, n), mid, alpha=3, out=out.select(phase, 1))
    return out.flatten(dim - 1, dim)


def upsample(c: torch.Tensor, hs: int, vs: int, h: int, w: int, exact: bool = True) -> torch.Tensor:
    """Upsample decoded chroma ``(N, K, hc, wc)`` to ``(N, K, h, w)`` as libjpeg-turbo's decoder does.

    2x1 (h2v1_fancy_upsample): out = (3 * near + far + 1 or 2) >> 2. 2x2 (h2v2_fancy_upsample): column sums
    3 * near + far, then (3 * near + far + 8 or 7) >> 4. Edges repeat the border sample. Planes at most 2 samples
    wide are upsampled by replication, as libjpeg-turbo does. ``exact=False`` gives the real-valued filter.
    """
    if hs == 1 and vs == 1:
        return c
    hc, wc = c.shape[-2:]
    if not uses_fancy(wc):
        out = c.repeat_interleave(vs, dim=-2).repeat_interleave(hs, dim=-1)
        return out[..., :h, :w]
    p = F.pad(c, (1, 1, 1 if vs == 2 else 0, 1 if vs == 2 else 0), mode="replicate")
    if vs == 2:
        p = _triangle_1d(p, -2)  # column sums, rows already final: [N, K, 2 hc, wc + 2]
    out = _triangle_1d(p, -1)[..., :h, :w]
    scale = 16.0 if vs == 2 else 4.0
    if not exact:
        return out.mul_(1.0 / scale)
    bias = _alternating(*((8.0, 7.0) if vs == 2 else (1.0, 2.0)), w, c.dtype, c.device)
    return out.add_(bias).mul_(1.0 / scale).floor_()


def _fancy_1d_adjoint(g: torch.Tensor, n: int) -> torch.Tensor:
    """Adjoint of the unscaled 1-D triangle filter along the last dim: ``(..., L) -> (..., n)``, L in {2n-1, 2n}."""
    if g.shape[-1] < 2 * n:
        g = F.pad(g, (0, 2 * n - g.shape[-1]))
    ge, go = g[..., 0::2], g[..., 1::2]
    out = (ge + go) * 3
    out[..., : n - 1] += ge[..., 1:]      # out[2k] used c[k-1]
    out[..., 0] += ge[..., 0]             # out[0] used c[0] as its left neighbour
    out[..., 1:] += go[..., : n - 1]      # out[2k+1] used c[k+1]
    out[..., n - 1] += go[..., n - 1]     # out[2n-1] used c[n-1] as its right neighbour
    return out


def upsample_adjoint(g: torch.Tensor, hs: int, vs: int, hc: int, wc: int) -> torch.Tensor:
    """Adjoint of the real-valued :func:`upsample`: ``(N, K, h, w) -> (N, K, hc, wc)``."""
    if hs == 1 and vs == 1:
        return g
    if not uses_fancy(wc):
        n, k, h, w = g.shape
        g = F.pad(g, (0, wc * hs - w, 0, hc * vs - h))
        return g.view(n, k, hc, vs, wc, hs).sum(dim=(3, 5))
    out = _fancy_1d_adjoint(g, wc) * 0.25
    if vs == 2:
        out = _fancy_1d_adjoint(out.transpose(-1, -2), hc).transpose(-1, -2) * 0.25
    return out

"""``nn.Module`` wrappers of the functional API; tables are buffers (move with ``.to()``, saved in state_dict)."""
from __future__ import annotations

import torch
from torch import nn

from . import functional, tables


class Requantize(nn.Module):
    """JPEG round trip with explicit tables. ``(..., 3 or 1, H, W)`` in [0, 1] -> same shape.

    Args:
        luma_table: ``(8, 8)`` steps >= 1; chroma_table: defaults to ``luma_table``.
        subsampling, backward, backend, validate, color: as in :func:`fdgpu.requantize` (``color="rgb"`` codes
            R, G, B each with ``luma_table``; a ``chroma_table`` is then rejected).
    """

    def __init__(self, luma_table, chroma_table=None, subsampling: str = "4:2:0", backward: str = "ste",
                 backend: str = "auto", validate: bool = True, color: str = "ycbcr"):
        super().__init__()
        functional._check_choice("color", color, functional.COLORS)
        if color == "rgb" and chroma_table is not None:
            raise ValueError("chroma_table: expected None with color='rgb' (every RGB channel uses luma_table), "
                             "got a table")
        functional._check_choice("subsampling", subsampling, functional.SUBSAMPLINGS)
        functional._check_choice("backward", backward, functional.BACKWARDS)
        functional._check_choice("backend", backend, functional.BACKENDS)
        lt = functional._check_table("luma_table", torch.as_tensor(luma_table, dtype=torch.float32), 1, True)
        ct = lt if chroma_table is None else functional._check_table(
            "chroma_table", torch.as_tensor(chroma_table, dtype=torch.float32), 1, True)
        self.register_buffer("luma_table", lt.clone())
        self.register_buffer("chroma_table", ct.clone())
        self.subsampling, self.backward, self.backend, self.validate = subsampling, backward, backend, validate
        self.color = color

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.requantize(x, self.luma_table, None if self.color == "rgb" else self.chroma_table,
                                     subsampling=self.subsampling, backward=self.backward, backend=self.backend,
                                     validate=self.validate, color=self.color)

    def extra_repr(self) -> str:
        text = f"subsampling={self.subsampling!r}, backward={self.backward!r}, backend={self.backend!r}"
        return text + (", color='rgb'" if self.color == "rgb" else "")


class JPEG(Requantize):
    """JPEG round trip at an IJG ``quality`` in [1, 100] (as Pillow saves). See :func:`fdgpu.jpeg`.

    Example:
        >>> import torch, fdgpu
        >>> fdgpu.JPEG(quality=50)(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, quality: float = 75, subsampling: str = "4:2:0", backward: str = "ste",
                 backend: str = "auto", validate: bool = True):
        if isinstance(quality, torch.Tensor) and quality.dim() > 0:
            raise ValueError(f"quality: expected one number for the module, got shape {tuple(quality.shape)}; "
                             f"use fdgpu.jpeg(x, quality_tensor) for per-image qualities")
        luma, chroma = tables.ijg(quality)
        super().__init__(luma, chroma, subsampling, backward, backend, validate)
        self.quality = float(quality)

    def extra_repr(self) -> str:
        return f"quality={self.quality:g}, " + super().extra_repr()


class FDJpeg(Requantize):
    """Feature Distillation JPEG (Liu et al. 2019) with ``strength`` (1, 2, 3 = FD 1x/2x/3x).
    See :func:`fdgpu.feature_distillation`; ``variant="official"`` is the authors' public code's table on each RGB
    channel (``subsampling`` unused).

    Example:
        >>> import torch, fdgpu
        >>> fdgpu.FDJpeg(strength=1.0)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, strength: float = 1.0, subsampling: str = "4:2:0", backward: str = "ste",
                 backend: str = "auto", validate: bool = True, variant: str = "paper"):
        strength = functional.check_strength(strength)
        table = tables.fd(strength, variant=variant)
        official = variant == "official"
        super().__init__(table, None if official else table, subsampling, backward, backend, validate,
                         color="rgb" if official else "ycbcr")
        self.strength, self.variant = strength, variant

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}, variant={self.variant!r}, " + super().extra_repr()

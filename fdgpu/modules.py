"""``nn.Module`` wrappers of the functional API.

Fixed tables are buffers (they move with ``.to()`` and are saved in ``state_dict``). With ``learnable=True`` the
tables (:class:`Requantize`, :class:`FDJpeg`) or the quality (:class:`JPEG`) are an ``nn.Parameter``.
Parameterisation: the parameter holds the quantity itself (steps, or the IJG quality), so an initial value and a
``state_dict`` are exact; the forward uses it clamped to its range ([1, 255] for steps, [1, 100] for quality) with a
straight-through gradient, so the values used always stay in range and a parameter pushed past a bound still gets
the gradient that brings it back. Call :meth:`Requantize.tables` for the steps actually used.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from . import functional, tables
from ._checks import (check_choice, check_learnable, check_quality, check_strength, check_table, check_values, minmax,
                      table_error)
from .choices import BACKENDS, BACKWARD_MODES, COLORS, SUBSAMPLINGS

STEP_RANGE = (1.0, 255.0)      # baseline JPEG's 8-bit quantization steps
QUALITY_RANGE = (1.0, 100.0)   # libjpeg's quality range


def _clamp_st(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``clamp(v, lo, hi)`` in the forward, the identity in the backward."""
    return v + (v.clamp(lo, hi) - v).detach()


def _module_table(name: str, t) -> torch.Tensor:
    t = check_table(name, t, 1)
    t = t.detach().to(torch.float32)
    if t.device.type != "meta":
        check_values([(t, minmax, table_error(name))])
    return t.clone()


class Requantize(nn.Module):
    """JPEG round trip with explicit tables. ``(..., 3 or 1, H, W)`` in [0, 1] -> same shape.

    Args:
        luma_table: ``(8, 8)`` steps >= 1; chroma_table: defaults to ``luma_table``.
        subsampling, backward, backend, validate, color: as in :func:`fdgpu.requantize` (``color="rgb"`` codes
            R, G, B each with ``luma_table``; a ``chroma_table`` is then rejected).
        learnable: hold the tables as ``nn.Parameter`` (``luma_table``, ``chroma_table``), used clamped to
            [1, 255] with a straight-through gradient (see the module docstring). Their gradients follow the
            backward mode (:mod:`fdgpu.autograd`): ``ste`` and ``soft`` give one, ``bpda`` none.

    Examples:
        >>> import torch, fdgpu
        >>> m = fdgpu.Requantize(fdgpu.tables.fd(1.0), learnable=True)
        >>> m(torch.rand(2, 3, 16, 16)).mean().backward()
        >>> m.luma_table.grad.shape
        torch.Size([8, 8])
    """

    def __init__(self, luma_table, chroma_table=None, subsampling: str = "4:2:0", backward: str = "ste",
                 backend: str = "auto", validate: bool = True, color: str = "ycbcr", learnable: bool = False):
        super().__init__()
        check_choice("color", color, COLORS)
        if color == "rgb" and chroma_table is not None:
            raise ValueError("chroma_table: expected None with color='rgb' (every RGB channel uses luma_table), "
                             "got a table")
        check_choice("subsampling", subsampling, SUBSAMPLINGS)
        check_choice("backward", backward, BACKWARD_MODES)
        check_choice("backend", backend, BACKENDS)
        self.learnable = check_learnable(learnable)
        lt = _module_table("luma_table", luma_table)
        ct = lt.clone() if chroma_table is None else _module_table("chroma_table", chroma_table)
        self._set_tables(lt, ct)
        self.subsampling, self.backward, self.backend, self.validate = subsampling, backward, backend, validate
        self.color = color

    def _set_tables(self, lt: torch.Tensor, ct: torch.Tensor) -> None:
        if self.learnable:
            self.luma_table = nn.Parameter(lt)
            self.chroma_table = nn.Parameter(ct)
        else:
            self.register_buffer("luma_table", lt)
            self.register_buffer("chroma_table", ct)

    def tables(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``(luma, chroma)`` steps the forward uses: the buffers, or the parameters clamped to [1, 255]."""
        if self.learnable:
            return _clamp_st(self.luma_table, *STEP_RANGE), _clamp_st(self.chroma_table, *STEP_RANGE)
        return self.luma_table, self.chroma_table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        luma, chroma = self.tables()
        # learnable tables are in range by construction: only x is value-checked then
        return functional._requantize(x, luma, None if self.color == "rgb" else chroma, self.subsampling,
                                      self.backward, self.backend, self.validate, table_checks=not self.learnable,
                                      color=self.color)

    def extra_repr(self) -> str:
        s = f"subsampling={self.subsampling!r}, backward={self.backward!r}, backend={self.backend!r}"
        return s + (", color='rgb'" if self.color == "rgb" else "") + (", learnable=True" if self.learnable else "")


def _scalar(v: torch.Tensor) -> str:
    return "?" if v.device.type == "meta" else f"{float(v.detach()):g}"


class JPEG(Requantize):
    """JPEG round trip at an IJG ``quality`` in [1, 100] (as Pillow saves). See :func:`fdgpu.jpeg`.

    The quality is part of the state (``state_dict()["quality"]``), so a loaded state and the repr agree. With
    ``learnable=True`` the quality is an ``nn.Parameter``, used clamped to [1, 100] with a straight-through
    gradient, and the tables are derived from it on every call (:func:`fdgpu.tables.ijg`, straight-through floors
    and clamps), so ``quality.grad`` is the gradient of the loss through the IJG scaling.

    Examples:
        >>> import torch, fdgpu
        >>> fdgpu.JPEG(quality=50)(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
        >>> m = fdgpu.JPEG(quality=50, learnable=True)
        >>> m(torch.rand(1, 3, 16, 16)).mean().backward()
        >>> m.quality.grad.shape
        torch.Size([])
    """

    def __init__(self, quality: float = 75, subsampling: str = "4:2:0", backward: str = "ste",
                 backend: str = "auto", validate: bool = True, learnable: bool = False):
        if isinstance(quality, torch.Tensor) and quality.dim() > 0:
            raise ValueError(f"quality: expected one number for the module, got shape {tuple(quality.shape)}; "
                             f"use fdgpu.jpeg(x, quality_tensor) for per-image qualities")
        q = check_quality(quality).detach().to(torch.float32).clone()
        check_learnable(learnable)
        luma, chroma = tables.ijg(quality)
        super().__init__(luma, chroma, subsampling, backward, backend, validate)
        if learnable:  # the tables are derived from the quality: they are no longer state
            self.learnable = True
            del self.luma_table, self.chroma_table
            self.quality = nn.Parameter(q)
        else:
            self.register_buffer("quality", q)

    def tables(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.learnable:
            return tables._ijg(_clamp_st(self.quality, *QUALITY_RANGE))
        return self.luma_table, self.chroma_table

    def extra_repr(self) -> str:
        return f"quality={_scalar(self.quality)}, " + super().extra_repr()


class FDJpeg(Requantize):
    """Feature Distillation JPEG (Liu et al. 2019) with ``strength`` (1, 2, 3 = FD 1x/2x/3x).
    See :func:`fdgpu.feature_distillation`; ``variant="official"`` is the authors' public code's table on each RGB
    channel (``subsampling`` unused). ``learnable=True`` makes the tables parameters initialised at
    ``fdgpu.tables.fd(strength, variant)`` (as :class:`Requantize`). The strength is part of the state.

    Examples:
        >>> import torch, fdgpu
        >>> fdgpu.FDJpeg(strength=1.0)(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    strength: torch.Tensor

    def __init__(self, strength: float = 1.0, subsampling: str = "4:2:0", backward: str = "ste",
                 backend: str = "auto", validate: bool = True, variant: str = "paper", learnable: bool = False):
        strength = check_strength(strength)
        table = tables.fd(strength, variant=variant)
        official = variant == "official"
        super().__init__(table, None if official else table, subsampling, backward, backend, validate,
                         color="rgb" if official else "ycbcr", learnable=learnable)
        self.variant = variant
        self.register_buffer("strength", torch.tensor(strength, dtype=torch.float32))

    def extra_repr(self) -> str:
        return f"strength={_scalar(self.strength)}, variant={self.variant!r}, " + super().extra_repr()

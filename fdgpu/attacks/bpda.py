"""Backward Pass Differentiable Approximation (Athalye, Carlini & Wagner, ICML 2018).

Wrap any preprocessing ``f`` (non-differentiable, or with useless gradients) so that its forward output is exactly
``f(x)`` while its backward pass is that of a substitute ``g`` (identity by default: ``g(x) = x``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

Fn = Callable[[torch.Tensor], torch.Tensor]


class _Through(torch.autograd.Function):
    """Forward: ``value`` exactly; backward: the incoming gradient goes to ``through`` unchanged (none to ``value``)."""

    @staticmethod
    def forward(ctx, through: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class BPDA(nn.Module):
    """``forward(x) = f(x)`` (no graph through ``f``), ``d/dx = d g(x)/dx``.

    The value is exactly ``f(x)`` (cast to the dtype of ``g(x)``) and the gradient exactly ``g``'s: a small
    ``autograd.Function`` hands the incoming gradient to ``g(x)``'s graph. It runs on any device. The baselines of
    :mod:`fdgpu.defences` (quilting, TVM) are put in front of a classifier with it.

    Args:
        forward_fn: the preprocessing ``f``: ``(B, C, H, W) -> (B, C, H, W)`` (same shape as ``g(x)``); it is
            called under ``torch.no_grad()``, so it may be a numpy/PIL round trip wrapped in tensors.
        substitute: the differentiable ``g``; ``None`` means identity (``g(x) = x``, the usual BPDA).

    Examples:
        >>> quantize = BPDA(lambda x: torch.round(x * 4) / 4)
        >>> x = torch.rand(2, 3, 8, 8, requires_grad=True)
        >>> quantize(x).sum().backward()
        >>> bool((x.grad == 1).all())
        True
    """

    def __init__(self, forward_fn: Fn, substitute: Optional[Fn] = None):
        super().__init__()
        if not callable(forward_fn):
            raise TypeError(f"forward_fn: expected a callable (B, C, H, W) -> same, got {type(forward_fn).__name__}")
        if substitute is not None and not callable(substitute):
            raise TypeError(f"substitute: expected a callable or None (identity), got {type(substitute).__name__}")
        self.forward_fn = forward_fn
        self.substitute = substitute

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = self.forward_fn(x.detach())
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"forward_fn: expected it to return a tensor, got {type(out).__name__}")
        g = x if self.substitute is None else self.substitute(x)
        if out.shape != g.shape:
            raise ValueError(f"expected forward_fn(x) and the substitute to have one shape, got {tuple(out.shape)} "
                             f"and {tuple(g.shape)}")
        if not torch.is_grad_enabled() or not g.requires_grad:
            return out.to(x.dtype)
        return _Through.apply(g, out.to(g.dtype))

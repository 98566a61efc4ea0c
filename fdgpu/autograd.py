"""``torch.autograd.Function`` for the JPEG round trip: the backward modes live here.

Modes (the forward output is identical in all of them):

* ``"exact"``: not a Function at all: the reference forward is run under autograd, so rounding's zero derivative
  makes the gradient zero (almost) everywhere. It exists to show gradient masking.
* ``"ste"``: every rounding and clamp passes the gradient straight through: ``grad_x = L^T grad_y``.
* ``"soft"``: coefficient rounding gets the derivative ``3 (z - round z)^2`` of the surrogate
  ``round(z) + (z - round z)^3`` (Shin & Song 2017); every other rounding and clamp is straight-through.
* ``"bpda"``: the layer is the identity in backward (Athalye et al. 2018): ``grad_x = grad_y``.
"""
from __future__ import annotations

import torch


class JPEGFunction(torch.autograd.Function):
    """``y = JPEG(x)`` with a chosen surrogate backward. ``impl`` is a backend module with the mirrored pair
    ``forward(x, luma_table, chroma_table, subsampling, need_weight) -> (y, saved)`` and
    ``backward(grad, saved, subsampling) -> grad_x`` (``fdgpu.reference`` or ``fdgpu.kernels``). ``saved`` is
    whatever tuple of tensors (entries may be None) ``forward`` returned when ``need_weight`` is set (soft mode),
    and None otherwise (ste)."""

    @staticmethod
    def forward(ctx, x, luma_table, chroma_table, subsampling, mode, impl):
        y, saved = impl.forward(x, luma_table, chroma_table, subsampling, need_weight=(mode == "soft"))
        ctx.mode, ctx.subsampling, ctx.impl = mode, subsampling, impl
        if mode == "soft":
            ctx.has = tuple(t is not None for t in saved)
            ctx.save_for_backward(*[t for t in saved if t is not None])
        return y

    @staticmethod
    def backward(ctx, grad):
        if ctx.mode == "bpda":
            return grad, None, None, None, None, None
        saved = None  # "ste": the backward is the fixed linear map L^T and needs nothing from the forward
        if ctx.mode == "soft":
            it = iter(ctx.saved_tensors)
            saved = tuple(next(it) if h else None for h in ctx.has)
        grad_x = ctx.impl.backward(grad.contiguous(), saved, ctx.subsampling)
        return grad_x, None, None, None, None, None

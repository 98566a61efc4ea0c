"""The backward modes of the JPEG round trip: the autograd formula that :mod:`fdgpu.ops` registers for the
``fdgpu::jpeg`` custom op (``torch.library.register_autograd``).

Modes (the forward output is identical in all of them):

* ``"exact"``: autograd of the torch reference forward as computed, run inside the ``fdgpu::jpeg_backward`` op.
  Rounding's zero derivative makes the gradient zero (almost) everywhere, for ``x``, tables and quality alike. It
  exists to show gradient masking.
* ``"ste"``: every rounding and clamp passes the gradient straight through: ``grad_x = L^T grad_y``. Tables get
  the LSQ straight-through estimate (Esser et al. 2020) of ``c' = Q round(c / Q)``: ``dc'/dQ = round(c/Q) - c/Q``.
* ``"soft"``: coefficient rounding is differentiated as the surrogate ``Q (r + (z - r)^3)``, ``z = c / Q``,
  ``r = round z`` held constant (Shin & Song 2017): ``dc'/dc = 3 (z - r)^2`` and
  ``dc'/dQ = r + (z - r)^3 - 3 (z - r)^2 z``; every other rounding and clamp is straight-through.
* ``"bpda"``: the layer is the identity in backward (Athalye et al. 2018): ``grad_x = grad_y``. The tables (and a
  quality) are constants of that identity: they get no gradient (``None``).

A table's gradient has its shape: an ``(8, 8)`` table shared by the batch sums over the images, ``(B, 8, 8)``
per-image tables get per-image gradients. A quality tensor is differentiated through the IJG scaling with
straight-through floors and clamps (:func:`fdgpu.tables.ijg`).
"""
from __future__ import annotations

import torch

from .choices import BACKWARD_MODES


def setup_context(ctx, inputs, output):
    x, luma_table, chroma_table, subsampling, backend, mode = inputs[:6]
    _, state_luma, state_chroma = output
    ctx.mark_non_differentiable(state_luma, state_chroma)
    # the states get no gradient: without this, autograd would fill a zero tensor of each state's size for the
    # backward (with soft on 32 x 224^2, 10 MB of zeros per call, an OpenMP region that stalls under load)
    ctx.set_materialize_grads(False)
    ctx.subsampling, ctx.backend, ctx.mode = subsampling, backend, mode
    if BACKWARD_MODES[mode].kind != "identity":
        ctx.save_for_backward(x, luma_table, chroma_table, state_luma, state_chroma)


def backward(ctx, grad, _grad_state_luma, _grad_state_chroma):
    need_x, need_luma, need_chroma = ctx.needs_input_grad[:3]
    if grad is None:  # (gradients are not materialized) nothing flowed into y
        return None, None, None, None, None, None, None
    if BACKWARD_MODES[ctx.mode].kind == "identity":  # tables are constants of an identity: no gradient
        return (grad if need_x else None,) + (None,) * (len(ctx.needs_input_grad) - 1)
    x, luma_table, chroma_table, state_luma, state_chroma = ctx.saved_tensors
    gx, gl, gc = torch.ops.fdgpu.jpeg_backward(grad.contiguous(), x, luma_table, chroma_table, state_luma,
                                               state_chroma, ctx.subsampling, ctx.backend, ctx.mode,
                                               bool(need_luma or need_chroma))
    return (gx if need_x else None, gl if need_luma else None, gc if need_chroma else None) + \
        (None,) * (len(ctx.needs_input_grad) - 3)

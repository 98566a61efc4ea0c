"""``torch.library`` custom ops: the rung between the backends and :mod:`fdgpu.functional`.

``fdgpu::jpeg`` (the round trip) and ``fdgpu::jpeg_backward`` (its vector-Jacobian product in every backward mode)
are custom ops with fake (meta) kernels, and ``fdgpu::jpeg`` has its backward registered with
``torch.library.register_autograd``. torch.compile and ``torch.export`` therefore see one op per call, trace no
Python inside the codec (no graph breaks, no data-dependent shapes), and meta/fake tensors get shapes without
running anything. Neither op synchronises with the host, so both can be captured in a CUDA graph.

Both ops take checked, contiguous, same-device tensors (validation happens once, in :mod:`fdgpu.functional`):

* ``jpeg(x, luma_table, chroma_table, subsampling, backend, mode, save) -> (y, state_luma, state_chroma)``:
  ``x`` ``(N, C, H, W)``, tables ``(8, 8)`` or ``(N, 8, 8)``. ``save`` asks the torch backend to return the
  quotients ``z = c / Q`` that the ``ste``/``soft`` backward needs (``(N, 1, 64, ...)`` and ``(N, 2, 64, ...)``);
  otherwise, and on the Triton backend (whose kernels recompute from ``x``), the states are empty ``(0,)``.
  ``mode`` is carried for the backward (the forward is the same in every mode).
* ``jpeg_backward(grad, x, luma_table, chroma_table, state_luma, state_chroma, subsampling, backend, mode,
  table_grads) -> (grad_x, grad_luma, grad_chroma)``, each shaped like its input; the table gradients are zeros
  unless ``table_grads``.

Backward modes (:mod:`fdgpu.autograd` documents them): ``exact`` is autograd of the torch reference forward,
run inside ``jpeg_backward``; ``bpda`` passes ``grad`` through and gives tables no gradient (they are constants of
an identity backward); ``ste`` and ``soft`` are the reference's (or the kernels') explicit adjoints, table
gradients included (the kernels reduce them per image without atomics: deterministic). The mode reaches the
backends as its name: a further surrogate gradient is a new mode string, not a new flag.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import autograd, reference
from .choices import BACKWARDS
from .reference.jpeg import Geometry

BACKENDS = ("torch", "triton")
MODES = BACKWARDS  # the backward modes the ops take: fdgpu.choices.BACKWARDS

_EMPTY_SHAPE = (0,)


def _kernels():
    from . import kernels  # Triton is imported only when the Triton backend is used
    return kernels


def state_shapes(x_shape, subsampling: str):
    """Shapes of the saved quotients for an ``(N, C, H, W)`` input: luma ``(N, 1, 64, Hp/8, Wp/8)`` and chroma
    ``(N, 2, 64, Hp/8/vs, Wp/8/hs)`` (``(0,)`` for grayscale)."""
    n, ch, h, w = x_shape
    g = Geometry.of(h, w, ch, subsampling)
    luma = (n, 1, 64, g.hp // 8, g.wp // 8)
    chroma = (n, 2, 64, g.hp // 8 // g.vs, g.wp // 8 // g.hs) if ch == 3 else _EMPTY_SHAPE
    return luma, chroma


def _empty(x: Tensor) -> Tensor:
    return x.new_empty(_EMPTY_SHAPE)


@torch.library.custom_op("fdgpu::jpeg", mutates_args=())
def jpeg(x: Tensor, luma_table: Tensor, chroma_table: Tensor, subsampling: str, backend: str, mode: str,
         save: bool) -> Tuple[Tensor, Tensor, Tensor]:
    if backend == "triton":
        return _kernels().forward(x, luma_table, chroma_table, subsampling), _empty(x), _empty(x)
    y, state = reference.forward(x, luma_table, chroma_table, subsampling, need_weight=save)
    if not save:
        return y, _empty(x), _empty(x)
    zy, zc = state
    return y, zy.to(x.dtype), (zc.to(x.dtype) if zc is not None else _empty(x))


@jpeg.register_fake
def _jpeg_fake(x, luma_table, chroma_table, subsampling, backend, mode, save):
    if backend == "triton" or not save:
        return torch.empty_like(x), _empty(x), _empty(x)
    sy, sc = state_shapes(x.shape, subsampling)
    return torch.empty_like(x), x.new_empty(sy), x.new_empty(sc)


@torch.library.custom_op("fdgpu::jpeg_backward", mutates_args=())
def jpeg_backward(grad: Tensor, x: Tensor, luma_table: Tensor, chroma_table: Tensor, state_luma: Tensor,
                  state_chroma: Tensor, subsampling: str, backend: str, mode: str,
                  table_grads: bool) -> Tuple[Tensor, Tensor, Tensor]:
    if mode == "bpda":
        return grad.clone(), torch.zeros_like(luma_table), torch.zeros_like(chroma_table)
    if mode == "exact":
        return _exact_backward(grad, x, luma_table, chroma_table, subsampling, table_grads)
    if backend == "triton":
        gx, gl, gc = _kernels().backward(grad, x, luma_table, chroma_table, subsampling, mode, table_grads)
        if not table_grads:
            return gx, torch.zeros_like(luma_table), torch.zeros_like(chroma_table)
        return gx, gl, gc
    state = (state_luma if state_luma.numel() else None, state_chroma if state_chroma.numel() else None)
    if state[0] is None and (mode == "soft" or table_grads):  # not saved by the forward (x only) : recompute
        state = reference.forward(x, luma_table, chroma_table, subsampling, need_weight=True)[1]
    if not table_grads:
        gx = reference.backward(grad, state if mode == "soft" else None, subsampling, mode)
        return gx, torch.zeros_like(luma_table), torch.zeros_like(chroma_table)
    gx, gl, gc = reference.backward(grad, state, subsampling, mode, (luma_table, chroma_table))
    return gx, gl.contiguous(), gc.contiguous()


def _exact_backward(grad, x, luma_table, chroma_table, subsampling, table_grads):
    # "exact" is autograd of the forward as computed (rounding's derivative is zero): run the torch reference
    # forward under autograd here, inside the op, so that compiled graphs see one opaque op.
    with torch.enable_grad():
        xs = x.detach().requires_grad_()
        lt = luma_table.detach().requires_grad_(table_grads)
        ct = chroma_table.detach().requires_grad_(table_grads)
        y = reference.forward(xs, lt, ct, subsampling)[0]
        inputs = (xs, lt, ct) if table_grads else (xs,)
        grads = torch.autograd.grad(y, inputs, grad, allow_unused=True) if y.requires_grad else (None,) * 3
    out = [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, inputs)]
    out += [torch.zeros_like(t) for t in (xs, lt, ct)[len(out):]]
    return out[0], out[1], out[2]


@jpeg_backward.register_fake
def _jpeg_backward_fake(grad, x, luma_table, chroma_table, state_luma, state_chroma, subsampling, backend, mode,
                        table_grads):
    return torch.empty_like(x), torch.empty_like(luma_table), torch.empty_like(chroma_table)


jpeg.register_autograd(autograd.backward, setup_context=autograd.setup_context)

"""``torch.library`` custom ops: the rung between the backends and :mod:`fdgpu.functional`.

``fdgpu::jpeg`` (the round trip) and ``fdgpu::jpeg_backward`` (its vector-Jacobian product in every backward mode)
are custom ops with fake (meta) kernels, and ``fdgpu::jpeg`` has its backward registered with
``torch.library.register_autograd``. torch.compile and ``torch.export`` therefore see one op per call, trace no
Python inside the codec (no graph breaks, no data-dependent shapes), and meta/fake tensors get shapes without
running anything. Neither op synchronises with the host, so both can be captured in a CUDA graph.

Both ops take checked, contiguous, same-device tensors (validation happens once, in :mod:`fdgpu.functional`):

* ``jpeg(x, luma_table, chroma_table, subsampling, backend, mode, save) -> (y, state_luma, state_chroma)``:
  ``x`` ``(N, C, H, W)``, tables ``(8, 8)`` or ``(N, 8, 8)``, ``backend`` a resolved name of
  :data:`fdgpu.backends.REGISTRY` (the op dispatches to that :class:`fdgpu.backends.Backend`). ``save`` asks the
  backend to return the quotients ``z = c / Q`` that the ``ste``/``soft`` backward needs (``(N, 1, 64, ...)`` and
  ``(N, 2, 64, ...)``); otherwise, and on a backend that does not save them (Triton's kernels recompute from
  ``x``), the states are empty ``(0,)``.
  ``mode`` is carried for the backward (the forward is the same in every mode).
* ``jpeg_backward(grad, x, luma_table, chroma_table, state_luma, state_chroma, subsampling, backend, mode,
  table_grads) -> (grad_x, grad_luma, grad_chroma)``, each shaped like its input; the table gradients are zeros
  unless ``table_grads``.

Backward modes (:mod:`fdgpu.autograd` documents them): ``exact`` is autograd of the torch reference forward,
run inside ``jpeg_backward`` for every backend; ``bpda`` passes ``grad`` through and gives tables no gradient
(they are constants of an identity backward); ``ste`` and ``soft`` are the backend's ``backward`` (explicit
adjoints, table gradients included). The mode reaches the
backends as its name: a further surrogate gradient is a new mode string, not a new flag.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from . import autograd, backends, reference
from ._checks import check_values, minmax, x_error
from .choices import BACKWARD_MODES, BACKWARDS
from .reference.jpeg import Geometry

BACKENDS = tuple(backends.REGISTRY)  # the (resolved) backend names the ops take: fdgpu.backends.REGISTRY
MODES = BACKWARDS  # the backward modes the ops take: fdgpu.choices.BACKWARDS

_EMPTY_SHAPE = (0,)


def state_shapes(x_shape, subsampling: str):
    """Shapes of the saved quotients for an ``(N, C, H, W)`` input: luma ``(N, 1, 64, Hp/8, Wp/8)`` and chroma
    ``(N, 2, 64, Hp/8/vs, Wp/8/hs)`` (``(0,)`` for grayscale)."""
    n, ch, h, w = x_shape
    g = Geometry.of(h, w, ch, subsampling)
    luma = (n, 1, 64, g.hp // 8, g.wp // 8)
    chroma = (n, 2, 64, g.hp // 8 // g.vs, g.wp // 8 // g.hs) if ch == 3 else _EMPTY_SHAPE
    return luma, chroma


def _cpu():
    from .backends import cpu
    return cpu


def _kernels():
    from . import kernels  # Triton is imported only when the Triton backend is used
    return kernels


def _empty(x: Tensor) -> Tensor:
    return x.new_empty(_EMPTY_SHAPE)


def _check(x: Tensor, luma_table: Tensor, chroma_table: Tensor, subsampling: str, grad=None, states=None) -> None:
    """The ops' own shape checks (no value is read), whatever the caller: no backend is given a batch that is not
    ``(N >= 1, 1 or 3, H >= 1, W >= 1)``, tables of another shape or device, or (backward) a gradient or saved state
    of another shape (a kernel or the C library would read or write past a buffer)."""
    ref = reference.jpeg
    ref.check_input("x", x, subsampling)
    ref.check_tables(x, luma_table, chroma_table)
    if grad is not None:
        if grad.shape != x.shape:
            raise ValueError(f"grad: expected the shape of x {tuple(x.shape)}, got {tuple(grad.shape)}")
        ref.check_state(x, tuple(s if s.numel() else None for s in states), subsampling)


@torch.library.custom_op("fdgpu::jpeg", mutates_args=())
def jpeg(x: Tensor, luma_table: Tensor, chroma_table: Tensor, subsampling: str, backend: str, mode: str,
         save: bool, validate: bool = False) -> Tuple[Tensor, Tensor, Tensor]:
    _check(x, luma_table, chroma_table, subsampling)
    impl = backends.get(backend)
    y, zy, zc = _forward(impl, x, luma_table, chroma_table, subsampling, save and impl.saves_state, validate)
    return y, (zy.to(x.dtype) if zy is not None else _empty(x)), (zc.to(x.dtype) if zc is not None else _empty(x))


def _forward(impl, x, luma_table, chroma_table, subsampling, save, validate):
    # validate: x's value checks (validate=True's), in the backend's own read of x where it does them
    if validate and impl.checks_input:
        return impl.forward(x, luma_table, chroma_table, subsampling, save, validate=True)
    if validate:
        check_values([(x, minmax, x_error)])
    return impl.forward(x, luma_table, chroma_table, subsampling, save)


@jpeg.register_fake
def _jpeg_fake(x, luma_table, chroma_table, subsampling, backend, mode, save, validate=False):
    _check(x, luma_table, chroma_table, subsampling)
    if not (save and backends.get(backend).saves_state):
        return torch.empty_like(x), _empty(x), _empty(x)
    sy, sc = state_shapes(x.shape, subsampling)
    return torch.empty_like(x), x.new_empty(sy), x.new_empty(sc)


@torch.library.custom_op("fdgpu::jpeg_backward", mutates_args=())
def jpeg_backward(grad: Tensor, x: Tensor, luma_table: Tensor, chroma_table: Tensor, state_luma: Tensor,
                  state_chroma: Tensor, subsampling: str, backend: str, mode: str,
                  table_grads: bool) -> Tuple[Tensor, Tensor, Tensor]:
    _check(x, luma_table, chroma_table, subsampling, grad, (state_luma, state_chroma))
    return _backward(grad, x, luma_table, chroma_table, state_luma, state_chroma, subsampling, backend, mode,
                     table_grads)


def _backward(grad, x, luma_table, chroma_table, state_luma, state_chroma, subsampling, backend, mode, table_grads,
              zeros: bool = True):
    # the body of jpeg_backward, after its shape checks; without ``zeros`` (eager callers that drop them) the table
    # gradients not asked for are None instead of zero tensors
    kind = BACKWARD_MODES[mode].kind
    if kind == "identity":
        return grad.clone(), torch.zeros_like(luma_table), torch.zeros_like(chroma_table)
    if kind == "autograd":  # the same for every backend: autograd of the torch reference's forward
        return _exact_backward(grad, x, luma_table, chroma_table, subsampling, table_grads)
    state = tuple(s if s is not None and s.numel() else None for s in (state_luma, state_chroma))
    gx, gl, gc = backends.get(backend).backward(grad, x, luma_table, chroma_table, state, subsampling, mode,
                                                table_grads)
    if not table_grads:
        return (gx, torch.zeros_like(luma_table), torch.zeros_like(chroma_table)) if zeros else (gx, None, None)
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
    _check(x, luma_table, chroma_table, subsampling, grad, (state_luma, state_chroma))
    return torch.empty_like(x), torch.empty_like(luma_table), torch.empty_like(chroma_table)


jpeg.register_autograd(autograd.backward, setup_context=autograd.setup_context)


def _plain(*tensors: Tensor) -> bool:
    """Eager mode with nothing to trace: plain tensors (no subclass such as a fake tensor), no torch function or
    dispatch mode, no functorch transform, not compiling."""
    # (is_compiling first: dynamo folds it to True and traces nothing else of the condition)
    return (not torch.compiler.is_compiling() and all(type(t) is Tensor for t in tensors)
            and not torch._C._len_torch_function_stack() and not torch._C._len_torch_dispatch_stack()
            and torch._C._functorch.peek_interpreter_stack() is None)


def jpeg_output(x: Tensor, luma_table: Tensor, chroma_table: Tensor, subsampling: str, backend: str, mode: str,
                save: bool, validate: bool = False) -> Tensor:
    """The round trip ``y`` of :func:`jpeg` (its first output), as :mod:`fdgpu.functional` calls it.

    In eager mode with nothing to trace (:func:`_plain`), the op's body runs without the dispatcher's layers (the
    custom op's autograd wrapper, its argument normalisation and the redispatch to its CPU/CUDA kernel: about half
    the host time of a 32x32 image's call with a backward): the backend's forward directly when autograd records
    nothing, else :class:`_EagerJpeg`, a plain autograd function with the op's autograd formula whose backward is
    ``jpeg_backward``'s body. Results and gradients are the op's. Otherwise (torch.compile, export, fake tensors,
    functorch, modes) the op itself runs."""
    if not _plain(x, luma_table, chroma_table):
        return jpeg(x, luma_table, chroma_table, subsampling, backend, mode, save, validate)[0]
    if not (torch.is_grad_enabled() and (x.requires_grad or luma_table.requires_grad or chroma_table.requires_grad)):
        if not save:
            return _forward(backends.get(backend), x, luma_table, chroma_table, subsampling, False, validate)[0]
        return jpeg(x, luma_table, chroma_table, subsampling, backend, mode, save, validate)[0]
    return _EagerJpeg.apply(x, luma_table, chroma_table, subsampling, backend, mode, save, validate)


class _EagerJpeg(torch.autograd.Function):
    """``fdgpu::jpeg``'s first output with its registered autograd formula (:mod:`fdgpu.autograd`), for eager
    calls (:func:`jpeg_output`): the same forward, the same saved tensors, the same backward (``jpeg_backward``'s
    body; the op itself where the backward is to be recorded or traced)."""

    @staticmethod
    def forward(ctx, x, luma_table, chroma_table, subsampling, backend, mode, save, validate):
        impl = backends.get(backend)
        y, zy, zc = _forward(impl, x, luma_table, chroma_table, subsampling, save and impl.saves_state, validate)
        ctx.subsampling, ctx.backend, ctx.mode = subsampling, backend, mode
        if BACKWARD_MODES[mode].kind != "identity":  # (no states: None, not empty tensors)
            ctx.save_for_backward(x, luma_table, chroma_table, zy.to(x.dtype) if zy is not None else None,
                                  zc.to(x.dtype) if zc is not None else None)
        return y

    @staticmethod
    def backward(ctx, grad):
        need_x, need_luma, need_chroma = ctx.needs_input_grad[:3]
        rest = (None,) * 5
        if BACKWARD_MODES[ctx.mode].kind == "identity":  # tables are constants of an identity: no gradient
            return (grad if need_x else None, None, None) + rest
        x, luma_table, chroma_table, state_luma, state_chroma = ctx.saved_tensors
        rest_args = (ctx.subsampling, ctx.backend, ctx.mode, bool(need_luma or need_chroma))
        # the body directly (autograd gave grad y's shape); the op where the backward is recorded (create_graph)
        # or traced
        if not torch.is_grad_enabled() and _plain(grad):
            gx, gl, gc = _backward(grad.contiguous(), x, luma_table, chroma_table, state_luma, state_chroma,
                                   *rest_args, zeros=False)
        else:
            gx, gl, gc = jpeg_backward(grad.contiguous(), x, luma_table, chroma_table,
                                       state_luma if state_luma is not None else _empty(x),
                                       state_chroma if state_chroma is not None else _empty(x), *rest_args)
        return (gx if need_x else None, gl if need_luma else None, gc if need_chroma else None) + rest


# ---------------------------------------------------------------- the two halves: fdgpu.encode and fdgpu.decode
# ``encode(x, luma_table, chroma_table, subsampling, backend, mode, save) -> (qy, qc, zy, zc)``: the quantized
# coefficients in the reference's plane layout, luma ``(N, 1, Hp, Wp)`` and chroma ``(N, 2, Hp / vs, Wp / hs)``
# (``(0,)`` for grayscale), in x's dtype, and (``save``) the quotients ``z`` the backward needs.
# ``decode(qy, qc, luma_table, cb_table, cr_table, subsampling, h, w, backend, mode) -> y`` ``(N, C, H, W)``.
# Tables are ``(N, 8, 8)``; ``backend`` is "cpu" (the C library's halves, fdgpu_encode / fdgpu_decode, where they
# apply), "triton" (the kernels' _jpeg_encode_kernel / _jpeg_decode_kernel, float32) or "torch" (the reference's
# stage functions fdgpu.reference.jpeg.encode / decode, which its round trip is made of). The backward is the
# reference's adjoints on every backend.
HALF_MODES = ("exact", "ste", "soft")


def plane_shapes(n: int, ch: int, h: int, w: int, subsampling: str):
    """The MCU-padded coefficient planes of an ``(N, C, H, W)`` image: luma and chroma shapes (chroma ``(0,)``)."""
    g = Geometry.of(h, w, ch, subsampling)
    return (n, 1, g.hp, g.wp), ((n, 2, g.hp // g.vs, g.wp // g.hs) if ch == 3 else _EMPTY_SHAPE)


@torch.library.custom_op("fdgpu::encode", mutates_args=())
def encode(x: Tensor, luma_table: Tensor, chroma_table: Tensor, subsampling: str, backend: str, mode: str,
           save: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    if backend == "triton":  # the kernels compute in float32 (the public layer casts), never saving quotients
        qy, qc = _kernels().encode(x.float(), luma_table, chroma_table, subsampling)
        if save:
            zy, zc = reference.jpeg.encode(x, luma_table, chroma_table, subsampling, need_weight=True)[1]
            return qy.to(x.dtype), qc.to(x.dtype) if qc is not None else _empty(x), zy.to(x.dtype), \
                zc.to(x.dtype) if zc is not None else _empty(x)
        return qy.to(x.dtype), qc.to(x.dtype) if qc is not None else _empty(x), _empty(x), _empty(x)
    # backend "cpu": the C library's half where it applies (no saved quotients, integer steps), as its round trip
    done = _cpu().encode(x, luma_table, chroma_table, subsampling) if backend == "cpu" and not save else None
    if done is not None:
        return done[0], done[1] if done[1] is not None else _empty(x), _empty(x), _empty(x)
    (qy, qc), (zy, zc) = reference.jpeg.encode(x, luma_table, chroma_table, subsampling, need_weight=save)
    qc = qc.to(x.dtype) if qc is not None else _empty(x)
    zy = zy.to(x.dtype) if zy is not None else _empty(x)
    zc = zc.to(x.dtype) if zc is not None else _empty(x)
    return qy.to(x.dtype), qc, zy, zc


@encode.register_fake
def _encode_fake(x, luma_table, chroma_table, subsampling, backend, mode, save):
    sy, sc = plane_shapes(*x.shape, subsampling)
    zy, zc = state_shapes(x.shape, subsampling) if save else (_EMPTY_SHAPE, _EMPTY_SHAPE)
    return x.new_empty(sy), x.new_empty(sc), x.new_empty(zy), x.new_empty(zc)


def _encode_setup(ctx, inputs, output):
    x, luma_table, chroma_table, subsampling, backend, mode, save = inputs
    ctx.mark_non_differentiable(output[2], output[3])
    ctx.subsampling, ctx.mode, ctx.shape = subsampling, mode, tuple(x.shape)
    ctx.save_for_backward(x, luma_table, chroma_table, output[2], output[3])


def _encode_backward(ctx, gqy, gqc, _gzy, _gzc):
    from .reference import jpeg as ref
    from .reference.dct import plane_to_blocks

    x, lt, ct, zy, zc = ctx.saved_tensors
    need_x, need_l, need_c = ctx.needs_input_grad[:3]
    n, ch, h, w = ctx.shape
    if ctx.mode == "exact" or n == 0:  # every output is a rounding: its derivative is zero (or nothing to do)
        return (torch.zeros_like(x) if need_x else None, torch.zeros_like(lt) if need_l else None,
                torch.zeros_like(ct) if need_c else None, None, None, None, None)
    soft, want = ctx.mode == "soft", bool(need_l or need_c)
    if (soft or want) and not zy.numel():  # not saved by the forward: recompute
        zy, zc = ref.encode(x, lt, ct, ctx.subsampling, need_weight=True)[1]
    sy, sc = plane_shapes(n, ch, h, w, ctx.subsampling)
    gqy = gqy if gqy is not None else x.new_zeros(sy)
    g_y, t_y = ref.quantize_adjoint(plane_to_blocks(gqy), zy, lt, soft, want)
    g_c = t_c = None
    if ch == 3:
        gqc = gqc if gqc is not None else x.new_zeros(sc)
        g_c, t_c = ref.quantize_adjoint(plane_to_blocks(gqc), zc, ct, soft, want)
    gx = ref.encode_adjoint(g_y, g_c, ctx.subsampling, h, w) if need_x else None
    gl = ref.table_grad(t_y, lt, n) if need_l else None
    gc = ref.table_grad(t_c, ct, n) if need_c else None
    return gx, gl, gc, None, None, None, None


encode.register_autograd(_encode_backward, setup_context=_encode_setup)


@torch.library.custom_op("fdgpu::decode", mutates_args=())
def decode(qy: Tensor, qc: Tensor, luma_table: Tensor, cb_table: Tensor, cr_table: Tensor, subsampling: str, h: int,
           w: int, backend: str, mode: str) -> Tensor:
    tables = (luma_table, cb_table, cr_table)
    if backend == "triton":  # float32 in the kernels; the levels k / 255 re-derived in qy's dtype
        y = _kernels().decode(qy.float(), qc.float() if qc.dim() == 4 else None, tables, subsampling, h, w)
        return y if qy.dtype == torch.float32 else (y * 255).round_().to(qy.dtype).div_(255)
    # backend "cpu": the C library's half where it applies (integer steps), as its round trip
    done = _cpu().decode(qy, qc if qc.dim() == 4 else None, tables, subsampling, h, w) if backend == "cpu" else None
    if done is not None:
        return done
    return reference.jpeg.decode(qy, qc if qc.dim() == 4 else None, tables, subsampling, h, w, qy.dtype)


@decode.register_fake
def _decode_fake(qy, qc, luma_table, cb_table, cr_table, subsampling, h, w, backend, mode):
    return qy.new_empty(qy.shape[0], 3 if qc.dim() == 4 else 1, h, w)


def _decode_setup(ctx, inputs, output):
    qy, qc, lt, cbt, crt, subsampling, h, w, backend, mode = inputs
    ctx.subsampling, ctx.mode, ctx.size = subsampling, mode, (h, w)
    ctx.save_for_backward(qy, qc, lt, cbt, crt)


def _decode_backward(ctx, grad):
    from .reference import jpeg as ref
    from .reference.dct import blocks_to_plane, plane_to_blocks

    qy, qc, lt, cbt, crt = ctx.saved_tensors
    needs = ctx.needs_input_grad[:5]
    if ctx.mode == "exact" or qy.shape[0] == 0:  # every stage after the inverse DCT's descale rounds: zero
        zeros = [torch.zeros_like(t) if need else None for t, need in zip((qy, qc, lt, cbt, crt), needs)]
        return (*zeros, None, None, None, None, None)
    n = qy.shape[0]
    g_y, g_c = ref.decode_adjoint(grad.contiguous(), ctx.subsampling, qy.shape[-2], qy.shape[-1])
    gqy, t_y = ref.dequantize_adjoint(g_y, plane_to_blocks(qy), lt, needs[2])
    out = [blocks_to_plane(gqy), None, ref.table_grad(t_y, lt, n) if needs[2] else None, None, None]
    if g_c is not None:
        rc = plane_to_blocks(qc)
        g_cb, t_cb = ref.dequantize_adjoint(g_c[:, :1], rc[:, :1], cbt, needs[3])
        g_cr, t_cr = ref.dequantize_adjoint(g_c[:, 1:], rc[:, 1:], crt, needs[4])
        out[1] = blocks_to_plane(torch.cat([g_cb, g_cr], dim=1))
        out[3] = ref.table_grad(t_cb, cbt, n) if needs[3] else None
        out[4] = ref.table_grad(t_cr, crt, n) if needs[4] else None
    return (*out, None, None, None, None, None)


decode.register_autograd(_decode_backward, setup_context=_decode_setup)

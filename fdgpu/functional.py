"""Public functions: validate once at the boundary, resolve the backend, dispatch.

Every function takes ``x`` of shape ``(..., C, H, W)`` (any number of leading dims, including none), C = 3 (RGB)
or 1 (grayscale: luma only), floating point, values in [0, 1], and returns the JPEG round trip of ``x``: same shape,
dtype and device, values on the 1/255 grid: exactly ``levels.to(dtype) / 255`` for the decoded 8-bit ``levels``, as
users convert decoded images. Float16/bfloat16 inputs are computed in float32 and cast back;
float16 holds every k/255 to within 0.07 of a level, but bfloat16 (8 significant bits) cannot hold the 1/255 grid:
its outputs are up to 0.5/255 away from k/255 (``round(255 * y)`` still gives k, only just). Use float32 or float16
where the exact grid matters. A channels_last input gives a channels_last output.
"""
from __future__ import annotations

import math
from typing import Any, Union

import torch

from . import _checks, backends, ops, selfcheck, tables
from ._checks import (as_number, assert_steps, check_choice, check_input, check_quality, check_same_table,
                      check_strength, check_table, check_values, minmax, quality_error, quality_stats, table_error,
                      x_error)
from .choices import BACKENDS, BACKWARD_MODES, COLORS, SUBSAMPLINGS

Number = Union[int, float]


# Built tables per (value, device, dtype): a scalar quality or strength costs no table construction and no
# host-to-device copy after its first call. Plain dicts, not functools.lru_cache (which torch.compile warns about and
# cannot trace); under torch.compile the tables are built in the graph instead (constants that inductor folds).
_TABLE_CACHE: dict = {}
_TABLE_CACHE_SIZE = 256


def _cached(key, build):
    if torch.compiler.is_compiling():
        return build()
    hit = _TABLE_CACHE.get(key)
    if hit is None:
        if len(_TABLE_CACHE) >= _TABLE_CACHE_SIZE:
            _TABLE_CACHE.clear()
        hit = _TABLE_CACHE[key] = build()
    return hit


def _ijg_cached(quality: float, device, dtype):
    # read-only: the pipeline never writes into its tables
    def build():
        return tables._ijg(torch.tensor(quality, dtype=torch.float64, device=device), dtype)
    return _cached(("ijg", quality, device, dtype), build)


def _fd_cached(strength: float, variant: str, device, dtype):
    return _cached(("fd", strength, variant, device, dtype),
                   lambda: tables.fd(strength, variant=variant).to(device=device, dtype=dtype))


def _placed(t: torch.Tensor, device, dtype) -> torch.Tensor:
    # t on device in dtype, contiguous; itself, without a tensor call, when it is already (each call costs a small
    # image ~1 us of host time)
    if t.dtype != dtype or t.device != device:
        t = t.to(device=device, dtype=dtype)
    return t.contiguous()


def _resolve_backend(backend: str, x: torch.Tensor) -> str:
    """The resolved backend name (a key of :data:`fdgpu.backends.REGISTRY`) that :mod:`fdgpu.ops` takes."""
    check_choice("backend", backend, BACKENDS)
    return backends.resolve(backend, x.device)


def requantize(x: torch.Tensor, luma_table, chroma_table=None, *, subsampling: str = "4:2:0",
               backward: str = "ste", backend: str = "auto", validate: bool = True,
               color: str = "ycbcr") -> torch.Tensor:
    """JPEG round trip of ``x`` with explicit quantization tables.

    Args:
        x: ``(..., 3, H, W)`` or ``(..., 1, H, W)`` float in [0, 1]; any H, W >= 1.
        luma_table: ``(8, 8)`` steps >= 1 (natural order), or ``(B, 8, 8)`` with B = the flattened batch size.
        chroma_table: same for Cb and Cr; defaults to ``luma_table``. Unused for grayscale input.
        subsampling: one of ``fdgpu.SUBSAMPLINGS``: "4:4:4", "4:2:2" or "4:2:0" (Pillow's default).
        backward: one of ``fdgpu.BACKWARDS``: "exact", "ste", "soft" or "bpda" (see :mod:`fdgpu.autograd`).
        backend: one of ``fdgpu.choices.BACKENDS``: "auto" (the C library on CPU tensors, Triton on CUDA tensors,
            each when available, else the torch reference; :mod:`fdgpu.backends`), "torch" (the reference, pure
            PyTorch), "cpu" (the C library) or "triton" (the kernels). All give the same forward bits.
        validate: check values (finite, within [0, 1], tables >= 1). On CPU tensors: one host read per call, and
            a ValueError that shows the offending value. On CUDA and under torch.compile: no host sync (a default
            layer can be captured in a CUDA graph and compiled with ``fullgraph=True``): device-side assertions
            (``torch._assert_async``) whose message names the argument but not the value; on CUDA a failed
            check is a device-side assert, reported by the next synchronising call, after which the CUDA context
            is unusable (rerun the call on CPU tensors to see the value). Pass ``False`` once inputs are known
            good to skip the checks' small reductions. Shape and type checks always run.
            Unchecked values are read as a JPEG encoder reads samples, identically in both backends: NaN becomes
            0, and values outside [0, 1] (including +-Inf) are clamped to 0 or 1, before the 8-bit rounding.
            Steps are checked even with ``validate=False``, without a host sync (``torch._assert_async``): a step
            below 1, NaN or infinite raises a RuntimeError naming the table (on CUDA a device-side assertion,
            reported at the next synchronisation, after which the CUDA context is unusable).
        color: "ycbcr" (JPEG: RGB -> YCbCr, chroma subsampled) or "rgb": each of R, G and B coded as its own
            grayscale plane with ``luma_table`` (no colour conversion, no subsampling; ``chroma_table`` and
            ``subsampling`` unused), as the Feature-Distillation authors' public code does. Every backend and
            backward mode supports it (it runs the grayscale pipeline on ``3 x`` the images).

    Returns:
        ``(..., C, H, W)``: same shape, dtype, device and memory format (contiguous or channels_last) as ``x``.

    Examples:
        >>> import torch, fdgpu
        >>> y = fdgpu.requantize(torch.rand(4, 3, 20, 30), fdgpu.tables.fd(1.0))
        >>> y.shape
        torch.Size([4, 3, 20, 30])
    """
    return _requantize(x, luma_table, chroma_table, subsampling, backward, backend, validate, color=color)


def _requantize(x, luma_table, chroma_table, subsampling, backward, backend, validate, extra_checks=(),
                table_checks=True, color="ycbcr", step_checks=True):
    # table_checks: value-check the tables with validate=True; step_checks: also with validate=False (tables given
    # by the caller; tables built here from a checked quality or strength are valid by construction)
    check_input(x)
    check_choice("subsampling", subsampling, SUBSAMPLINGS)
    check_choice("backward", backward, BACKWARD_MODES)
    check_choice("color", color, COLORS)
    *lead, c, h, w = x.shape
    n = math.prod(lead)
    lt = check_table("luma_table", luma_table, n)
    ct = lt if chroma_table is None else check_table("chroma_table", chroma_table, n)
    if color == "rgb" and c == 3:
        # R, G, B as three grayscale images with the luma table: (n, 3, h, w) -> (3n, 1, h, w) and back.
        if chroma_table is not None and chroma_table is not luma_table:
            check_same_table(ct, lt)
        x3 = x.reshape(n * 3, 1, h, w)
        lt3 = lt.repeat_interleave(3, dim=0) if lt.dim() == 3 else lt
        y = _requantize(x3, lt3, None, subsampling, backward, backend, validate, extra_checks,
                        table_checks, step_checks=step_checks).reshape(x.shape)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y
    impl = _resolve_backend(backend, x)
    if impl == "triton":  # the first Triton call on a device checks the kernels there (fdgpu.selfcheck)
        selfcheck.ensure(x.device)
    compute = x.dtype if x.dtype in backends.get(impl).dtypes else torch.float32
    # tables on x's device and the compute dtype: free for tables built by this module (cached per device and
    # dtype) and for module buffers, which .to() moves with the model
    lt = _placed(lt, x.device, compute)
    ct = lt if chroma_table is None else _placed(ct, x.device, compute)
    # x's value checks in the backend's own read of x (the C library: no separate pass over x), on the CPU in eager
    # mode, where the errors show the values
    fused_check = validate and backends.get(impl).checks_input and not _checks.on_device(x.device) and x.numel() > 0
    if validate:  # one host sync for every value check of the call
        checks = [(x, minmax, x_error)]
        if table_checks:
            checks.append((lt, minmax, table_error("luma_table")))
            if chroma_table is not None:
                checks.append((ct, minmax, table_error("chroma_table")))
        if fused_check:
            try:
                check_values(list(extra_checks) + checks[1:])
            except ValueError:  # the error of the checks in their order, as without the fused check of x
                check_values(list(extra_checks) + checks)
                raise
        else:
            check_values(list(extra_checks) + checks)  # a quality first: a bad one makes bad tables
    elif table_checks and step_checks:  # steps even without validation: no host sync, one rule on every backend
        assert_steps("luma_table", lt)
        if chroma_table is not None:
            assert_steps("chroma_table", ct)
    if x.numel() == 0:
        return x.clone()
    xf = x if x.dim() == 4 and x.dtype == compute and x.is_contiguous() else \
        x.reshape(n, c, h, w).to(compute).contiguous()  # (the common case costs no tensor calls)
    tables_grad = lt.requires_grad or ct.requires_grad
    save = BACKWARD_MODES[backward].saves_state(tables_grad)
    save = save and torch.is_grad_enabled() and (x.requires_grad or tables_grad)
    y = ops.jpeg_output(xf, lt, ct, subsampling, impl, backward, save, fused_check)
    if x.dtype == torch.float64 and y.dtype != torch.float64:
        # float32 k / 255 widened is not float64 k / 255: take the level back (255 * fl32(k / 255) rounds to k) and
        # divide in float64, as users do; the gradient passes through (the difference is a constant)
        y = y.to(torch.float64)
        y = y + ((y.detach() * 255).round_().div_(255) - y.detach())
    if y.dtype != x.dtype or y.dim() != x.dim():
        y = y.to(x.dtype).reshape(x.shape)
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        y = y.contiguous(memory_format=torch.channels_last)
    return y


def jpeg(x: torch.Tensor, quality: Union[Number, torch.Tensor] = 75, *, subsampling: str = "4:2:0",
         backward: str = "ste", backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """JPEG round trip at an IJG quality, as Pillow/libjpeg-turbo would save and load ``x``.

    Args:
        x: ``(..., 3 or 1, H, W)`` float in [0, 1].
        quality: a number in [1, 100] (floats, numpy scalars and 0-d tensors allowed) or a ``(B,)`` tensor, one
            per image of the flattened batch.
        subsampling, backward, backend, validate: as in :func:`requantize`.

    Returns:
        same shape, dtype and device as ``x``.

    Examples:
        >>> import torch, fdgpu
        >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> fdgpu.jpeg(x, 50, backward="ste").sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3, 32, 32])
    """
    if not isinstance(quality, torch.Tensor):  # a tensor stays one: reading it would be a host sync
        quality = as_number(quality)
    check_input(x)
    n = math.prod(x.shape[:-3])
    if isinstance(quality, (int, float)) and not isinstance(quality, bool):
        check_quality(quality, as_tensor=False)  # a Python number: checked on the host, no sync
        x_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        luma, chroma = _ijg_cached(float(quality), x.device, x_dtype)
        extra: Any = ()  # the tables of a checked quality need no check
    else:
        q = check_quality(quality, validate=False)
        if q.dim() == 1 and q.shape[0] != n:
            raise ValueError(f"quality: expected one quality per image of the flattened batch ({n}), "
                             f"got {q.shape[0]}")
        luma, chroma = tables._ijg(q.to(x.device), torch.float64 if x.dtype == torch.float64 else torch.float32)
        extra = [(q, quality_stats, quality_error)] if validate else ()
        if not validate and q.device.type != "meta":  # the one quality that gives invalid (NaN) steps, no host sync
            torch._assert_async(q.detach().isnan().logical_not_().all(),
                                "quality: expected numbers (checked even with validate=False), got NaN")
    return _requantize(x, luma, chroma, subsampling, backward, backend, validate, extra, table_checks=False)


def feature_distillation(x: torch.Tensor, strength: Number = 1.0, *, subsampling: str = "4:2:0",
                         backward: str = "ste", backend: str = "auto", validate: bool = True,
                         variant: str = "paper") -> torch.Tensor:
    """Feature Distillation (Liu et al., CVPR 2019).

    ``variant="paper"``: JPEG with the DNN-oriented table :func:`fdgpu.tables.fd` (step ``strength`` on the 15
    lowest frequencies, ``40 * strength`` elsewhere) for Y, Cb and Cr, with ``subsampling``.
    ``variant="official"``: the authors' public code: step ``25 * strength`` on the top-left 4x4, ``30 * strength``
    elsewhere, applied to each RGB channel (``color="rgb"``: no YCbCr, no subsampling; ``subsampling`` unused).

    Args:
        x: ``(..., 3 or 1, H, W)`` float in [0, 1].
        strength: a number >= 1 (numpy scalars and 0-d tensors allowed); 1, 2, 3 are the paper's FD(1x), FD(2x),
            FD(3x). Below 1 the low-frequency steps would be below 1, which no JPEG quantization step is.
        subsampling, backward, backend, validate: as in :func:`requantize`.
        variant: "paper" or "official" (see :func:`fdgpu.tables.fd`).

    Examples:
        >>> import torch, fdgpu
        >>> fdgpu.feature_distillation(torch.rand(3, 16, 16), 2.0).shape
        torch.Size([3, 16, 16])
    """
    check_input(x)
    strength = check_strength(strength)
    check_choice("variant", variant, tables.FD_VARIANTS)
    x_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    table = _fd_cached(strength, variant, x.device, x_dtype)  # valid by construction: no table check
    if variant == "official":
        return _requantize(x, table, None, subsampling, backward, backend, validate, color="rgb", table_checks=False)
    return _requantize(x, table, None, subsampling, backward, backend, validate, table_checks=False)



"""Public functions: validate once at the boundary, resolve the backend, dispatch.

Every function takes ``x`` of shape ``(..., C, H, W)`` (any number of leading dims, including none), C = 3 (RGB)
or 1 (grayscale: luma only), floating point, values in [0, 1], and returns the JPEG round trip of ``x``: same shape,
dtype and device, values on the 1/255 grid. Float16/bfloat16 inputs are computed in float32 and cast back.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Union

import torch

from . import reference, tables
from .autograd import JPEGFunction

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
BACKWARDS = ("exact", "ste", "soft", "bpda")
BACKENDS = ("auto", "torch", "triton")
RANGE_SLACK = 1e-6

Number = Union[int, float]


@functools.lru_cache(maxsize=128)
def _ijg_cached(quality: float):
    # Tables for a scalar quality, built once (read-only: the pipeline never writes into its tables).
    return tables.ijg(quality)


@functools.lru_cache(maxsize=128)
def _fd_cached(strength: float):
    return tables.fd(strength)


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def _check_input(x, validate: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor of shape (..., 3 or 1, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating tensor with values in [0, 1], got dtype {x.dtype}; "
                        f"convert uint8 images with x.float() / 255")
    if x.dim() < 3:
        raise ValueError(f"x: expected at least 3 dims (..., C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-3] not in (1, 3):
        raise ValueError(f"x: expected 3 (RGB) or 1 (grayscale) channels at dim -3, got {x.shape[-3]} "
                         f"(shape {tuple(x.shape)}); pass images as (..., C, H, W)")
    if x.numel() == 0 and x.shape[-1] * x.shape[-2] == 0 and math.prod(x.shape[:-3]) != 0:
        raise ValueError(f"x: expected H, W >= 1, got {tuple(x.shape[-2:])}")
    if validate and x.numel():
        # One host sync for both checks: this is the cost that validate=False saves in a training loop.
        xd = x.detach()
        lo, hi = torch.aminmax(xd.float())
        lo, hi = lo.item(), hi.item()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("x: expected finite values in [0, 1], got NaN or Inf")
        if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
            raise ValueError(f"x: expected values in [0, 1], got min {lo:.6g}, max {hi:.6g}; "
                             f"scale images to [0, 1] (e.g. x / 255) instead of clipping them silently")


def _check_table(name: str, t, batch: int, validate: bool) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name}: expected an (8, 8) or (B, 8, 8) tensor, got {type(t).__name__}") from None
    if t.shape[-2:] != (8, 8) or t.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape (8, 8) or (B, 8, 8), got {tuple(t.shape)}")
    if t.dim() == 3 and t.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} per-image tables (one per image of the flattened batch), "
                         f"got {t.shape[0]}")
    if not t.is_floating_point():
        t = t.float()
    if validate and t.numel():
        bad = ~torch.isfinite(t) | (t < 1)
        if bool(bad.any()):
            raise ValueError(f"{name}: expected finite entries >= 1 (a JPEG quantization step), got "
                             f"{t[bad].flatten()[0].item():g}")
    return t


def _resolve_backend(backend: str, x: torch.Tensor):
    _check_choice("backend", backend, BACKENDS)
    if backend == "torch":
        return reference
    kernels = None
    try:
        from . import kernels as _k  # noqa: F401  (installed from the repository's kernels/ folder)
        if getattr(_k, "AVAILABLE", False):
            kernels = _k
    except ImportError:
        kernels = None
    if backend == "auto":
        return kernels if (kernels is not None and x.is_cuda) else reference
    if kernels is None:
        raise RuntimeError("backend='triton': the Triton kernels are unavailable (is triton installed? "
                           "pip install 'fdgpu[triton]'); use backend='torch' or 'auto'")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"backend='triton': expected a CUDA tensor, got device {x.device}; use backend='auto' or "
                         f"'torch' on CPU, or set TRITON_INTERPRET=1 before importing triton to run the kernels "
                         f"through Triton's interpreter")
    return kernels


def requantize(x: torch.Tensor, luma_table, chroma_table=None, *, subsampling: str = "4:2:0",
               backward: str = "ste", backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """JPEG round trip of ``x`` with explicit quantization tables.

    Args:
        x: ``(..., 3, H, W)`` or ``(..., 1, H, W)`` float in [0, 1]; any H, W >= 1.
        luma_table: ``(8, 8)`` steps >= 1 (natural order), or ``(B, 8, 8)`` with B = the flattened batch size.
        chroma_table: same for Cb and Cr; defaults to ``luma_table``. Unused for grayscale input.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (Pillow's default).
        backward: "exact", "ste", "soft" or "bpda" (see :mod:`fdgpu.autograd`).
        backend: "auto" (Triton on CUDA tensors when available, else torch), "torch" or "triton".
        validate: check values (finite, within [0, 1], tables >= 1). This costs one device-to-host sync per call;
            pass ``False`` in training loops once inputs are known good. Shape and type checks always run.

    Returns:
        ``(..., C, H, W)``: same shape, dtype and device as ``x``.

    Example:
        >>> import torch, fdgpu
        >>> y = fdgpu.requantize(torch.rand(4, 3, 20, 30), fdgpu.tables.fd(1.0))
        >>> y.shape
        torch.Size([4, 3, 20, 30])
    """
    _check_input(x, validate)
    _check_choice("subsampling", subsampling, SUBSAMPLINGS)
    _check_choice("backward", backward, BACKWARDS)
    *lead, c, h, w = x.shape
    n = math.prod(lead)
    lt = _check_table("luma_table", luma_table, n, validate)
    ct = lt if chroma_table is None else _check_table("chroma_table", chroma_table, n, validate)
    impl = _resolve_backend(backend, x)
    if backward != "exact" and (lt.requires_grad or ct.requires_grad):
        raise ValueError(f"tables that require grad are differentiated only with backward='exact' for now, got "
                         f"backward={backward!r}; detach the tables or use backward='exact'")
    if x.numel() == 0:
        return x.clone()
    compute = torch.float64 if x.dtype == torch.float64 and impl is reference else torch.float32
    xf = x.reshape(n, c, h, w).to(compute)
    lt, ct = lt.to(device=x.device, dtype=compute), ct.to(device=x.device, dtype=compute)
    if backward == "exact":
        y = reference.forward(xf, lt, ct, subsampling)[0]
    else:
        y = JPEGFunction.apply(xf.contiguous(), lt.detach(), ct.detach(), subsampling, backward, impl)
    return y.to(x.dtype).reshape(x.shape)


def jpeg(x: torch.Tensor, quality: Union[Number, torch.Tensor] = 75, *, subsampling: str = "4:2:0",
         backward: str = "ste", backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """JPEG round trip at an IJG quality, as Pillow/libjpeg-turbo would save and load ``x``.

    Args:
        x: ``(..., 3 or 1, H, W)`` float in [0, 1].
        quality: a number in [1, 100] (floats allowed) or a ``(B,)`` tensor, one per image of the flattened batch.
        subsampling, backward, backend, validate: as in :func:`requantize`.

    Returns:
        same shape, dtype and device as ``x``.

    Example:
        >>> import torch, fdgpu
        >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> fdgpu.jpeg(x, 50, backward="ste").sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3, 32, 32])
    """
    if isinstance(quality, torch.Tensor) and quality.dim() == 1 and isinstance(x, torch.Tensor) and x.dim() >= 3:
        n = math.prod(x.shape[:-3])
        if quality.shape[0] != n:
            raise ValueError(f"quality: expected one quality per image of the flattened batch ({n}), "
                             f"got {quality.shape[0]}")
    luma, chroma = _ijg_cached(float(quality)) if isinstance(quality, (int, float)) and not isinstance(quality, bool) \
        else tables.ijg(quality)
    return requantize(x, luma, chroma, subsampling=subsampling, backward=backward, backend=backend,
                      validate=validate)


def feature_distillation(x: torch.Tensor, strength: Number = 1.0, *, subsampling: str = "4:2:0",
                         backward: str = "ste", backend: str = "auto", validate: bool = True) -> torch.Tensor:
    """Feature Distillation (Liu et al., CVPR 2019): JPEG with the DNN-oriented table :func:`fdgpu.tables.fd`
    (step ``strength`` on the 15 lowest frequencies, ``40 * strength`` elsewhere) for Y, Cb and Cr.

    Args:
        x: ``(..., 3 or 1, H, W)`` float in [0, 1].
        strength: > 0; 1, 2, 3 are the paper's FD(1x), FD(2x), FD(3x). Entries below 1 are rejected, so
            strength must be >= 1 in practice.
        subsampling, backward, backend, validate: as in :func:`requantize`.

    Example:
        >>> import torch, fdgpu
        >>> fdgpu.feature_distillation(torch.rand(3, 16, 16), 2.0).shape
        torch.Size([3, 16, 16])
    """
    table = _fd_cached(float(strength)) if isinstance(strength, (int, float)) and not isinstance(strength, bool) \
        and math.isfinite(strength) else tables.fd(strength)
    return requantize(x, table, table, subsampling=subsampling, backward=backward, backend=backend,
                      validate=validate)

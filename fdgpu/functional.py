"""Public functions: validate once at the boundary, resolve the backend, dispatch.

Every function takes ``x`` of shape ``(..., C, H, W)`` (any number of leading dims, including none), C = 3 (RGB)
or 1 (grayscale: luma only), floating point, values in [0, 1], and returns the JPEG round trip of ``x``: same shape,
dtype and device, values on the 1/255 grid. Float16/bfloat16 inputs are computed in float32 and cast back;
float16 holds every k/255 to within 0.07 of a level, but bfloat16 (8 significant bits) cannot hold the 1/255 grid:
its outputs are up to 0.5/255 away from k/255 (``round(255 * y)`` still gives k, only just). Use float32 or float16
where the exact grid matters. A channels_last input gives a channels_last output.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Union

import torch

from . import reference, tables
from .autograd import JPEGFunction

SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
BACKWARDS = ("exact", "ste", "soft", "bpda")
BACKENDS = ("auto", "torch", "triton")
COLORS = ("ycbcr", "rgb")
RANGE_SLACK = 1e-6

Number = Union[int, float]


@functools.lru_cache(maxsize=128)
def _ijg_cached(quality: float):
    # Tables for a scalar quality, built once (read-only: the pipeline never writes into its tables).
    return tables.ijg(quality)


@functools.lru_cache(maxsize=128)
def _fd_cached(strength: float, variant: str = "paper"):
    return tables.fd(strength, variant=variant)


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def _as_number(value):
    """A numpy scalar, 0-d array or 0-d tensor (without grad) as a Python float; anything else unchanged."""
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    if isinstance(value, numbers.Real):  # numpy integer and floating scalars
        return float(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad \
            and not value.is_complex() and value.dtype != torch.bool:
        return float(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and value.dtype.kind in "iuf":
        return float(value)
    return value


def _check_input(x, validate: bool) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor of shape (..., 3 or 1, H, W), got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"x: expected a real floating tensor with values in [0, 1], got complex dtype {x.dtype}; "
                        f"pass the image itself (e.g. x.real, or x.abs() for a magnitude), not its spectrum")
    if not x.is_floating_point():
        hint = ("convert uint8 images with x.float() / 255" if x.dtype == torch.uint8 else
                "convert with x.float() (bool masks: x.float() gives 0 and 1)" if x.dtype == torch.bool else
                "convert with x.float(), divided by the largest sample value (255 for 8-bit, 65535 for 16-bit)")
        raise TypeError(f"x: expected a floating tensor with values in [0, 1], got dtype {x.dtype}; {hint}")
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
            if hi > 1.5:
                hint = ("values this large look like 0..255 samples: divide by 255" if hi <= 255 + RANGE_SLACK else
                        "scale the images to [0, 1] (divide by the largest sample value)")
            elif lo < -0.5:
                hint = ("negative values like these look normalised (mean/std): pass images in [0, 1] and "
                        "normalise after the layer")
            else:
                hint = ("a small overshoot, e.g. from an attack step or resampling: clamp first with "
                        "x.clamp(0, 1) if that is intended")
            raise ValueError(f"x: expected values in [0, 1], got min {lo:.6g}, max {hi:.6g}; {hint}")


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
               backward: str = "ste", backend: str = "auto", validate: bool = True,
               color: str = "ycbcr") -> torch.Tensor:
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
            Unchecked values are read as a JPEG encoder reads samples, identically in both backends: NaN becomes
            0, and values outside [0, 1] (including +-Inf) are clamped to 0 or 1, before the 8-bit rounding.
        color: "ycbcr" (JPEG: RGB -> YCbCr, chroma subsampled) or "rgb": each of R, G and B coded as its own
            grayscale plane with ``luma_table`` (no colour conversion, no subsampling; ``chroma_table`` and
            ``subsampling`` unused), as the Feature-Distillation authors' public code does. Every backend and
            backward mode supports it (it runs the grayscale pipeline on ``3 x`` the images).

    Returns:
        ``(..., C, H, W)``: same shape, dtype, device and memory format (contiguous or channels_last) as ``x``.

    Example:
        >>> import torch, fdgpu
        >>> y = fdgpu.requantize(torch.rand(4, 3, 20, 30), fdgpu.tables.fd(1.0))
        >>> y.shape
        torch.Size([4, 3, 20, 30])
    """
    _check_input(x, validate)
    _check_choice("subsampling", subsampling, SUBSAMPLINGS)
    _check_choice("backward", backward, BACKWARDS)
    _check_choice("color", color, COLORS)
    *lead, c, h, w = x.shape
    n = math.prod(lead)
    lt = _check_table("luma_table", luma_table, n, validate)
    ct = lt if chroma_table is None else _check_table("chroma_table", chroma_table, n, validate)
    if color == "rgb" and c == 3:
        # R, G, B as three grayscale images with the luma table: (n, 3, h, w) -> (3n, 1, h, w) and back.
        if chroma_table is not None and chroma_table is not luma_table and not torch.equal(ct.cpu(), lt.cpu()):
            raise ValueError("chroma_table: expected None (or luma_table itself) with color='rgb', where every RGB "
                             "channel uses luma_table, got a different table; pass one table as luma_table")
        x3 = x.reshape(n * 3, 1, h, w)
        lt3 = lt.repeat_interleave(3, dim=0) if lt.dim() == 3 else lt
        y = requantize(x3, lt3, None, subsampling=subsampling, backward=backward, backend=backend,
                       validate=False, color="ycbcr").reshape(x.shape)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            y = y.contiguous(memory_format=torch.channels_last)
        return y
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

    Example:
        >>> import torch, fdgpu
        >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
        >>> fdgpu.jpeg(x, 50, backward="ste").sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3, 32, 32])
    """
    quality = _as_number(quality)
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

    Example:
        >>> import torch, fdgpu
        >>> fdgpu.feature_distillation(torch.rand(3, 16, 16), 2.0).shape
        torch.Size([3, 16, 16])
    """
    strength = check_strength(strength)
    _check_choice("variant", variant, tables.FD_VARIANTS)
    table = _fd_cached(strength, variant)
    if variant == "official":
        return requantize(x, table, None, backward=backward, backend=backend, validate=validate, color="rgb")
    return requantize(x, table, table, subsampling=subsampling, backward=backward, backend=backend,
                      validate=validate)


def check_strength(strength) -> float:
    """``strength`` of Feature Distillation as a float >= 1, or a ValueError naming ``strength``."""
    value = _as_number(strength)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"strength: expected a finite number >= 1 (1, 2, 3 are the paper's FD 1x/2x/3x), "
                         f"got {strength!r}")
    if value <= 0:
        raise ValueError(f"strength: expected a number > 0 (1, 2, 3 are the paper's FD 1x/2x/3x), got {value:g}")
    if value < 1:
        raise ValueError(f"strength: expected a number >= 1, got {value:g}: the table's low-frequency steps are "
                         f"1 x strength, and a JPEG quantization step below 1 does not exist; use 1 for the "
                         f"mildest FD (or fdgpu.requantize with your own tables)")
    return float(value)

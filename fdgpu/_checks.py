"""Input checks of the public API, in one place: each raises at the boundary with an error that names the argument
("<name>: expected ..., got ...") and says what to do.

Type and shape checks never read a tensor's values (no host sync). Value checks of one call are batched:
:func:`check_values` reads the small statistics of every checked tensor with ONE device-to-host copy on the CPU
(exact messages with the offending values); on CUDA and under torch.compile it reads nothing on the host and asserts
on the device instead (``torch._assert_async``: capturable in a CUDA graph, one graph with ``fullgraph=True``), with
a message that names the argument but cannot show the value. Used by
:mod:`fdgpu.functional`, :mod:`fdgpu.modules`, :mod:`fdgpu.tables` and the non-differentiable defences; internal
(the names may change), but not private to one module.
"""
from __future__ import annotations

import math
import numbers

import torch

#: values this far outside [0, 1] are accepted as [0, 1] (float rounding from upstream arithmetic)
RANGE_SLACK = 1e-6
FLOAT64_MAX = 1.7976931348623157e308  # the largest finite float64: a bound that rejects +Inf


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(repr(a) for a in allowed)}, got {value!r}")


def as_number(value):
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


def check_input(x) -> None:
    """Type and shape checks of ``x`` (no host sync); the value check is in :func:`check_values`."""
    if not isinstance(x, torch.Tensor):
        hint = ""
        if type(x).__module__ == "numpy":
            hint = ("; convert it with torch.from_numpy(a) (an 8-bit HWC image: torch.from_numpy(a).permute(2, 0, 1)"
                    ".float() / 255)")
        raise TypeError(f"x: expected a torch.Tensor of shape (..., 3 or 1, H, W), got "
                        f"{type(x).__module__ + '.' if hint else ''}{type(x).__name__}{hint}")
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
        hint = "pass images as (..., C, H, W)"
        if x.shape[-1] in (1, 3):  # channels last, as numpy and Pillow lay images out
            perm = {3: ".permute(2, 0, 1)", 4: ".permute(0, 3, 1, 2)"}.get(x.dim(), ".movedim(-1, -3)")
            hint = f"this looks like channels-last (..., H, W, C) images: pass x{perm}"
        raise ValueError(f"x: expected 3 (RGB) or 1 (grayscale) channels at dim -3, got {x.shape[-3]} "
                         f"(shape {tuple(x.shape)}); {hint}")
    if x.numel() == 0 and x.shape[-1] * x.shape[-2] == 0 and math.prod(x.shape[:-3]) != 0:
        raise ValueError(f"x: expected H, W >= 1, got {tuple(x.shape[-2:])}")


#: the end of every device-side check's message (the values are not read, so they cannot be shown)
DEVICE_NOTE = ("(checked on the device: with validate=True nothing is read back to the host on CUDA or under "
               "torch.compile, so the value is not shown; run the same call on CPU tensors to see it, or pass "
               "validate=False where the inputs are known good)")


def device_form(stat_bounds, message: str):
    """Attach the device-side form of a value check to its ``error`` function: the check passes when each statistic
    ``stats(t)[i]`` lies in ``stat_bounds[i] = (lo, hi)`` (NaN fails), else ``message`` (static: the values are not
    read). ``error`` must raise for exactly the statistics outside these bounds."""
    def attach(error):
        error.device_form = (tuple(stat_bounds), f"{message} {DEVICE_NOTE}")
        return error
    return attach


@device_form([(-RANGE_SLACK, FLOAT64_MAX), (-FLOAT64_MAX, 1 + RANGE_SLACK)],
             "x: expected finite values in [0, 1], got a value outside [0, 1], NaN or Inf; scale the images to "
             "[0, 1] (0..255 samples: divide by 255), or clamp with x.clamp(0, 1) if a small overshoot is intended")
def x_error(lo: float, hi: float):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ValueError("x: expected finite values in [0, 1], got NaN or Inf")
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
        return ValueError(f"x: expected values in [0, 1], got min {lo:.6g}, max {hi:.6g}; {hint}")
    return None


def on_device(device: torch.device) -> bool:
    """Whether value checks on ``device`` run as device-side assertions (no host sync): every device but the CPU,
    and every device while torch.compile traces (reading a value would break the graph)."""
    return device.type != "cpu" or torch.compiler.is_compiling()


def check_values(checks) -> None:
    """Value checks of several tensors: ``checks`` is a list of ``(tensor, stats, error)``; ``stats(t)`` gives a
    ``(2,)`` float64 vector on ``t``'s device and ``error(*values)`` an exception or None. Empty and meta tensors
    are skipped (there is nothing to read).

    On the CPU: ONE host read for all the checks, and ``error``'s exception (with the values). Where
    :func:`on_device`: no host read; each check is a ``torch._assert_async`` of its statistics within the bounds
    that :func:`device_form` attached to ``error``, failing with that static message (on CUDA a device-side
    assertion, reported by the next synchronising call; under torch.compile on the CPU a RuntimeError)."""
    checks = [(t, stats, error) for t, stats, error in checks if t.numel() and t.device.type != "meta"]
    if not checks:
        return
    device = checks[0][0].device
    if on_device(device) and torch.compiler.is_compiling() and \
            any(getattr(e, "device_form", None) is None for _, _, e in checks):
        name = next(e for _, _, e in checks if getattr(e, "device_form", None) is None).__qualname__
        raise RuntimeError(f"validate=True: the value check {name} has no device-side form and must read the host, "
                           f"which torch.compile cannot trace; pass validate=False (and check the values outside "
                           f"the compiled function)")
    if on_device(device) and all(getattr(e, "device_form", None) is not None for _, _, e in checks):
        for t, stats, error in checks:
            bounds, message = error.device_form
            within = _within_form(t, stats, bounds)
            if within is not None:  # every value within [lo, hi]: one pass of comparisons, no statistics
                lo, hi = within
                # (comparisons record no autograd history: no detach needed)
                torch._assert_async(t.ge(lo).logical_and_(t.le(hi)).all(), message)
                continue
            ok = None
            for v, (lo, hi) in zip(stats(t).unbind(), bounds):
                inside = (v >= lo) & (v <= hi)  # False for NaN
                ok = inside if ok is None else ok & inside
            assert ok is not None  # stats give at least one value
            torch._assert_async(ok, message)
        return
    values = torch.cat([stats(t).to(device) for t, stats, _ in checks]).tolist()  # the one sync
    i = 0
    for t, _, error in checks:
        k = 2
        err = error(*values[i:i + k])
        i += k
        if err is not None:
            raise err


def _within_form(t: torch.Tensor, stats, bounds):
    """For a :func:`minmax` check whose bounds say "min >= lo, max <= hi" (the other two bounds implied): ``(lo',
    hi')``, the least and the greatest value of ``t``'s dtype within ``[lo, hi]``, so that ``t >= lo'`` and
    ``t <= hi'`` in that dtype hold exactly when each value lies in ``[lo, hi]`` (NaN fails both); else None. Four
    ops instead of the statistics' eleven: the host time of a small tensor's check on CUDA (a 32x32 image: 19 ->
    10 us). Large tensors keep the statistics, which move fewer bytes on the GPU (10 per fp32 value instead of 14),
    and so does torch.compile (it traces them, and inductor fuses them)."""
    if (stats is not minmax or not t.is_floating_point() or t.numel() > _COMPARE_MAX
            or torch.compiler.is_compiling()):
        return None
    (lo, hi_min), (lo_max, hi) = bounds
    if not (hi <= hi_min and lo >= lo_max):  # then min <= hi_min and max >= lo_max follow from lo <= min <= max <= hi
        return None
    key = (t.dtype, float(lo), float(hi))
    hit = _DTYPE_BOUNDS.get(key)
    if hit is None:
        hit = _DTYPE_BOUNDS[key] = (_inward(t.dtype, float(lo), True), _inward(t.dtype, float(hi), False))
    return hit


_DTYPE_BOUNDS: dict = {}
_COMPARE_MAX = 1 << 18  # values: above this a call's GPU time, not its host time, is what the check adds to


def _inward(dtype: torch.dtype, v: float, up: bool) -> float:
    # the least value of dtype >= v (up) or the greatest <= v, in Python floats (no tensor is made or read): v on
    # the grid of dtype's spacing at v (a power of two, so the division and the product are exact in float64)
    fi = torch.finfo(dtype)
    if math.isinf(v):
        return v
    if abs(v) > fi.max:  # beyond dtype's finite range: its largest finite value of that sign, or no value (Inf)
        return (-fi.max if v < 0 else math.inf) if up else (fi.max if v > 0 else -math.inf)
    spacing = max(math.ldexp(1.0, math.frexp(v)[1] - 1) * fi.eps, fi.tiny * fi.eps)
    return (math.ceil(v / spacing) if up else math.floor(v / spacing)) * spacing


_RGB_CHROMA = ("chroma_table: expected None (or luma_table itself) with color='rgb', where every RGB channel uses "
               "luma_table, got a different table; pass one table as luma_table")


def check_same_table(chroma: torch.Tensor, luma: torch.Tensor) -> None:
    """``color='rgb'`` takes one table: a ``chroma_table`` given beside it must equal ``luma_table``. Read on the
    host for CPU tables; a device-side assertion on CUDA and under torch.compile (see :func:`check_values`)."""
    if on_device(chroma.device) or on_device(luma.device):
        same = (chroma.to(device=luma.device, dtype=luma.dtype) == luma).all()
        torch._assert_async(same, f"{_RGB_CHROMA} {DEVICE_NOTE}")
    elif not torch.equal(chroma, luma):
        raise ValueError(_RGB_CHROMA)


# A CPU tensor with at least this many values has its statistics computed in pieces on the single-threaded workers
# of fdgpu.reference.parallel: torch's own reduction is an OpenMP region whose barrier stalls when another process
# holds a core (batch 32 x 224^2 at load 14 on 2 cores: 36 ms with 2 OpenMP threads, 0.7 ms on one thread).
_SPLIT_VALUES = 1 << 19
_PIECES_PER_WORKER = 4


def minmax(t: torch.Tensor) -> torch.Tensor:
    # (2,) float64: min and max, both NaN when any entry is NaN (aminmax alone may skip a NaN on some devices; on
    # the CPU it propagates NaN for every floating dtype, so one reduction is enough there)
    t = t.detach().reshape(-1)
    if t.device.type == "cpu" and not torch.compiler.is_compiling():
        return _cpu_minmax(t)
    lo, hi = torch.aminmax(t)
    nan = torch.isnan(t).any()
    return torch.where(nan, torch.nan, torch.stack([lo, hi]).to(torch.float64))


def _cpu_minmax(t: torch.Tensor) -> torch.Tensor:
    from .reference.parallel import map_chunks, workers

    n, k = t.numel(), workers()
    if n < _SPLIT_VALUES or k <= 1:
        return torch.stack(torch.aminmax(t)).to(torch.float64)
    step = -(-n // (k * _PIECES_PER_WORKER))
    parts = map_chunks(lambda i: torch.stack(torch.aminmax(t[i:i + step])), [(i,) for i in range(0, n, step)],
                       t.device)
    lo, hi = torch.stack(parts).to(torch.float64).unbind(1)
    return torch.stack([lo.amin(), hi.amax()])  # amin/amax propagate NaN on the CPU


def table_error(name: str):
    @device_form([(1, math.inf), (-FLOAT64_MAX, FLOAT64_MAX)],
                 f"{name}: expected finite entries >= 1 (a JPEG quantization step), got an entry below 1, NaN or Inf")
    def error(lo: float, hi: float):
        if lo >= 1 and math.isfinite(hi):  # False for NaN
            return None
        return ValueError(f"{name}: expected finite entries >= 1 (a JPEG quantization step), got "
                          f"{lo if not lo >= 1 else hi:g}")
    return error


def assert_steps(name: str, t: torch.Tensor) -> None:
    """The value check of quantization steps that runs even with ``validate=False``: finite and >= 1 (a step of 0,
    NaN or Inf has no JPEG meaning and gives NaN outputs), without a host sync. ``torch._assert_async`` raises a
    RuntimeError at once on the CPU; on CUDA it is a device-side assertion, reported at the next synchronisation
    (and the CUDA context cannot be used after it): pass ``validate=True`` for a recoverable ValueError there."""
    if t.numel() == 0 or t.device.type == "meta":
        return
    ok = torch.isfinite(t.detach()).logical_and_(t.detach() >= 1).all()
    torch._assert_async(ok, f"{name}: expected finite entries >= 1 (JPEG quantization steps; checked even with "
                            f"validate=False), got a step below 1, NaN or infinite")


def check_table(name: str, t, batch: int) -> torch.Tensor:
    """Type and shape checks of a table (no host sync); returns a floating tensor."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{name}: expected an (8, 8) or (B, 8, 8) tensor, got {type(t).__name__}") from None
    if t.shape[-2:] != (8, 8) or t.dim() not in (2, 3):
        hint = ""
        if t.dim() in (1, 2) and t.shape[-1] == 64:
            hint = ("; tables are in natural (row-major) order, not zigzag: a natural-order table of 64 steps is "
                    "t.reshape(8, 8) (per image: t.reshape(-1, 8, 8)), one in zigzag order (as a JPEG file stores "
                    "it) is torch.empty(64).index_copy(0, fdgpu.tables.zigzag_order(), t).reshape(8, 8)")
        raise ValueError(f"{name}: expected shape (8, 8) or (B, 8, 8), got {tuple(t.shape)}{hint}")
    if t.dim() == 3 and t.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} per-image tables (one per image of the flattened batch), "
                         f"got {t.shape[0]}")
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected real quantization steps, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.float()
    return t


def check_quality(quality, validate: bool = True, as_tensor: bool = True):
    """Type and shape checks, then (``validate``) the value check with one host sync; returns a real tensor (a
    number stays a number with ``as_tensor=False``)."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float, torch.Tensor)):
        raise TypeError(f"quality: expected a number or a (B,) tensor in [1, 100], got {type(quality).__name__}")
    if not isinstance(quality, torch.Tensor):  # a number: checked on the host
        if validate and not 1 <= quality <= 100:  # False for NaN
            raise ValueError(f"quality: expected values in [1, 100] (libjpeg's range), got {quality:g}")
        return torch.tensor(float(quality), dtype=torch.float64) if as_tensor else quality
    q = quality
    if q.dim() > 1:
        raise ValueError(f"quality: expected a number or a 1-D (B,) tensor, got shape {tuple(q.shape)}")
    if q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"quality: expected a real number in [1, 100], got dtype {q.dtype}")
    if validate and q.numel() and q.device.type != "meta":
        check_quality_values(q)
    return q


def quality_stats(q: torch.Tensor) -> torch.Tensor:
    """``(2,)`` float64 on ``q``'s device: min and max of ``q`` (NaN if any is NaN), for a batched value check."""
    lo, hi = torch.aminmax(q.detach().to(torch.float64).reshape(-1))
    nan = torch.isnan(q.detach()).any()
    return torch.stack([torch.where(nan, torch.nan, lo), torch.where(nan, torch.nan, hi)])


@device_form([(1, math.inf), (-math.inf, 100)],
             "quality: expected values in [1, 100] (libjpeg's range), got a value outside it or NaN")
def quality_error(lo: float, hi: float):
    """The error for quality stats ``(lo, hi)`` from :func:`quality_stats`, or None when they are in range."""
    if lo >= 1 and hi <= 100:  # False for NaN
        return None
    bad = lo if not (lo >= 1) else hi
    return ValueError(f"quality: expected values in [1, 100] (libjpeg's range), got {bad:g}")


def check_quality_values(q: torch.Tensor) -> None:
    check_values([(q, quality_stats, quality_error)])  # one host read on the CPU, none on CUDA


def check_strength(strength) -> float:
    """``strength`` of Feature Distillation as a float >= 1, or a ValueError naming ``strength``: one rule and one
    message for every value outside it (0, negative, fractional below 1, NaN, not a number)."""
    value = as_number(strength)
    finite = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not finite or value < 1:
        got = f"{value:g}" if finite else repr(strength)
        raise ValueError(f"strength: expected a finite number >= 1 (1, 2, 3 are the paper's FD 1x/2x/3x), got {got}: "
                         f"the table's low-frequency steps are 1 x strength, and a JPEG quantization step below 1 "
                         f"does not exist; use 1 for the mildest FD (or fdgpu.requantize with your own tables)")
    return float(value)


def check_learnable(learnable) -> bool:
    if not isinstance(learnable, bool):
        raise TypeError(f"learnable: expected True or False, got {type(learnable).__name__}")
    return learnable


def check_images(x: torch.Tensor, name: str, channels: int | None = 3) -> None:
    """Raise a clear error unless ``x`` is a float tensor (N, C, H, W) with values in [0, 1].

    ``channels``: the required C, or ``None`` to accept any C >= 1.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}. "
                        f"Convert arrays with torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating tensor with values in [0, 1], got dtype {x.dtype}. "
                        f"Convert uint8 images with x.float() / 255.")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}. "
                         f"Add a batch dimension with x.unsqueeze(0) for a single image.")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels (N, {channels}, H, W), got shape {tuple(x.shape)}. "
                         f"Pass RGB images channels-first.")
    if x.numel() == 0:
        return
    finite = torch.isfinite(x).all()
    lo, hi = x.min(), x.max()
    if not bool(finite):
        raise ValueError(f"{name}: expected finite values in [0, 1], got NaN or Inf.")
    if bool(lo < -RANGE_SLACK) or bool(hi > 1 + RANGE_SLACK):
        raise ValueError(f"{name}: expected values in [0, 1], got min {float(lo):.4g}, max {float(hi):.4g}. "
                         f"Scale images to [0, 1] (x / 255 for 8-bit data) before the defence.")

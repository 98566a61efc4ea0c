"""Shared pieces of the non-differentiable baselines: input checks, the numpy round trip and their random streams.

The baselines compute in numpy (faiss, scikit-image) on CPU. To put them in front of a classifier that an attacker
differentiates, they wrap their numpy round trip in :class:`fdgpu.attacks.BPDA` (Athalye et al., 2018, "Backward Pass
Differentiable Approximation"), whose backward pass is the identity: ``grad_x = grad_y``. Randomised baselines are
then attacked with BPDA + EOT by calling them repeatedly.
"""
from __future__ import annotations

import numpy as np
import torch

#: values this far outside [0, 1] are accepted (float rounding from upstream arithmetic) and clamped
RANGE_SLACK = 1e-6


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


def to_numpy_hwc(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) tensor -> contiguous float32 array (N, H, W, C), clamped to [0, 1]."""
    a = x.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(np.clip(a, 0.0, 1.0))


def from_numpy_hwc(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """float array (N, H, W, C) -> tensor (N, C, H, W) with the dtype and device of ``like``."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(0, 3, 1, 2)
    return t.to(device=like.device, dtype=like.dtype).contiguous()


def make_rng(seed) -> np.random.Generator:
    """A numpy Generator from an int seed, a Generator (returned as is) or ``None`` (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, torch.Generator):
        return np.random.default_rng(int(torch.randint(0, 2**63 - 1, (1,), generator=seed)))
    return np.random.default_rng(seed)


def options_build(spec, kwargs: dict, factory):
    """``factory(**kwargs)`` for a ``kind[:k=v,...]`` spec; an option the factory does not take is a ValueError
    naming the spec."""
    try:
        return factory(**kwargs)
    except TypeError as exc:  # an option the baseline does not take
        raise ValueError(f"{spec.text!r}: expected options of fdgpu.baselines.make_defence({spec.kind!r}, ...), "
                         f"got {sorted(spec.kwargs)} ({exc})") from None

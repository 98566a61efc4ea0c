"""Shared pieces of the non-differentiable baselines: input checks, the numpy round trip and their random streams.

The baselines compute in numpy (faiss, scikit-image) on CPU. To put them in front of a classifier that an attacker
differentiates, they wrap their numpy round trip in :class:`fdgpu.attacks.BPDA` (Athalye et al., 2018, "Backward Pass
Differentiable Approximation"), whose backward pass is the identity: ``grad_x = grad_y``. Randomised baselines are
then attacked with BPDA + EOT by calling them repeatedly.
"""
from __future__ import annotations

import numpy as np
import torch

from .._checks import RANGE_SLACK, check_images  # noqa: F401 (the defences' input check lives with the others)


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

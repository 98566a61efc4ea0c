"""Per-channel normalisation as a module, so a defended model takes images in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

# ImageNet's per-channel statistics (RGB), which the pretrained CIFAR-10 ResNets (``fdgpu models``) were trained
# with: put Normalize(IMAGENET_MEAN, IMAGENET_STD) in front of them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The former names (they hold ImageNet's statistics, not CIFAR-10's), kept so existing code keeps working.
CIFAR10_MEAN = IMAGENET_MEAN
CIFAR10_STD = IMAGENET_STD


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: ``(B, C, H, W)`` in [0, 1] -> normalised, same shape.

    Args:
        mean, std: C numbers each (std > 0); stored as buffers so they follow ``.to(device)``.

    Examples:
        >>> norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        >>> norm(torch.full((1, 3, 2, 2), 0.485))[0, 0, 0, 0].item()
        0.0
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"expected mean and std of the same length, got {mean_t.numel()} and {std_t.numel()}")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std: expected positive values, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected (B, {self.mean.shape[1]}, H, W) input, got {tuple(x.shape)}")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"

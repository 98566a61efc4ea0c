"""CIFAR-10 ResNets of He et al. (2016), depth 20/32/44/56, with the parameter-free "option A" shortcut.

Parameter names match the pretrained state_dicts that ``fdgpu models`` downloads (``conv1``, ``bn1``,
``layer{1,2,3}.{i}.conv1`` ..., ``linear``). Input: ``(B, 3, 32, 32)`` normalised images (put
:class:`~fdgpu.models.Normalize` in front); output: ``(B, 10)`` logits.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTHS = (20, 32, 44, 56)


class _PadShortcut(nn.Module):
    """Option-A shortcut: keep every second pixel and zero-pad channels by ``pad`` on each side."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """``conv3x3(stride) - BN - ReLU - conv3x3 - BN``, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = _PadShortcut(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 inputs: ``(B, 3, 32, 32)`` normalised -> ``(B, num_classes)`` logits.

    Args:
        depth: one of 20, 32, 44, 56 (``6n + 2``; n basic blocks per stage, widths 16/32/64).
        num_classes: output size (10 for CIFAR-10).
    """

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth: expected 6n + 2 (20, 32, 44 or 56 have weights), got {depth!r}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _load(net: nn.Module, state: dict) -> str:
    """Load ``state`` into ``net``; or one line on how it does not fit (counts and a first example), loading nothing
    that matters (the caller raises). Buffers older checkpoints lack (BatchNorm's ``num_batches_tracked``) are filled
    by torch as usual."""
    expected = net.state_dict()
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing, unexpected = [], []
    if not shapes:
        result = net.load_state_dict(state, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(expected)} tensors missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {str(unexpected[0])!r})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k!r}: {tuple(state[k].shape)} instead of "
                     f"{tuple(expected[k].shape)})")
    return ", ".join(parts)


def cifar_resnet(depth: int = 20, weights: Optional[Union[str, os.PathLike]] = None,
                 num_classes: int = 10) -> CifarResNet:
    """Build a CIFAR ResNet and optionally load a state_dict, in eval mode.

    Args:
        depth: 20, 32, 44 or 56.
        weights: path to a ``.pt`` state_dict (e.g. ``fdgpu.download.pretrained("resnet20")``); a leading
            ``module.`` prefix (DataParallel) is stripped. ``None`` keeps the random initialisation.

    Returns:
        the network (expects normalised input: use ``nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)``
        for the pretrained weights, which were trained with ImageNet's statistics).

    Examples:
        >>> net = cifar_resnet(20)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    net = CifarResNet(depth, num_classes)
    if weights is not None:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights: expected a state_dict file for resnet{depth}, got {path!r} "
                                    f"(which does not exist); pass the path to e.g. resnet{depth}-cifar10.pt")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"weights: expected a state_dict (a dict of tensors) of a CIFAR ResNet-{depth}, got "
                             f"{path!r} holding a {type(state).__name__} that is not one")
        state = {str(k)[len("module."):] if str(k).startswith("module.") else k: v for k, v in state.items()}
        problem = _load(net, state)
        if problem:
            raise ValueError(f"weights: expected a state_dict of a CIFAR ResNet-{depth}, got {path!r} which does not "
                             f"fit: {problem}; check that the depth (resnet{depth}) matches the file")
    return net.eval()

"""Classifiers to defend: the CIFAR-10 ResNet family, input normalisation and ensembles.

Examples:
    >>> import torch, torch.nn as nn
    >>> from fdgpu.models import cifar_resnet, Normalize, IMAGENET_MEAN, IMAGENET_STD
    >>> model = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), cifar_resnet(20))   # inputs in [0, 1]
    >>> model(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1, 10])
"""
from .ensemble import Ensemble
from .normalize import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, Normalize
from .resnet import DEPTHS, CifarResNet, cifar_resnet

__all__ = ["cifar_resnet", "CifarResNet", "DEPTHS", "Normalize", "IMAGENET_MEAN", "IMAGENET_STD", "Ensemble",
           "CIFAR10_MEAN", "CIFAR10_STD"]

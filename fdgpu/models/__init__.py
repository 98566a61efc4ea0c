"""Classifiers to defend: the CIFAR-10 ResNet family, input normalisation and ensembles.

>>> import torch, torch.nn as nn
>>> from fdgpu.models import cifar_resnet, Normalize, CIFAR10_MEAN, CIFAR10_STD
>>> model = nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), cifar_resnet(20))   # inputs in [0, 1]
>>> model(torch.rand(1, 3, 32, 32)).shape
torch.Size([1, 10])
"""
from .ensemble import Ensemble
from .normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from .resnet import DEPTHS, CifarResNet, cifar_resnet

__all__ = ["cifar_resnet", "CifarResNet", "DEPTHS", "Normalize", "CIFAR10_MEAN", "CIFAR10_STD", "Ensemble"]

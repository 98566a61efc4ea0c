"""Attack an FDJpeg-defended CIFAR-10 ResNet-20 with adaptive (BPDA) PGD.

Needs CIFAR-10 and the pretrained ResNet-20: `fdgpu data cifar10` and `fdgpu models fetch resnet20` put them in
~/.cache/fdgpu, where this finds them (or set FDGPU_DATA / FDGPU_MODELS to folders holding them).
"""
import sys

import torch
import torch.nn as nn

import fdgpu
from fdgpu.models import cifar_resnet, Normalize, IMAGENET_MEAN, IMAGENET_STD
from fdgpu.data import load_npz
from fdgpu.download import pretrained
from fdgpu.attacks import pgd

try:
    net = cifar_resnet(20, weights=pretrained("resnet20"))  # $FDGPU_MODELS or ~/.cache/fdgpu/models
    x, y = load_npz("test", limit=100)  # CIFAR-10 test images 0-99: (100, 3, 32, 32) in [0, 1]
except FileNotFoundError as exc:
    sys.exit(f"attack_fdjpeg.py: {exc}")
model = nn.Sequential(fdgpu.FDJpeg(strength=1.0, backward="bpda"), Normalize(IMAGENET_MEAN, IMAGENET_STD), net).eval()
x_adv = pgd(model, x, y, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    acc = lambda inp: (model(inp).argmax(1) == y).float().mean().item()  # noqa: E731
    print(f"clean {acc(x):.2f}  adversarial {acc(x_adv):.2f}")  # clean 0.74  adversarial 0.01 (2-core CPU, ~5 s)
# To save the adversarial images, take the 8-bit samples the layer read: floor(255 x + 0.5), halves up (torch.round
# would round halves to even and give a different image wherever the attack stopped on a half level).
x_u8 = fdgpu.to_uint8(x_adv)  # (100, 3, 32, 32) uint8; e.g. PIL.Image.fromarray(x_u8[0].permute(1, 2, 0).numpy())
with torch.no_grad():
    assert torch.equal(model(x_u8.float() / 255), model(x_adv))  # the model sees the same images

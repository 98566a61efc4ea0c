"""Attack an FDJpeg-defended CIFAR-10 ResNet-20 with adaptive (BPDA) PGD. Needs $FDGPU_DATA and $FDGPU_MODELS."""
import os, torch, torch.nn as nn, fdgpu
from fdgpu.models import cifar_resnet, Normalize, CIFAR10_MEAN, CIFAR10_STD
from fdgpu.data import load_npz
from fdgpu.attacks import pgd

net = cifar_resnet(20, weights=os.path.join(os.environ["FDGPU_MODELS"], "resnet20-cifar10.pt"))
model = nn.Sequential(fdgpu.FDJpeg(strength=1.0, backward="bpda"), Normalize(CIFAR10_MEAN, CIFAR10_STD), net).eval()
x, y = load_npz("test", limit=100)  # CIFAR-10 test images 0-99: (100, 3, 32, 32) in [0, 1], root from $FDGPU_DATA
x_adv = pgd(model, x, y, eps=8 / 255, steps=10, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    acc = lambda inp: (model(inp).argmax(1) == y).float().mean().item()  # noqa: E731
    print(f"clean {acc(x):.2f}  adversarial {acc(x_adv):.2f}")  # clean 0.74  adversarial 0.02 (2-core CPU, ~5 s)

"""Save adversarial examples as .jpg files that decode to exactly the attacked pixels.

The attack runs through the differentiable JPEG layer (`fdgpu.jpeg`, straight-through gradients), so the classifier
is attacked on what a JPEG file of the adversarial image decodes to. Each image is then saved with
`fdgpu.io.write_jpeg(path, fdgpu.encode(x_adv, q))`, read back by Pillow, and classified again: the pixels are the
layer's output bit for bit, so the accuracy on the files equals the accuracy on the layer's output.

    python examples/save_adversarial_jpeg.py --n 500 --quality 75 --out /tmp/adv-jpeg

Needs CIFAR-10 and the pretrained ResNet-20 (`fdgpu data cifar10`, `fdgpu models fetch resnet20`, or FDGPU_DATA /
FDGPU_MODELS pointing at folders holding them) and the `jpeg` extra (jpeglib).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

import fdgpu
from fdgpu.attacks import pgd
from fdgpu.data import load_npz
from fdgpu.download import pretrained
from fdgpu.models import IMAGENET_MEAN, IMAGENET_STD, Normalize, cifar_resnet


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="CIFAR-10 test images 0..n-1 (default 500)")
    ap.add_argument("--quality", type=int, default=75, help="JPEG quality of the layer and of the files")
    ap.add_argument("--eps", type=float, default=8, help="L-inf budget in levels of 255 (default 8)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps (default 10)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the .jpg files (created)")
    args = ap.parse_args(argv)
    try:
        net = cifar_resnet(20, weights=pretrained("resnet20"))
        x, y = load_npz("test", limit=args.n)
    except FileNotFoundError as exc:
        sys.exit(f"save_adversarial_jpeg.py: {exc}")
    classifier = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), net).eval()
    model = nn.Sequential(fdgpu.JPEG(args.quality, backward="ste"), classifier).eval()
    t0 = time.perf_counter()
    x_adv = torch.cat([pgd(model, x[i:i + 100], y[i:i + 100], eps=args.eps / 255, steps=args.steps,
                           generator=torch.Generator().manual_seed(i)) for i in range(0, len(x), 100)])
    t_attack = time.perf_counter() - t0

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(len(x_adv)):
        fdgpu.io.write_jpeg(args.out / f"{i:05d}.jpg", fdgpu.encode(x_adv[i:i + 1], args.quality))
    t_write = time.perf_counter() - t0
    files = []
    for i in range(len(x_adv)):
        with Image.open(args.out / f"{i:05d}.jpg") as im:
            files.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
    from_files = torch.stack(files).float() / 255  # as any user loads them

    with torch.no_grad():
        layer_out = fdgpu.jpeg(x_adv, args.quality)

        def acc(images):
            return (classifier(images).argmax(1) == y).float().mean().item()
        same = torch.equal(from_files, layer_out)
        print(f"CIFAR-10 test images 0..{args.n - 1}, ResNet-20, JPEG quality {args.quality}, "
              f"PGD-{args.steps} L-inf eps {args.eps:g}/255 through fdgpu.jpeg (ste)")
        print(f"accuracy on JPEG of the clean images:        {acc(fdgpu.jpeg(x, args.quality)):.4f}")
        print(f"accuracy on the layer's output (x_adv):      {acc(layer_out):.4f}")
        print(f"accuracy on the .jpg files read by Pillow:   {acc(from_files):.4f}")
        print(f"files decode to the layer's output exactly:  {same} "
              f"({int((from_files != layer_out).sum())} values differ)")
        size = sum((args.out / f"{i:05d}.jpg").stat().st_size for i in range(len(x_adv)))
        print(f"{len(x_adv)} files, {size / len(x_adv):.0f} bytes per file; attack {t_attack:.1f} s, "
              f"encode + write {t_write:.1f} s")
    if not same:
        sys.exit("save_adversarial_jpeg.py: the files do not decode to the layer's output")


if __name__ == "__main__":
    main()

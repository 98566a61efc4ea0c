"""Transfer robustness of learned JPEG tables against the *last* iterate of PGD (docs/results.md §10).

``fdgpu eval``'s attacks return, per image, their best iterate: the first that fooled the model they attack. For a
transfer attack that model is the undefended classifier, which a small perturbation already fools, so the image
handed to the defence is an early, weak iterate. This script computes the classic transfer attack instead: PGD
(uniform random start, signed steps of 2.5 eps / steps, projection to the L-inf box and [0, 1]) on the undefended
resnet20, keeping the last iterate of every image, then classifies the adversarial images through each defence:
the tables of ``examples/learn_tables.py`` (``--tables``, 4:2:0), FD 1x and JPEG q75.

    export FDGPU_DATA=../shared/data FDGPU_MODELS=../shared/models
    PYTHONPATH=. python examples/transfer_last_iterate.py --tables learned_tables.pt --limit 1000
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from learn_tables import (
    pgd_last_iterate,  # examples/learn_tables.py (this script's folder is on sys.path)
)
from torch import nn

import fdgpu
from fdgpu.data import load_npz
from fdgpu.models import CIFAR10_MEAN, CIFAR10_STD, Normalize, cifar_resnet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", required=True, help="a {'luma', 'chroma'} file of examples/learn_tables.py")
    p.add_argument("--data", default="test", help="CIFAR-10 .npz name or path (default test)")
    p.add_argument("--limit", type=int, default=1000, help="the first N images (default 1000)")
    p.add_argument("--weights", default=None, help="resnet20 weights (default $FDGPU_MODELS/resnet20-cifar10.pt)")
    p.add_argument("--eps", type=float, default=4.0, help="L-inf budget in pixel levels (default 4)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("limit", "steps", "batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    weights = args.weights or os.path.join(os.environ.get("FDGPU_MODELS", ""), "resnet20-cifar10.pt")
    if not os.path.isfile(weights):
        p.error(f"--weights: expected the resnet20 CIFAR-10 weights, got {weights!r} (or set $FDGPU_MODELS)")
    t0 = time.time()
    if not os.path.isfile(args.tables):
        p.error(f"--tables: expected a file written by examples/learn_tables.py, got {args.tables!r}")
    tabs = torch.load(args.tables, map_location="cpu", weights_only=True)
    if not isinstance(tabs, dict) or "luma" not in tabs or "chroma" not in tabs:
        p.error(f"--tables: expected a dict with 'luma' and 'chroma' (examples/learn_tables.py), got {args.tables!r}")
    luma, chroma = tabs["luma"], tabs["chroma"]
    defences = {"learned tables": fdgpu.Requantize(luma, chroma), "FD 1x": fdgpu.FDJpeg(1.0),
                "JPEG q75": fdgpu.JPEG(75)}
    x, y = load_npz(args.data, limit=args.limit)
    net = nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), cifar_resnet(20, weights=weights)).eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    gen = torch.Generator().manual_seed(args.seed)
    correct = {name: [0, 0] for name in ["none"] + list(defences)}
    for s in range(0, x.shape[0], args.batch):
        xb, yb = x[s:s + args.batch], y[s:s + args.batch]
        xa = pgd_last_iterate(net, xb, yb, args.eps / 255, args.steps, gen)
        with torch.no_grad():
            for name, layer in [("none", nn.Identity())] + list(defences.items()):
                correct[name][0] += int((net(layer(xb)).argmax(1) == yb).sum())
                correct[name][1] += int((net(layer(xa)).argmax(1) == yb).sum())
    n = x.shape[0]
    print(f"transfer PGD-{args.steps} eps={args.eps:g}/255 (last iterate) on the undefended resnet20, "
          f"{args.data} images 0-{n - 1}, {time.time() - t0:.0f} s")
    print("| defence | clean % | transfer PGD, last iterate % |\n| --- | ---: | ---: |")
    for name, (c, a) in correct.items():
        print(f"| {name} | {100 * c / n:.1f} | {100 * a / n:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

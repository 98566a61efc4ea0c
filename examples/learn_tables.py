"""Learn DNN-oriented JPEG quantization tables by gradient (issue 9): the FD paper's "DNN-oriented refine" and
DeepN-JPEG's idea, done by gradient descent through the layer instead of by hand.

A luma and a chroma table (``fdgpu.Requantize(..., learnable=True)``, initialised at FD 1x) are trained in front of
a frozen CIFAR-10 classifier to minimise

    CE(net(JPEG_T(x)), y) + CE(net(JPEG_T(x_adv)), y) + lam * mean_{i+j > 4} relu(floor - T_ij) / floor
        + rate * bpp_T(x)

over training images ``x`` and their transfer-adversarial versions ``x_adv`` (PGD on the undefended classifier,
computed once), where the last term keeps the high-frequency steps at least ``floor`` (coarse enough to round
away small perturbations, as FD's step 40 does), and ``bpp_T(x)`` is the file size in bits per pixel that
:func:`fdgpu.rate` estimates for the clean images with the current tables (``--rate``, default 0: no rate term), so
that the tables also pay for the bits they cost. The tables' gradient is the layer's ``--backward`` mode (``ste``:
LSQ's ``round(c/Q) - c/Q``; ``soft``: the cubic surrogate). The result is saved rounded to integers (a table a real
JPEG file can carry) as ``{"luma", "chroma"}`` for ``fdgpu eval --defences tables:PATH``, and the exact bits per
pixel of the training images' files with them (:func:`fdgpu.jpeg_size`) are printed and saved with them.

    export FDGPU_DATA=../shared/data FDGPU_MODELS=../shared/models
    PYTHONPATH=. python examples/learn_tables.py --out learned_tables.pt --train 2000 --epochs 4
    PYTHONPATH=. python examples/learn_tables.py --out small_tables.pt --rate 0.2   # with a rate term
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import fdgpu
from fdgpu.attacks import pgd
from fdgpu.data import load_npz
from fdgpu.models import IMAGENET_MEAN, IMAGENET_STD, Normalize, cifar_resnet


def high_frequency_mask() -> torch.Tensor:
    i = torch.arange(8).view(8, 1)
    j = torch.arange(8).view(1, 8)
    return (i + j > fdgpu.tables.FD_BAND).float()


def coarseness_penalty(table: torch.Tensor, floor: float) -> torch.Tensor:
    """``mean over i + j > 4 of relu(floor - T_ij) / floor``: 0 once every high frequency is at least ``floor``."""
    m = high_frequency_mask().to(table.device)
    return (F.relu(floor - table) / floor * m).sum() / m.sum()


def pgd_last_iterate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                     generator: torch.Generator) -> torch.Tensor:
    """L-inf PGD on ``net`` returning every image's last iterate (``fdgpu.attacks.pgd`` returns the first iterate
    that fooled ``net``: against an undefended source model, a weak transfer attack). Uniform random start, signed
    steps of 2.5 eps / steps, projection to the box and to [0, 1]."""
    alpha = 2.5 * eps / steps
    xa = (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        xa = xa.detach().requires_grad_()
        g, = torch.autograd.grad(F.cross_entropy(net(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def learn(net: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *, epochs: int, batch: int,
          lr: float, lam: float, floor: float, backward: str, seed: int, rate: float = 0.0,
          log=print) -> fdgpu.Requantize:
    layer = fdgpu.Requantize(fdgpu.tables.fd(1.0), fdgpu.tables.fd(1.0), backward=backward, validate=False,
                             learnable=True)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        tot = {"clean": 0.0, "adv": 0.0, "pen": 0.0, "bpp": 0.0, "acc": 0.0, "acc_adv": 0.0}
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            xb, ab, yb = x[idx], x_adv[idx], y[idx]
            out = net(layer(torch.cat([xb, ab])))
            lc = F.cross_entropy(out[: len(idx)], yb)
            la = F.cross_entropy(out[len(idx):], yb)
            luma, chroma = layer.tables()
            pen = coarseness_penalty(luma, floor) + coarseness_penalty(chroma, floor)
            loss = lc + la + lam * pen
            if rate:
                # estimated bits per pixel of the clean images' files with the current tables
                bpp = fdgpu.rate(xb, luma_table=luma, chroma_table=chroma, validate=False).mean() / \
                    (xb.shape[-2] * xb.shape[-1])
                loss = loss + rate * bpp
                tot["bpp"] += bpp.item() * len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            k = len(idx)
            tot["clean"] += lc.item() * k
            tot["adv"] += la.item() * k
            tot["pen"] += pen.item() * k
            tot["acc"] += (out[:k].argmax(1) == yb).sum().item()
            tot["acc_adv"] += (out[k:].argmax(1) == yb).sum().item()
        log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{key} {v / n:.4f}" for key, v in tot.items()))
    return layer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="where to torch.save {'luma', 'chroma'} (integer-valued float32)")
    p.add_argument("--data", default="train10k", help="CIFAR-10 .npz name or path (default train10k)")
    p.add_argument("--weights", default=None, help="resnet20 weights (default $FDGPU_MODELS/resnet20-cifar10.pt)")
    p.add_argument("--train", type=int, default=2000, help="training images (the first N of --data)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=1.0, help="Adam step on the tables, in quantization-step units")
    p.add_argument("--lam", type=float, default=1.0, help="weight of the high-frequency coarseness term")
    p.add_argument("--floor", type=float, default=40.0, help="high-frequency steps below this are penalised")
    p.add_argument("--eps", type=float, default=4.0, help="transfer PGD budget for training, pixel levels")
    p.add_argument("--steps", type=int, default=10, help="transfer PGD steps")
    p.add_argument("--iterate", default="best", choices=["best", "last"],
                   help="training's transfer PGD: fdgpu.attacks.pgd's best (first fooling) iterate, or the last")
    p.add_argument("--rate", type=float, default=0.0, metavar="LAMBDA",
                   help="weight of the rate term: fdgpu.rate's estimate of the clean images' bits per pixel (0: none)")
    p.add_argument("--backward", default="ste", choices=["ste", "soft"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("train", "epochs", "batch", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: expected a positive integer, got {getattr(args, name)}")
    if not args.rate >= 0:
        p.error(f"--rate: expected a weight >= 0, got {args.rate}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        p.error(f"--out: expected a path in an existing folder, got {args.out!r}")
    weights = args.weights or os.path.join(os.environ.get("FDGPU_MODELS", ""), "resnet20-cifar10.pt")
    if not os.path.isfile(weights):
        p.error(f"--weights: expected the resnet20 CIFAR-10 weights, got {weights!r} (or set $FDGPU_MODELS)")

    t0 = time.time()
    torch.manual_seed(args.seed)
    x, y = load_npz(args.data, limit=args.train)
    net = nn.Sequential(Normalize(IMAGENET_MEAN, IMAGENET_STD), cifar_resnet(20, weights=weights)).eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    # transfer-adversarial training images: PGD on the undefended classifier, computed once
    adv = []
    gen = torch.Generator().manual_seed(args.seed)
    for s in range(0, x.shape[0], args.batch):
        xb, yb = x[s:s + args.batch], y[s:s + args.batch]
        adv.append(pgd(net, xb, yb, args.eps / 255, steps=args.steps) if args.iterate == "best" else
                   pgd_last_iterate(net, xb, yb, args.eps / 255, args.steps, gen))
    x_adv = torch.cat(adv)
    print(f"transfer PGD-{args.steps} eps={args.eps:g} on {x.shape[0]} images: {time.time() - t0:.0f} s", flush=True)
    layer = learn(net, x, y, x_adv, epochs=args.epochs, batch=args.batch, lr=args.lr, lam=args.lam,
                  floor=args.floor, backward=args.backward, seed=args.seed, rate=args.rate,
                  log=lambda s: print(s, flush=True))
    luma, chroma = (t.detach().round().clamp(1, 255) for t in layer.tables())
    bpp = (fdgpu.jpeg_size(x, luma_table=luma, chroma_table=chroma).double() * 8 / (x.shape[-2] * x.shape[-1]))
    print(f"exact bits per pixel of the {x.shape[0]} training images' files with the rounded tables: "
          f"{bpp.mean().item():.3f}", flush=True)
    tmp = args.out + ".tmp"
    torch.save({"luma": luma, "chroma": chroma}, tmp)
    os.replace(tmp, args.out)
    meta = {"command": " ".join(sys.argv), "seconds": round(time.time() - t0, 1), "args": vars(args),
            "bpp_train": round(bpp.mean().item(), 4),
            "luma": luma.int().tolist(), "chroma": chroma.int().tolist()}
    with open(args.out + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    print(f"saved {args.out} ({meta['seconds']} s)\nluma\n{luma.int()}\nchroma\n{chroma.int()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Das et al. (2017) "vaccination": fine-tune a classifier on JPEG-compressed images of one quality.

Command line (weights are written where you say; keep them outside the repository)::

    python -m fdgpu.eval.vaccinate --data train10k --data-root ../shared/data \\
        --weights ../shared/models/resnet20-cifar10.pt --quality 70 --epochs 2 --out ~/.cache/fdgpu/r20-vacc70.pt

The ensemble is then evaluated with ``fdgpu eval --member jpeg:90=... --member jpeg:70=...``: each member sees the
input compressed at its own quality, and their softmax outputs are averaged.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..choices import SUBSAMPLINGS
from ..files import prepare_out, write_file


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel reflect padding and horizontal flip, drawn from ``gen``: ``(B, C, H, W)``."""
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (b,), generator=gen)
    dx = torch.randint(0, 9, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    return torch.where(flip.view(b, 1, 1, 1).to(x.device), out.flip(-1), out)


def vaccinate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, quality: Optional[float], *, epochs: int = 2,
              lr: float = 0.01, batch_size: int = 128, weight_decay: float = 5e-4, seed: int = 0,
              mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None, subsampling: str = "4:2:0",
              progress: bool = False) -> nn.Module:
    """Fine-tune ``net`` (normalised input -> logits) on ``JPEG_quality(augment(x))`` with SGD + cosine schedule.

    Args:
        net: e.g. ``cifar_resnet(20, weights=...)``; trained in place and returned in eval mode.
        x: ``(N, 3, H, W)`` float in [0, 1]; y: ``(N,)`` int64.
        quality: JPEG quality in [1, 100] of the training inputs (``None``: no compression, a control run).
        epochs, lr, batch_size, weight_decay: SGD (momentum 0.9) settings; the rate decays to 0 by a cosine.
        seed: seeds shuffling and augmentation (a private generator; the global RNG is untouched).
        mean, std: normalisation applied after compression (default CIFAR-10's).
    """
    import fdgpu

    from ..models import CIFAR10_MEAN, CIFAR10_STD, Normalize

    if x.dim() != 4 or y.shape != x.shape[:1]:
        raise ValueError(f"expected x (N, 3, H, W) in [0, 1] and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    device = next(net.parameters()).device
    norm = Normalize(mean or CIFAR10_MEAN, std or CIFAR10_STD).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc=f"vaccinate q={quality}", unit="batch")
    net.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb = _augment(x[idx], gen).to(device)
            if quality is not None:
                with torch.no_grad():
                    xb = fdgpu.jpeg(xb, quality, subsampling=subsampling)
            loss = F.cross_entropy(net(norm(xb)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    return net.eval()


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..data import load_npz
    from ..models import cifar_resnet
    from .cli import cifar_models

    p = argparse.ArgumentParser(prog="python -m fdgpu.eval.vaccinate", description=__doc__.split("\n")[0])
    p.add_argument("--data", default="train10k", help="training .npz or 'train10k' under --data-root/cifar10")
    p.add_argument("--data-root", default=None, help="folder like ../shared/data (default: $FDGPU_DATA)")
    p.add_argument("--limit", type=int, default=None, help="training images used (default: all)")
    p.add_argument("--model", default="resnet20", choices=list(cifar_models()))
    p.add_argument("--weights", required=True, help="starting state_dict")
    p.add_argument("--quality", type=float, required=True, help="JPEG quality of the training inputs, in [1, 100]")
    p.add_argument("--subsampling", default="4:2:0", choices=list(SUBSAMPLINGS))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to save the fine-tuned state_dict (outside the repository)")
    args = p.parse_args(argv)
    if not 1 <= args.quality <= 100:
        print(f"vaccinate: --quality: expected a JPEG quality in [1, 100], got {args.quality:g}", file=sys.stderr)
        return 2
    out = Path(os.path.expanduser(args.out))
    problem = prepare_out(out, file="the fine-tuned state_dict")  # before the training, not after it
    if problem:
        print(f"vaccinate: {problem}", file=sys.stderr)
        return 2
    x, y = load_npz(args.data, root=args.data_root, limit=args.limit)
    net = cifar_resnet(int(args.model[len("resnet"):]), weights=args.weights)
    t0 = time.time()
    vaccinate(net, x, y, args.quality, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
              subsampling=args.subsampling, progress=True)
    write_file(out, lambda fh: torch.save(net.state_dict(), fh))  # whole or not at all
    print(f"saved {out} ({time.time() - t0:.0f} s, {x.shape[0]} images x {args.epochs} epochs, q={args.quality:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

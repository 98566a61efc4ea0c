"""What breaks image quilting on CIFAR-10? BPDA substitutes other than the identity, with EOT (issue 10).

Quilting (Guo et al. 2018) replaces every 5x5 patch of the input by one of its k = 10 nearest patches from a database
of clean patches. Its output is piecewise constant in the input, so attackers use BPDA: the true quilting forward and
a substitute's gradient. The identity substitute (``fdgpu eval --views bpda``) assumes quilting(x) ~ x, which is far
from true on 32x32 images (clean accuracy drops from 88 % to ~55 %). This script compares substitutes, each used as
``y = quilt(x) + g(x) - g(x).detach()`` (the forward is always the real, randomised quilting):

- ``identity``: g(x) = x, what the harness does.
- ``softknn``: g(x) = the image stitched (overlaps averaged) from soft nearest-neighbour patches: each patch is
  replaced by ``sum_j softmax(-d_j / T) P_j`` over its k nearest database patches P_j (found at the current x),
  d_j the squared PCA distance quilting's search uses and T the spread of the k distances (detached). Its gradient
  says how to move a patch so that a different neighbour wins, which is what changes quilting's output.
- ``blur``: g(x) = a 5x5 box blur of x (quilting acts like a local smoother).
- ``identity+softknn``: the sum of the two substitutes' gradients.

Each is attacked with PGD (best iterate, EOT over ``--eot`` draws per step) through the CIFAR resnet20, at L-inf
``--eps`` pixel levels, and evaluated on a fresh draw of quilting with a fixed seed, like ``fdgpu eval``.

    PYTHONPATH=. FDGPU_DATA=../shared/data FDGPU_MODELS=../shared/models python examples/break_quilting.py \
        --start 100 --limit 50 --eps 8 --steps 20 --eot 4
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from fdgpu.attacks import pgd
from fdgpu.data import load_npz
from fdgpu.defences import make_defence
from fdgpu.download import pretrained
from fdgpu.models import CIFAR10_MEAN, CIFAR10_STD, Normalize, cifar_resnet

SURROGATES = ("identity", "softknn", "blur", "identity+softknn")


class SoftKNN:
    """Differentiable stand-in for quilting: soft nearest-neighbour patches stitched with averaged overlaps."""

    def __init__(self, quilting):
        db = quilting.database
        self.db, self.k, self.overlap = db, quilting.k, quilting.overlap
        self.p = db.patch_size
        self.s = self.p - self.overlap
        self.mean = torch.from_numpy(db.mean)
        self.components = torch.from_numpy(db.components)
        flat = db.patches.reshape(len(db), -1).astype(np.float32) / 255.0
        self.db_proj = torch.from_numpy(db.project(flat))                      # (n, dims)
        self.db_flat = torch.from_numpy(flat)                                  # (n, p*p*C), HWC order

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p, s = self.p, self.s
        hp = p + s * max(0, -(-(h - p) // s))
        wp = p + s * max(0, -(-(w - p) // s))
        xp = F.pad(x, (0, wp - w, 0, hp - h), mode="replicate")
        cols = F.unfold(xp, p, stride=s)                                        # (B, C*p*p, L), CHW order
        L = cols.shape[-1]
        q = cols.view(b, c, p, p, L).permute(0, 4, 2, 3, 1).reshape(b * L, p * p * c)   # HWC order, as quilt()
        proj = (q - self.mean) @ self.components.T
        idx = torch.from_numpy(self.db.search(q.detach().numpy(), self.k))    # (M, k)
        d = ((proj[:, None, :] - self.db_proj[idx]) ** 2).sum(-1)             # (M, k)
        temp = (d[:, -1] - d[:, 0]).detach().clamp_min(1e-6)[:, None]
        wgt = torch.softmax(-(d - d[:, :1].detach()) / temp, dim=-1)
        patch = (wgt[..., None] * self.db_flat[idx]).sum(1)                    # (M, p*p*C)
        patch = patch.view(b, L, p, p, c).permute(0, 4, 2, 3, 1).reshape(b, c * p * p, L)
        out = F.fold(patch, (hp, wp), p, stride=s)
        norm = F.fold(torch.ones_like(patch), (hp, wp), p, stride=s)
        return (out / norm)[..., :h, :w]


def box_blur(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)


class Attacked(torch.nn.Module):
    """classifier(quilting(x)) whose backward is the chosen substitute's."""

    def __init__(self, net, quilting, surrogate: str):
        super().__init__()
        self.net, self.quilting, self.surrogate = net, quilting, surrogate
        self.soft = SoftKNN(quilting) if "softknn" in surrogate else None

    def forward(self, x):
        with torch.no_grad():
            y = self.quilting(x)
        parts = []
        if self.surrogate in ("identity", "identity+softknn"):
            parts.append(x)
        if self.soft is not None:
            parts.append(self.soft(x))
        if self.surrogate == "blur":
            parts.append(box_blur(x))
        g = sum(parts)
        return self.net(y + g - g.detach())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", type=int, default=100, help="first CIFAR-10 test image (default 100)")
    ap.add_argument("--limit", type=int, default=50, help="number of images (default 50)")
    ap.add_argument("--eps", type=float, default=8.0, help="L-inf budget in pixel levels (default 8)")
    ap.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    ap.add_argument("--eot", type=int, default=4, help="quilting draws averaged per step (default 4)")
    ap.add_argument("--surrogates", nargs="+", default=list(SURROGATES), choices=SURROGATES,
                    help="BPDA substitutes to compare (default all)")
    ap.add_argument("--seed", type=int, default=0, help="seed of quilting's draws and PGD's start (default 0)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    x, y = load_npz("test", start=args.start, limit=args.limit)
    net = torch.nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), cifar_resnet(20, pretrained("resnet20"))).eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    quilting = make_defence("quilting", source="cifar")
    eps = args.eps / 255

    def accuracy(images):
        quilting.reseed(args.seed + 12345)                          # the same evaluation draw for every row
        with torch.no_grad():
            return (net(quilting(images)).argmax(1) == y).float().mean().item() * 100

    rows = {"clean": accuracy(x)}
    print(f"quilting, resnet20, CIFAR-10 test {args.start}..{args.start + len(x) - 1}: clean {rows['clean']:.1f} %")
    for name in args.surrogates:
        t0 = time.time()
        quilting.reseed(args.seed)
        model = Attacked(net, quilting, name)
        adv = pgd(model, x, y, eps, steps=args.steps, eot_samples=args.eot,
                  generator=torch.Generator().manual_seed(args.seed))
        rows[name] = accuracy(adv)
        print(f"  PGD-{args.steps} EOT-{args.eot} eps {args.eps:g}, substitute {name:>17}: {rows[name]:5.1f} %"
              f"  ({time.time() - t0:.0f} s)", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "top1": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""How well ``fdgpu.rate`` (the differentiable estimate) tracks ``fdgpu.jpeg_size`` (the exact file size).

    python benchmarks/rate_accuracy.py --photos 100 --crop 128

Images: natural photos 0..N-1 of the shared data (``$FDGPU_DATA`` or ../shared/data), cropped to the top-left
``--crop`` pixels (0: whole 299x299 photos); settings: IJG qualities, the FD tables (both variants' tables applied
as luma and chroma tables, 4:2:0) and seeded random tables (steps uniform in 1..99). Prints Spearman's rank
correlation between the estimate and 8x the exact size over every (image, setting) pair, the median relative
error and its signed median, overall and per kind of setting.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fdgpu


def ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    # ties share their mean rank
    vals, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return (sums / counts)[inv]


def spearman(a, b) -> float:
    return float(np.corrcoef(ranks(np.asarray(a)), ranks(np.asarray(b)))[0, 1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=100)
    p.add_argument("--crop", type=int, default=128, help="top-left crop in pixels (0: whole photos)")
    p.add_argument("--qualities", type=int, nargs="+", default=[5, 10, 20, 35, 50, 65, 75, 85, 90, 95, 98])
    p.add_argument("--random-tables", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=os.environ.get("FDGPU_DATA",
                                                         str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    args = p.parse_args(argv)
    from fdgpu.data import load_images

    folder = Path(args.data_root) / "natural"
    if not folder.is_dir():
        p.error(f"--data-root: expected a natural/ folder of photos under {args.data_root}")
    imgs = load_images(folder, limit=args.photos)[0]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    if args.crop:
        x = x[..., : args.crop, : args.crop]
    rng = np.random.default_rng(args.seed)
    settings = [(f"q{q}", "quality", {"quality": q}) for q in args.qualities]
    settings += [(f"fd:{k}", "FD", {"luma_table": fdgpu.tables.fd(k).round()}) for k in (1, 2, 3)]
    settings += [(f"fd-official:{k}", "FD", {"luma_table": fdgpu.tables.fd(k, variant="official").round()})
                 for k in (1, 2, 3)]
    settings += [(f"random {i}", "random", {"luma_table": torch.from_numpy(rng.integers(1, 100, (8, 8))).float(),
                                            "chroma_table": torch.from_numpy(rng.integers(1, 100, (8, 8))).float()})
                 for i in range(args.random_tables)]
    t0 = time.time()
    est, exact, kind = [], [], []
    for name, k, kw in settings:
        est += fdgpu.rate(x, **kw).tolist()
        exact += (8 * fdgpu.jpeg_size(x, **kw)).tolist()
        kind += [k] * x.shape[0]
    est, exact, kind = np.array(est), np.array(exact, dtype=float), np.array(kind)
    rel = (est - exact) / exact
    print(f"{x.shape[0]} natural photos ({x.shape[-1]}x{x.shape[-2]}) x {len(settings)} settings = {len(est)} pairs, "
          f"{time.time() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print("| settings | pairs | Spearman | median relative error | median signed error |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, m in [("all", np.ones(len(est), bool))] + [(k, kind == k) for k in ("quality", "FD", "random")]:
        print(f"| {label} | {m.sum()} | {spearman(est[m], exact[m]):.4f} | {np.median(np.abs(rel[m])) * 100:.1f} % "
              f"| {np.median(rel[m]) * 100:+.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

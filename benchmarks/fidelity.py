"""Fidelity to libjpeg-turbo: fdgpu (and kornia, in the same run) against Pillow's save + load.

    python benchmarks/fidelity.py --data ../shared/data [--first 0 --count 50]

Prints a markdown table: for each subsampling and quality, the share of pixel values of ``fdgpu.jpeg`` identical to
Pillow's, the largest difference in levels, the mean PSNR (dB; "inf" when identical), and the mean PSNR of
``kornia.enhance.jpeg_codec_differentiable`` against Pillow (kornia implements 4:2:0 only). Images: natural photos
``first .. first + count - 1`` sorted by name (0-99 are the tests' split; 100-199 are kept for evaluation).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import fdgpu
from fdgpu.choices import SUBSAMPLINGS
from fdgpu.pillow import roundtrip


def pillow(a: np.ndarray, q: int, sub: str) -> np.ndarray:
    return roundtrip(a, q, sub).astype(np.float64)


def psnr(a, b) -> float:
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("FDGPU_DATA"), help="folder with natural/*.png ($FDGPU_DATA)")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--qualities", default="1,10,25,50,75,90,95,100")
    args = p.parse_args(argv)
    if not args.data:
        p.error("expected --data DIR (or FDGPU_DATA) pointing at a folder with natural/*.png")
    files = sorted((Path(args.data) / "natural").glob("*.png"))[args.first: args.first + args.count]
    if not files:
        p.error(f"no PNG files in {Path(args.data) / 'natural'}")
    imgs = [np.asarray(Image.open(f).convert("RGB")).copy() for f in files]
    x = torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in imgs]).float() / 255
    try:
        import kornia
    except ImportError:
        kornia = None
    print(f"natural images {args.first}-{args.first + len(files) - 1} ({len(files)}), "
          f"fdgpu {fdgpu.__version__}, kornia {kornia.__version__ if kornia else 'not installed'}, "
          f"Pillow {Image.__version__}\n")
    print("| subsampling | quality | fdgpu identical values | fdgpu max diff (levels) | fdgpu PSNR (dB) "
          "| kornia PSNR (dB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for sub in reversed(tuple(SUBSAMPLINGS)):  # 4:2:0 (Pillow's default) first
        for q in [int(v) for v in args.qualities.split(",")]:
            ours = (fdgpu.jpeg(x, q, subsampling=sub) * 255).round().permute(0, 2, 3, 1).numpy()
            refs = [pillow(a, q, sub) for a in imgs]
            ps = [psnr(o, r) for o, r in zip(ours, refs)]
            same = np.mean([np.mean(o == r) for o, r in zip(ours, refs)])
            worst = max(float(np.abs(o - r).max()) for o, r in zip(ours, refs))
            kp = "n/a"
            if kornia is not None and sub == "4:2:0":
                with torch.no_grad():
                    k = kornia.enhance.jpeg_codec_differentiable(x, torch.full((len(imgs),), float(q)))
                k = (k.clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy()
                kp = f"{np.mean([psnr(a, r) for a, r in zip(k, refs)]):.2f}"
            print(f"| {sub} | {q} | {100 * same:.1f} % | {worst:.0f} | {np.mean(ps):.2f} | {kp} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

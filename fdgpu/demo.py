"""``fdgpu demo``: JPEG (q75/q50/q20) and Feature Distillation (1x/2x/3x) on scikit-image's bundled sample photos.

Prints PSNR / SSIM against the original and the time per image (the layout of the FD paper's supplementary
Table 1), and writes a side-by-side figure of centre crops. Needs no data beyond what scikit-image ships
(``pip install 'fdgpu[demo]'``). PSNR and SSIM are deterministic; the times are wall-clock medians over
``--repeats`` runs with their min-max, and on a shared or busy CPU they vary several-fold from run to run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .files import write_file

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
METHODS = (("JPEG q75", "jpeg", 75), ("JPEG q50", "jpeg", 50), ("JPEG q20", "jpeg", 20),
           ("FD 1x", "fd", 1.0), ("FD 2x", "fd", 2.0), ("FD 3x", "fd", 3.0),
           # the FD authors' public code: table 25/30 on each RGB channel (fdgpu.tables.fd(k, variant="official"))
           ("FD-official 1x", "fd-official", 1.0), ("FD-official 2x", "fd-official", 2.0),
           ("FD-official 3x", "fd-official", 3.0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fdgpu-demo", help="output folder for the figure and table (default: %(default)s)")
    p.add_argument("--images", default=",".join(SAMPLES),
                   help="comma-separated scikit-image sample names (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed runs over all images per method; the table gives their median and min-max "
                        "(default: %(default)s)")
    p.add_argument("--crop", type=int, default=128,
                   help="side of the centre crop each figure panel shows, in pixels (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_samples(names):
    """Sample photos as float ``(3, H, W)`` tensors in [0, 1], keyed by name."""
    import skimage.data
    import torch

    out = {}
    for name in names:
        fn = getattr(skimage.data, name, None)
        if fn is None:
            raise ValueError(f"--images: expected scikit-image sample names such as {', '.join(SAMPLES)}, got {name!r}")
        a = fn()
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"--images: expected RGB sample photos, got {name!r} with shape {a.shape}")
        out[name] = torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255
    return out


def apply(method: str, arg, x):
    import fdgpu

    if method == "jpeg":
        return fdgpu.jpeg(x, arg)
    return fdgpu.feature_distillation(x, arg, variant="official" if method == "fd-official" else "paper")


def measure(images, repeats: int = 3, progress: bool = False):
    """Rows of (label, mean PSNR dB, mean SSIM, ms per image, outputs by image name).

    ms per image is a dict: ``median``, ``min``, ``max`` over ``repeats`` runs, each run the mean over the images;
    None with ``repeats=0`` (PSNR and SSIM only, nothing timed).
    """
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    from tqdm import tqdm

    repeats = max(0, repeats)
    rows = []
    bar = tqdm(total=len(METHODS) * len(images) * (repeats + 1), desc="fdgpu demo", unit="call", disable=not progress,
               file=sys.stderr, leave=False)
    for label, method, arg in METHODS:
        bar.set_postfix_str(label)
        outs, ps, ss = {}, [], []
        for name, x in images.items():
            y = apply(method, arg, x)  # also the warm-up of the timed runs below
            bar.update()
            a, b = x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy()
            ps.append(peak_signal_noise_ratio(a, b, data_range=1.0))
            ss.append(structural_similarity(a, b, channel_axis=-1, data_range=1.0))
            outs[name] = y
        runs = []
        for _ in range(repeats):
            total = 0.0
            for x in images.values():
                t0 = time.perf_counter()
                apply(method, arg, x)
                total += time.perf_counter() - t0
                bar.update()
            runs.append(1e3 * total / len(images))
        ms = {"median": float(np.median(runs)), "min": float(np.min(runs)), "max": float(np.max(runs)),
              "runs": len(runs)} if runs else None
        rows.append((label, float(np.mean(ps)), float(np.mean(ss)), ms, outs))
    bar.close()
    return rows


def table(rows, n_images: int) -> str:
    runs = rows[0][3]["runs"] if rows else 0
    lines = [f"| method | PSNR (dB) | SSIM | ms / image, median of {runs} | min-max |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {label} | {p:.2f} | {s:.4f} | {ms['median']:.1f} | {ms['min']:.1f}-{ms['max']:.1f} |"
              for label, p, s, ms, _ in rows]
    return ("\n".join(lines) + f"\n\nmeans over {n_images} scikit-image sample photos; time = fdgpu forward on the "
            f"CPU, the median (and min-max) of {runs} run(s) over all photos. PSNR and SSIM are exact; the times "
            f"depend on the machine and its load (several-fold on a busy CPU).\n")


def figure(images, rows, path: Path, crop: int = 128) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    cols = ["original"] + [r[0] for r in rows]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.2 * len(cols), 2.3 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        x = images[name]
        h, w = x.shape[-2:]
        s = min(h, w, crop)  # a centre crop shows the blocking that a thumbnail hides
        top, left = (h - s) // 2, (w - s) // 2
        panels = [x] + [r[4][name] for r in rows]
        for j, (col, img) in enumerate(zip(cols, panels)):
            ax = axes[i, j]
            ax.imshow(img[:, top:top + s, left:left + s].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col, fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle(f"centre crops (up to {crop} x {crop} pixels, enlarged without smoothing) of each photo",
                 fontsize=10)
    fig.tight_layout()
    try:
        write_file(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)


def run(args) -> int:
    if args.repeats < 1 or args.crop < 8:
        print(f"fdgpu demo: expected --repeats >= 1 and --crop >= 8, got {args.repeats}, {args.crop}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_samples([n.strip() for n in args.images.split(",") if n.strip()])
    if not args.quiet:
        print(f"fdgpu demo: JPEG q75/q50/q20 and FD 1x/2x/3x on {len(images)} photo(s), {args.repeats} timed run(s) "
              f"each; the first call of each method also warms it up", file=sys.stderr, flush=True)
    rows = measure(images, args.repeats, progress=not args.quiet)
    text = table(rows, len(images))
    print(text)
    write_file(out / "table.md", lambda fh: fh.write(text.encode()))
    figure(images, rows, out / "demo.png", args.crop)
    print(f"wrote {out / 'demo.png'} (centre crops of {args.crop} px) and {out / 'table.md'}")
    return 0

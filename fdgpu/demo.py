"""``fdgpu demo``: JPEG (q75/q50/q20) and Feature Distillation (1x/2x/3x) on scikit-image's bundled sample photos.

Prints PSNR / SSIM against the original and the time per image (the layout of the FD paper's supplementary
Table 1), and writes a side-by-side figure. Needs no data beyond what scikit-image ships.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
METHODS = (("JPEG q75", "jpeg", 75), ("JPEG q50", "jpeg", 50), ("JPEG q20", "jpeg", 20),
           ("FD 1x", "fd", 1.0), ("FD 2x", "fd", 2.0), ("FD 3x", "fd", 3.0))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fdgpu-demo", help="output folder for the figure and table (default: %(default)s)")
    p.add_argument("--images", default=",".join(SAMPLES),
                   help="comma-separated scikit-image sample names (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per method; the median is reported")


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

    return fdgpu.jpeg(x, arg) if method == "jpeg" else fdgpu.feature_distillation(x, arg)


def measure(images, repeats: int = 3):
    """Rows of (label, mean PSNR dB, mean SSIM, median ms per image, outputs by image name)."""
    import numpy as np
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rows = []
    for label, method, arg in METHODS:
        outs, ps, ss, times = {}, [], [], []
        for name, x in images.items():
            apply(method, arg, x)  # warm-up
            t = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                y = apply(method, arg, x)
                t.append(time.perf_counter() - t0)
            times.append(float(np.median(t)))
            a, b = x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy()
            ps.append(peak_signal_noise_ratio(a, b, data_range=1.0))
            ss.append(structural_similarity(a, b, channel_axis=-1, data_range=1.0))
            outs[name] = y
        rows.append((label, float(np.mean(ps)), float(np.mean(ss)), 1e3 * float(np.mean(times)), outs))
    return rows


def table(rows, n_images: int) -> str:
    lines = ["| method | PSNR (dB) | SSIM | ms / image |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {label} | {p:.2f} | {s:.4f} | {ms:.1f} |" for label, p, s, ms, _ in rows]
    return "\n".join(lines) + f"\n\nmeans over {n_images} scikit-image sample photos; time = fdgpu forward, CPU\n"


def figure(images, rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    cols = ["original"] + [r[0] for r in rows]
    fig, axes = plt.subplots(len(names), len(cols), figsize=(2.2 * len(cols), 2.3 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        x = images[name]
        h, w = x.shape[-2:]
        s = min(h, w, 128)  # a centre crop shows the blocking that a thumbnail hides
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = load_samples([n.strip() for n in args.images.split(",") if n.strip()])
    rows = measure(images, args.repeats)
    text = table(rows, len(images))
    print(text)
    (out / "table.md").write_text(text)
    figure(images, rows, out / "demo.png")
    print(f"wrote {out / 'demo.png'} and {out / 'table.md'}")
    return 0

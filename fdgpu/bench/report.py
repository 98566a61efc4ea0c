"""The results of ``fdgpu bench`` (and of the baselines suite) as a text table and a bar chart."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..files import write_file
from .providers import PROVIDERS


def table(results: list) -> str:
    """Text table of result rows: median, IQR and minimum per image, and both ratios to fdgpu_fd."""
    lines = [f"{'size':>5} {'batch':>5}  {'method':<22} {'median ms/img':>13} {'IQR':>9} {'min':>9} {'n':>3}  "
             f"{'x fd (median)':>13} {'x fd (min)':>10}"]
    for r in results:
        if "median_ms" not in r:
            lines.append(f"{r['size']:>5} {r['batch']:>5}  {r['method']:<22} {'skipped: ' + r.get('skipped', '')}")
            continue
        ratio = f"{r['ratio_to_fdgpu']:.3g}" if r.get("ratio_to_fdgpu") is not None else "-"
        ratio_min = f"{r['ratio_min_to_fdgpu']:.3g}" if r.get("ratio_min_to_fdgpu") is not None else "-"
        lines.append(f"{r['size']:>5} {r['batch']:>5}  {r['method']:<22} {r['median_ms']:>13.4g} "
                     f"{r['iqr_ms']:>9.3g} {r.get('min_ms', float('nan')):>9.4g} {r['n']:>3}  {ratio:>13} "
                     f"{ratio_min:>10}")
    return "\n".join(lines)


def plot(results: list, path: Path, title: str, order: Sequence[str] = tuple(PROVIDERS)) -> None:
    """Bar chart of the median time per image of each method (in ``order``) per (size, batch) cell, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = sorted({(r["size"], r["batch"]) for r in results})
    methods = [m for m in order if any(r["method"] == m and "median_ms" in r for r in results)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cells) + 3), 4.8))
    width = 0.8 / max(len(methods), 1)
    cmap = plt.get_cmap("tab20")
    for k, m in enumerate(methods):
        vals = []
        for c in cells:
            hit = [r for r in results if (r["size"], r["batch"]) == c and r["method"] == m and "median_ms" in r]
            vals.append(hit[0]["median_ms"] if hit else np.nan)
        ax.bar(np.arange(len(cells)) + (k - (len(methods) - 1) / 2) * width, vals, width, label=m, color=cmap(k))
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(cells)), [f"{s}x{s}, batch {b}" for s, b in cells])
    ax.set_ylabel("time per image (ms, median, log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    try:  # drawn whole, then renamed: never a partial bench.png
        write_file(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)

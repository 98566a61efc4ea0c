"""Render evaluation rows (from :func:`fdgpu.eval.evaluate`) as a markdown table, JSON and an accuracy-vs-eps plot."""
from __future__ import annotations

import json
from typing import Dict, Optional, Sequence


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f}"


def markdown_table(rows: Sequence[Dict]) -> str:
    """A markdown table: defence, attack, view, clean/adversarial top-1 (%) and mean top-label probability."""
    lines = ["| defence | attack | view | n | clean top-1 % | adv top-1 % | clean p(top) | adv p(top) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['defence']} | {r['attack']} | {r['view']} | {r['n']} | {_pct(r['clean_acc'])} | "
                     f"{_pct(r['adv_acc'])} | {r['clean_top_prob']:.3f} | {r['adv_top_prob']:.3f} |")
    return "\n".join(lines) + "\n"


def write_json(path: str, rows: Sequence[Dict], meta: Optional[Dict] = None) -> None:
    with open(path, "w") as fh:
        json.dump({"meta": meta or {}, "results": list(rows)}, fh, indent=2, sort_keys=False)
        fh.write("\n")


def plot(rows: Sequence[Dict], path: str, title: str = "") -> Optional[str]:
    """Adversarial top-1 vs L-inf eps (pixel levels), one panel per view, one line per (defence, attack kind).

    Clean accuracy is drawn at eps = 0. Returns ``path``, or ``None`` when no row has an eps to plot.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get("eps_levels") is not None]
    if not pts:
        return None
    views = sorted({r["view"] for r in pts}, key=lambda v: ("-", "transfer", "exact", "ste", "soft", "bpda").index(v)
                   if v in ("-", "transfer", "exact", "ste", "soft", "bpda") else 99)
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 3.6), squeeze=False, sharey=True)
    for ax, view in zip(axes[0], views):
        series: Dict = {}
        for r in pts:
            if r["view"] == view or r["view"] == "-":
                series.setdefault((r["defence"], r["attack_kind"]), {})[r["eps_levels"]] = r["adv_acc"]
                series[(r["defence"], r["attack_kind"])][0.0] = r["clean_acc"]
        for (defence, kind), curve in sorted(series.items()):
            xs = sorted(curve)
            ax.plot(xs, [100 * curve[e] for e in xs], marker="o", label=f"{defence} / {kind}")
        ax.set_title("undefended / white-box" if view == "-" else f"view: {view}")
        ax.set_xlabel("eps (pixel levels of 255)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

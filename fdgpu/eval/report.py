"""Render evaluation rows (from :func:`fdgpu.eval.evaluate`) as a markdown table, JSON and an accuracy-vs-eps plot."""
from __future__ import annotations

import json
from typing import Dict, Optional, Sequence, Tuple


def _pct(v: float) -> str:
    return f"{100.0 * v:.1f}"


def markdown_table(rows: Sequence[Dict]) -> str:
    """A markdown table: defence, attack, view, clean/adversarial top-1 (%), mean top-label probability, the EOT
    draws and restarts each attack used, and ``late``: images it first fooled in the final 20 % of its iterations
    or in its last restart (a budget-limited number when above 0; empty for transfer rows)."""
    lines = ["| defence | attack | view | n | clean top-1 % | adv top-1 % | clean p(top) | adv p(top) | EOT "
             "| restarts | late |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        late = "" if r["view"] == "transfer" or r["attack_kind"] == "none" else r.get("late_fooled", "")
        lines.append(f"| {r['defence']} | {r['attack']} | {r['view']} | {r['n']} | {_pct(r['clean_acc'])} | "
                     f"{_pct(r['adv_acc'])} | {r['clean_top_prob']:.3f} | {r['adv_top_prob']:.3f} | "
                     f"{r.get('eot_samples', 1)} | {r.get('restarts', 1)} | {late} |")
    return "\n".join(lines) + "\n"


def _budget_text(w: Dict) -> str:
    if w["norm"] == "linf":
        return f"L-inf {w['eps_levels']:g}/255"
    return f"L2 {w['eps']:g}"


def worst_case_table(rows: Sequence[Dict]) -> str:
    """Markdown: per defence and budget, the per-image worst case over every attack and view (the headline), the
    worst case per view, and the attacks that entered. Empty when no row has per-image results."""
    from .core import worst_case

    ws = worst_case(rows)
    if not ws:
        return ""
    lines = ["Worst case per image (robust only if clean-correct and every attack in every view fails; the "
             "headline number of each defence):", "",
             "| defence | budget | n | clean top-1 % | worst case % | worst per view % | attacks |",
             "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for w in ws:
        per_view = ", ".join(f"{v} {_pct(a)}" for v, a in w["per_view"].items())
        lines.append(f"| {w['defence']} | {_budget_text(w)} | {w['n']} | {_pct(w['clean_acc'])} | "
                     f"**{_pct(w['worst_acc'])}** | {per_view} | {', '.join(w['per_attack'])} |")
    return "\n".join(lines) + "\n"


def attribution_table(rows: Sequence[Dict]) -> str:
    """Markdown: per defence and budget, which attack and view did the work of the worst case: the clean-correct
    images each (attack, view) fooled, those it was the first to fool (in the order of the rows: the order of the
    attacks, then of the views) and those it alone fooled. Empty when no row has per-image results."""
    from .core import worst_case

    ws = worst_case(rows)
    if not ws:
        return ""
    lines = ["Which attack and view fooled the images (clean-correct images fooled; first: not fooled by an earlier "
             "row, these sum to what the worst case fooled; alone: fooled by no other row):", "",
             "| defence | budget | attack | view | fooled | first | alone |",
             "| --- | --- | --- | --- | ---: | ---: | ---: |"]
    for w in ws:
        for a in w["attribution"]:
            lines.append(f"| {w['defence']} | {_budget_text(w)} | {a['attack']} | {a['view']} | {a['fooled']} | "
                         f"{a['first']} | {a['only']} |")
    return "\n".join(lines) + "\n"


def sanity_section(sanity: Sequence[Dict]) -> str:
    """Markdown bullets of the AutoAttack-style sanity checks (empty when there are none)."""
    if not sanity:
        return ""
    lines = ["Sanity checks (AutoAttack-style: randomness and gradients on the first batch, the attacks' budgets on "
             "all images):", ""]
    for f in sanity:
        mark = "WARNING" if f["flagged"] else "note"
        view = "" if f["view"] == "-" else f" / {f['view']}"
        lines.append(f"- {mark} [{f['check']}] {f['defence']}{view}: {f['detail']}")
    return "\n".join(lines) + "\n"


def markdown_report(rows: Sequence[Dict], sanity: Optional[Sequence[Dict]] = None) -> str:
    """The full report: :func:`markdown_table`, then :func:`worst_case_table`, :func:`attribution_table` and
    :func:`sanity_section`."""
    parts = [markdown_table(rows), worst_case_table(rows), attribution_table(rows),
             sanity_section(sanity or getattr(rows, "sanity", []))]
    return "\n".join(p for p in parts if p)


def write_json(path, rows: Sequence[Dict], meta: Optional[Dict] = None) -> None:
    """``{"meta", "results", "worst_case", "sanity"}`` (the last two computed from / carried by ``rows``).

    ``path``: a file name (written whole or not at all, :func:`fdgpu.files.write_file`) or a binary file object.
    """
    from ..files import write_file
    from .core import worst_case

    data = {"meta": meta or {}, "results": list(rows), "worst_case": worst_case(rows),
            "sanity": list(getattr(rows, "sanity", []))}
    text = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    if hasattr(path, "write"):
        path.write(text)
    else:
        write_file(path, lambda fh: fh.write(text))


_SPARE_MARKERS = ("X", "*", "h", "p", "<", ">", "d", "8")


def plot_styles(rows: Sequence[Dict]) -> Tuple[Dict[str, str], Dict[str, Tuple]]:
    """Colours per defence and (line style, marker) per attack kind, the same in every panel of :func:`plot`.

    The undefended model (``none``) is black; other defences take tab10 (tab20 beyond 9) colours in first-seen
    order. Returns ``({defence: colour}, {attack_kind: (linestyle, marker)})``.
    """
    import matplotlib

    defences = list(dict.fromkeys(r["defence"] for r in rows))
    others = [d for d in defences if d != "none"]
    cmap = matplotlib.colormaps["tab10" if len(others) <= 9 else "tab20"]
    # tab10's grey is too close to black
    palette = [c for i, c in enumerate(getattr(cmap, "colors")) if len(others) > 9 or i != 7]
    colours = {d: palette[i % len(palette)] for i, d in enumerate(others)}
    if "none" in defences:
        colours["none"] = "black"
    from ..registry import ATTACKS

    kinds = [k for k in dict.fromkeys(r["attack_kind"] for r in rows) if k != "none"]
    # Line style and marker per attack kind as registered; kinds registered without one cycle through spare styles.
    spare = ((((0, (2 + i, 1 + i % 3)), _SPARE_MARKERS[i % len(_SPARE_MARKERS)]) for i in range(len(kinds))))
    styles = {}
    for k in kinds:
        entry = ATTACKS.get(k)
        styles[k] = entry.style if entry is not None and entry.style is not None else next(spare)
    return colours, styles


def plot(rows: Sequence[Dict], path, title: str = ""):
    """Adversarial top-1 vs L-inf eps (pixel levels), one panel per attacker view.

    One colour per defence and one line style + marker per attack kind, the same in every panel; the undefended
    model under a white-box attack (view ``-``) is drawn in black in every panel for reference. Clean accuracy is the
    point at eps = 0. Both legends sit below the panels (never over data) and a long title is wrapped, not cut.
    ``path``: a file name (its suffix picks the format, as matplotlib's ``savefig``) or a binary file object (PNG).
    Returns ``path``, or ``None`` when no row has an eps to plot.
    """
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    pts = [r for r in rows if r.get("eps_levels") is not None]
    if not pts:
        return None
    colours, styles = plot_styles(pts)
    from .specs import VIEWS

    order = ("-",) + VIEWS + ("query",)
    views = sorted({r["view"] for r in pts} - ({"-"} if any(r["view"] != "-" for r in pts) else set()),
                   key=lambda v: order.index(v) if v in order else 99)
    clean = {r["defence"]: r["clean_acc"] for r in rows}
    width = max(4.0 * len(views), 6.0)
    fig, axes = plt.subplots(1, len(views), figsize=(width, 3.4), squeeze=False, sharey=True, layout="constrained")
    for ax, view in zip(axes[0], views):
        series: Dict = {}
        for r in pts:
            if r["view"] == view or r["view"] == "-":
                curve = series.setdefault((r["defence"], r["attack_kind"]), {})
                curve[r["eps_levels"]] = r["adv_acc"]
                curve[0.0] = clean.get(r["defence"], r["clean_acc"])
        for (defence, kind), curve in sorted(series.items(), key=lambda kv: (kv[0][0] != "none",) + kv[0]):
            xs = sorted(curve)
            ls, marker = styles[kind]
            ax.plot(xs, [100 * curve[e] for e in xs], color=colours[defence], linestyle=ls, marker=marker,
                    markersize=4, linewidth=1.4, alpha=0.9)
        ax.set_title("undefended, white-box" if view == "-" else f"attacker's view: {view}", fontsize=10)
        ax.set_xlabel("eps (pixel levels of 255)")
        ax.set_xticks(sorted({0.0} | {r["eps_levels"] for r in pts}))
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    d_handles = [Line2D([], [], color=c, linewidth=3, label=d + (" (white-box)" if d == "none" else ""))
                 for d, c in colours.items()]
    a_handles = [Line2D([], [], color="0.3", linestyle=ls, marker=m, label=k) for k, (ls, m) in styles.items()]
    handles = d_handles + a_handles
    ncol = max(1, min(len(handles), int(width * 1.1)))
    fig.legend(handles=handles, title="colour: defence    line: attack", loc="outside lower center", ncol=ncol,
               fontsize=8, title_fontsize=8, frameon=False)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, width=int(width * 15), break_on_hyphens=False)), fontsize=8)
    try:
        fig.savefig(path, dpi=120, format="png" if hasattr(path, "write") else None)
    finally:
        plt.close(fig)
    return path

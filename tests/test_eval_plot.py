"""The eval plot: one colour per defence and one line style per attack, the same in every panel."""
import pytest

from fdgpu.eval.report import plot, plot_styles

pytest.importorskip("matplotlib")


def _rows():
    rows = []
    for d in ["none", "jpeg:75", "fd:1", "quilting"]:
        rows.append(dict(defence=d, attack="none", attack_kind="none", eps_levels=None, view="-", clean_acc=0.9,
                         adv_acc=0.9))
        for kind in ("fgsm", "pgd", "apgd"):
            for e in (2.0, 8.0):
                for v in (["-"] if d == "none" else ["transfer", "bpda"]):
                    rows.append(dict(defence=d, attack=f"{kind}:{e:g}", attack_kind=kind, eps_levels=e, view=v,
                                     clean_acc=0.9, adv_acc=0.5 - e / 20))
    return rows


def test_styles_one_colour_per_defence_one_style_per_attack():
    colours, styles = plot_styles(_rows())
    assert set(colours) == {"none", "jpeg:75", "fd:1", "quilting"} and colours["none"] == "black"
    assert len({str(c) for c in colours.values()}) == 4
    assert set(styles) == {"fgsm", "pgd", "apgd"} and len(set(styles.values())) == 3
    many = [dict(defence=f"jpeg:{q}", attack_kind=f"k{q % 5}") for q in range(1, 15)]
    colours, styles = plot_styles(many)
    assert len({str(c) for c in colours.values()}) == 14 and len(set(styles.values())) == 5


def test_plot_panels_and_lines_use_the_styles(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    assert plot(_rows(), str(tmp_path / "p.png"), title="x " * 200) == str(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    fig = figs[0]
    colours, styles = plot_styles(_rows())
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["attacker's view: transfer", "attacker's view: bpda"]
    for ax in axes:
        # 3 defences x 3 attacks, plus the undefended white-box reference's 3 attacks
        assert len(ax.lines) == 12
        used = {(to_rgba(line.get_color()), line.get_marker()) for line in ax.lines}
        assert used == {(to_rgba(colours[d]), styles[k][1]) for d in colours for k in styles}
    assert "\n" in fig._suptitle.get_text()  # a long title is wrapped, not cut
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == 4 + 3
    plt.close("all")

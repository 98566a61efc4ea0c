"""fdgpu.eval: spec parsing, evaluate(), reports, the ``fdgpu eval`` CLI (single process and torchrun), vaccination.

The CLI tests need no shared data: they write a tiny random CIFAR-like .npz and a randomly initialised resnet20.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import fdgpu
from fdgpu.cli import main
from fdgpu.eval import (build_defence, evaluate, markdown_report, markdown_table, parse_attack, parse_defence, plot,
                        worst_case)
from fdgpu.models import cifar_resnet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: avoid OpenMP oversubscription (see test_attacks.py)
    yield
    torch.set_num_threads(n)


def toy():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 10)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 12-image random .npz and a random resnet20 state_dict."""
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    np.savez(d / "tiny.npz", x=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 10, 12))
    torch.manual_seed(0)
    torch.save(cifar_resnet(20).state_dict(), d / "r20.pt")
    return d


# ---------------------------------------------------------------- specs
@pytest.mark.parametrize("spec, kind, eps_levels, steps", [
    ("none", "none", 0, 0), ("fgsm:8", "fgsm", 8, 0), ("fgsm:8/255", "fgsm", 8, 0), ("pgd:4:10", "pgd", 4, 10),
    ("pgd:4:10:1", "pgd", 4, 10), ("eot:2:5:4", "eot", 2, 5)])
def test_parse_attack(spec, kind, eps_levels, steps):
    a = parse_attack(spec)
    assert a.kind == kind and round(a.eps * 255, 6) == eps_levels and a.steps == steps


def test_parse_apgd_and_options():
    a = parse_attack("apgd:2:100")
    assert (a.kind, a.steps, a.samples, a.restarts) == ("apgd", 100, None, None)
    a = parse_attack("apgd-t:8:50:targets=3:restarts=2")
    assert (a.kind, a.targets, a.restarts) == ("apgd-t", 3, 2)
    assert parse_attack("pgd:8:10:1:eot=20").samples == 20 and parse_attack("pgd:8:10:1").alpha == 1 / 255
    assert parse_attack("apgd-dlr:8/255:10:eot=4").samples == 4
    for bad, msg in [("apgd:8", "expected one of"), ("apgd:8:10:foo=1", "expected one of restarts"),
                     ("apgd:8:10:restarts=0", "restarts"), ("fgsm:8:restarts=2", "no random start"),
                     ("pgd:8:10:targets=2", "apgd-t only"), ("eot:8:10:4:eot=2", "already gives"),
                     ("pgd:8:eot=2:10", "after the positional"), ("none:eot=2", "no options")]:
        with pytest.raises(ValueError, match=msg):
            parse_attack(bad)


def test_parse_attack_l2_and_errors():
    assert parse_attack("pgdl2:0.5:10").eps == 0.5
    for bad, msg in [("pgd:8", "expected one of"), ("fgsm:x", "expected a number"), ("pgd:8:0", "STEPS"),
                     ("fgsm:300", "pixel levels in \\[0, 255\\]")]:
        with pytest.raises(ValueError, match=msg):
            parse_attack(bad)


def test_parse_defence_and_errors():
    assert parse_defence("jpeg:75").args == (75.0,)
    assert parse_defence("fd-design:2").args == (2.0, 15)
    assert parse_defence("jpeg-rand:30:90").args == (30, 90)
    assert parse_defence("quilting:k=3,mode=x").kwargs == {"k": 3, "mode": "x"}
    for bad, msg in [("jpeg:0", "quality in \\[1, 100\\]"), ("fd:-1", "strength > 0"), ("blur:3", "expected one of"),
                     ("jpeg-rand:90:30", "LO <= HI")]:
        with pytest.raises(ValueError, match=msg):
            parse_defence(bad)


def test_build_defence_modules_and_backward():
    import fdgpu
    x = torch.rand(2, 3, 16, 16)
    assert isinstance(build_defence("fd:2", "bpda"), fdgpu.FDJpeg)
    torch.testing.assert_close(build_defence("jpeg:50", "exact")(x), fdgpu.jpeg(x, 50))
    assert build_defence("jpeg:50", "soft").backward == "soft"
    with pytest.raises(ValueError, match="calibration images"):
        build_defence("fd-design:2")
    design = build_defence("fd-design:2:10", calib=lambda: torch.rand(4, 3, 16, 16))
    assert int((design.luma_table == 1).sum()) == 10


def test_tables_file_defence(tmp_path):
    import fdgpu
    torch.save({"luma": fdgpu.tables.fd(2.0)}, tmp_path / "t.pt")
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(build_defence(f"tables:{tmp_path / 't.pt'}")(x), fdgpu.feature_distillation(x, 2.0))


def test_baseline_defence_degrades_clearly():
    try:
        from fdgpu.baselines import make_defence  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="make_defence"):
            build_defence("quilting")
    else:
        assert isinstance(build_defence("tvm"), nn.Module)


def test_randomised_defences_are_seeded():
    x = torch.rand(3, 3, 16, 16)
    for spec in ("jpeg-rand:20:90", "jpgnoise:75"):
        d = build_defence(spec, seed=3)
        a = d(x)
        d.reseed(3)
        torch.testing.assert_close(d(x), a)


def test_jpgnoise_permutes_the_jpeg_change():
    import fdgpu
    x = torch.rand(2, 3, 16, 16)
    change = (fdgpu.jpeg(x, 75) - x).flatten(1).sort(1).values
    d = (build_defence("jpgnoise:75")(x) - x).flatten(1)
    # same multiset of changes up to the final [0, 1] clamp
    inside = ((x.flatten(1) + d) > 0) & ((x.flatten(1) + d) < 1)
    assert inside.float().mean() > 0.5
    assert torch.allclose(d.abs().sum(1), change.abs().sum(1), rtol=0.2)


# ---------------------------------------------------------------- evaluate
def test_evaluate_rows_and_determinism():
    x, y = torch.rand(6, 3, 16, 16), torch.randint(0, 10, (6,))
    args = (toy(), x, y, ["none", "jpeg:75", "jpeg-rand:50:90"], ["none", "fgsm:8", "pgd:8:2"], ["transfer", "bpda"])
    rows = evaluate(*args, batch_size=4, seed=1)
    assert len(rows) == 3 + 2 * (1 + 2 * 2)
    assert {r["view"] for r in rows if r["defence"] == "none"} == {"-"}
    for r in rows:
        assert 0 <= r["adv_acc"] <= 1 and 0 < r["adv_top_prob"] <= 1 and r["n"] == 6
    assert evaluate(*args, batch_size=4, seed=1) == rows


def test_evaluate_eot_defaults_worst_case_and_sanity():
    x, y = torch.rand(6, 3, 16, 16), torch.randint(0, 10, (6,))
    net = toy()
    rows = evaluate(net, x, y, ["none", "jpeg:75", "jpeg-rand:50:90"], ["none", "fgsm:4", "apgd-dlr:4:2:restarts=2"],
                    ["transfer", "exact", "bpda"], batch_size=4, seed=3, eot_samples=3)
    for r in rows:
        adaptive = r["view"] in ("exact", "bpda") and r["attack"] != "none"
        assert r["eot_samples"] == (3 if adaptive and r["defence"] == "jpeg-rand:50:90" else 1), r
        assert r["randomised"] == (r["defence"] == "jpeg-rand:50:90")
        assert r["restarts"] == (2 if r["attack"].startswith("apgd") else 1)
        assert len(r["adv_bits"]) == 6 and r["adv_bits"].count("1") == round(r["adv_acc"] * 6)
        assert r["clean_bits"].count("1") == round(r["clean_acc"] * 6)
        assert len(r["attack_seeds"]) == (2 if r["attack"].startswith("apgd") else 0)
    for w in worst_case(rows):  # recomputed by hand from the per-image bits
        group = [r for r in rows if r["defence"] == w["defence"] and r["attack"] != "none"]
        robust = [all(r["adv_bits"][i] == "1" and r["clean_bits"][i] == "1" for r in group) for i in range(6)]
        assert w["worst_acc"] == sum(robust) / 6 and w["eps_levels"] == 4.0
        assert w["worst_acc"] <= min(r["adv_acc"] for r in group)
        assert set(w["per_view"]) == {r["view"] for r in group}
    checks = {(f["check"], f["defence"], f["view"]) for f in rows.sanity}
    assert ("zero-gradient", "jpeg:75", "exact") in checks and ("zero-gradient", "jpeg:75", "bpda") not in checks
    assert ("randomness", "jpeg-rand:50:90", "-") in checks and not any(c[0] == "no-eot" for c in checks)
    one = evaluate(net, x, y, ["jpeg-rand:50:90"], ["fgsm:4"], ["bpda"], batch_size=4, eot_samples=1)
    assert any(f["check"] == "no-eot" and f["flagged"] for f in one.sanity)
    report = markdown_report(rows)
    assert "Worst case per image" in report and "[zero-gradient] jpeg:75 / exact" in report


def test_randomised_defences_are_attacked_to_the_highest_loss_iterate(monkeypatch):
    """Adaptive attacks on a randomised defence run under ``selecting("max-loss")`` (an iterate that fooled one
    draw is often classified correctly again under the next); deterministic defences keep the first fooling iterate,
    transfer attacks the highest-loss one; each row names its rule."""
    from fdgpu.attacks.gradient import _SELECTION
    from fdgpu.eval import core

    seen = []
    real = core.run_attack

    def spy(spec, model, *a, **k):
        seen.append((spec.text, _SELECTION.get()))
        return real(spec, model, *a, **k)

    monkeypatch.setattr(core, "run_attack", spy)
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    rows = evaluate(toy(), x, y, ["jpeg:75", "jpeg-rand:50:90"], ["none", "pgd:4:2", "square:4:5"],
                    ["transfer", "bpda"], batch_size=4, seed=0, eot_samples=2)
    by = {(r["defence"], r["attack"], r["view"]): r["selection"] for r in rows}
    assert by[("jpeg:75", "none", "-")] is None
    assert by[("jpeg:75", "pgd:4:2", "bpda")] == by[("jpeg:75", "square:4:5", "query")] == "first-fooled"
    assert by[("jpeg-rand:50:90", "pgd:4:2", "bpda")] == by[("jpeg-rand:50:90", "square:4:5", "query")] == "max-loss"
    assert by[("jpeg-rand:50:90", "pgd:4:2", "transfer")] == "max-loss"
    # the rule each row reports is the one its attack ran under (transfer attacks run once, for the first defence)
    assert sorted(set(seen)) == [("pgd:4:2", "first-fooled"), ("pgd:4:2", "max-loss"),
                                 ("square:4:5", "first-fooled"), ("square:4:5", "max-loss")]
    assert seen.count(("pgd:4:2", "max-loss")) == 2  # transfer (once) and bpda on jpeg-rand


def test_sanity_flags_an_undeclared_random_defence():
    from fdgpu.eval.core import _sanity
    from fdgpu.eval.specs import DefenceSpec

    class Noisy(nn.Module):  # random on every call, with no reseed(): not reproducible by seed
        def forward(self, t):
            return (t + 0.1 * torch.rand(t.shape)).clamp(0, 1)
    spec = DefenceSpec("noisy", "noisy")
    defended = {("noisy", "ste"): nn.Sequential(Noisy(), toy()), ("noisy", "bpda"): nn.Sequential(Noisy(), toy())}
    found = _sanity(defended, [spec], ["bpda"], torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2]), 0)
    assert [(f["check"], f["flagged"], f["randomised"]) for f in found] == [("randomness", True, True)]
    assert "not reproducible" in found[0]["detail"]


def test_evaluate_view_callable_and_errors():
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    seen = []

    def classifier(view):
        seen.append(view)
        return toy()
    evaluate(classifier, x, y, ["fd:1"], ["fgsm:2"], ["transfer", "ste"])
    assert set(seen) == {"transfer", "ste"}
    with pytest.raises(ValueError, match="view: expected one of"):
        evaluate(toy(), x, y, views=["adaptive"])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(toy(), x, y, batch_size=0)
    with pytest.raises(ValueError, match="eot_samples: expected an int >= 1"):
        evaluate(toy(), x, y, eot_samples=0)


def test_report_table_and_plot(tmp_path):
    x, y = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    rows = evaluate(toy(), x, y, ["none", "fd:1"], ["fgsm:2", "fgsm:4"], ["transfer"])
    table = markdown_table(rows)
    assert table.startswith("| defence | attack | view |") and table.count("\n") == 2 + len(rows)
    assert plot(rows, str(tmp_path / "p.png")) and (tmp_path / "p.png").stat().st_size > 1000


# ---------------------------------------------------------------- CLI
def cli_args(tiny, out, *extra):
    return ["eval", "--data", str(tiny / "tiny.npz"), "--weights", str(tiny / "r20.pt"), "--defences", "none",
            "fd:1", "--attacks", "fgsm:8", "pgd:8:2", "--views", "transfer", "bpda", "--batch-size", "4",
            "--limit", "8", "--quiet", "--out", str(out), *extra]


def test_cli_writes_json_markdown_plot(tiny, tmp_path, capsys):
    assert main(cli_args(tiny, tmp_path / "r.json")) == 0
    printed = capsys.readouterr().out
    assert "| fd:1 | pgd:8:2 | bpda | 8 |" in printed
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["meta"]["n"] == 8 and len(data["results"]) == 2 + 2 * 2
    assert (tmp_path / "r.md").read_text() in printed and (tmp_path / "r.png").is_file()
    assert "Worst case per image" in printed and data["meta"]["eot"] == 8 and data["meta"]["restarts"] == 1
    assert {(w["defence"], w["eps_levels"]) for w in data["worst_case"]} == {("none", 8.0), ("fd:1", 8.0)}
    # which implementation of the layer ran: the backends' status, in the JSON and as a line of the markdown
    assert data["meta"]["backends"] == fdgpu.backends.status()
    assert fdgpu.backends.summary() in (tmp_path / "r.md").read_text().splitlines()


def test_cli_reports_bad_input(tiny, tmp_path, capsys):
    assert main(cli_args(tiny, tmp_path / "r.json", "--defences", "blur:3")) == 2
    assert "expected one of none" in capsys.readouterr().err
    assert main(["eval", "--data", str(tmp_path / "missing.npz"), "--weights", str(tiny / "r20.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_member_ensemble(tiny, tmp_path):
    w = str(tiny / "r20.pt")
    args = ["eval", "--data", str(tiny / "tiny.npz"), "--member", f"jpeg:90={w}", "--member", f"jpeg:50={w}",
            "--attacks", "fgsm:4", "--views", "transfer", "ste", "--limit", "4", "--quiet", "--no-plot",
            "--out", str(tmp_path / "m.json")]
    assert main(args) == 0
    rows = json.loads((tmp_path / "m.json").read_text())["results"]
    assert [r["view"] for r in rows] == ["transfer", "ste"]  # the members' JPEG makes the views differ


def test_torchrun_two_processes_match_single_process(tiny, tmp_path):
    """The same command sharded over 2 gloo processes gives exactly the single-process numbers (both runs with one
    thread per process: CPU kernels' reduction order depends on the thread count). Randomised defences (a random
    JPEG quality, TV minimisation's random dropout) are reseeded per batch, so they shard identically too."""
    def args(out):
        a = cli_args(tiny, out, "--no-plot", "--eot", "2")  # EOT over 2 draws: exercised, and fast enough
        i = a.index("--defences")
        a[i + 1: i + 3] = ["none", "fd:1", "jpeg-rand:50:90", "tvm"]
        return a

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "fdgpu.cli", *args(tmp_path / "one.json")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr[-2000:]
    dist = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "fdgpu.cli", *args(tmp_path / "two.json")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert dist.returncode == 0, dist.stderr[-2000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["meta"]["world_size"] == 2 and one["meta"]["world_size"] == 1
    assert one["results"] == two["results"]


def test_vaccinate_runs_and_is_seeded():
    from fdgpu.eval.vaccinate import vaccinate
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        nets.append(vaccinate(cifar_resnet(20), x, y, 50, epochs=1, batch_size=4, seed=0))
    before = cifar_resnet(20).state_dict()
    a, b = nets[0].state_dict(), nets[1].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], before["conv1.weight"])
    assert not nets[0].training


# ---------------------------------------------------------------- budget check and attribution
class _Mean(nn.Module):
    """Two classes, logits (s, -s) with s = 100 (mean(x) - 0.5): PGD's signed steps lower the mean by ALPHA per step,
    so an image whose mean starts d above 0.5 is first fooled after about d / ALPHA steps."""

    def forward(self, t):
        s = 100 * (t.flatten(1).mean(1) - 0.5)
        return torch.stack([s, -s], 1)


def _mean_images():
    # means 0.5 + f * eps for these fractions f of eps = 8/255: at ALPHA = eps/100 they fall after about 100 f steps
    fractions = torch.tensor([0.05, 0.15, 0.17, 0.5, 0.7, 2.0])
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * (torch.rand(6, 3, 16, 16, generator=g) - 0.5)
    x = x - x.flatten(1).mean(1).view(-1, 1, 1, 1) + 0.5 + (fractions * 8 / 255).view(-1, 1, 1, 1)
    return x, torch.zeros(6, dtype=torch.long)


def test_budget_check_and_attribution_where_more_steps_fool_more():
    """PGD with a fixed small step (ALPHA = 0.08 levels = eps/100): 20 steps leave images that 100 steps fool. The
    20-step row's late images are, exactly, those its own first 16 steps (the same run: same seed, start and step)
    had not fooled; the report warns about its budget, and the attribution adds up to the worst case."""
    x, y = _mean_images()
    specs = ["pgd:8:16:0.08", "pgd:8:20:0.08", "pgd:8:100:0.08"]
    rows = evaluate(_Mean(), x, y, ["none"], specs, ["transfer"], batch_size=6)
    r16, r20, r100 = rows
    assert r16["clean_bits"] == "111111"
    assert r100["adv_acc"] < r20["adv_acc"] < r16["adv_acc"] < 1  # more steps fool more
    expect = "".join("1" if a == "1" and b == "0" else "0" for a, b in zip(r16["adv_bits"], r20["adv_bits"]))
    assert r20["late_bits"] == expect and r20["late_fooled"] == expect.count("1") >= 1
    assert r100["late_fooled"] >= 1  # 0.7 eps takes more than 80 of the 100 steps
    budget = {f["attack"]: f for f in rows.sanity if f["check"] == "budget"}
    # the one image robust in the worst case (2 eps from the boundary) is still moving at ALPHA per step
    assert [f["deciding"] for f in rows.sanity if f["check"] == "rising-loss"] == [1, 1, 1]
    assert budget["pgd:8:20:0.08"]["late"] == r20["late_fooled"]
    assert budget["pgd:8:20:0.08"]["deciding"] == 0 and not budget["pgd:8:20:0.08"]["flagged"]  # 100 steps fool them
    assert budget["pgd:8:100:0.08"]["deciding"] == r100["late_fooled"]  # nothing else fools those
    assert budget["pgd:8:100:0.08"]["flagged"]
    report = markdown_report(rows)
    assert "WARNING [budget] none: pgd:8:100:0.08 first fooled" in report and "worst case are budget-limited" in report
    assert "note [budget] none: pgd:8:20:0.08 first fooled" in report
    w, = worst_case(rows)
    attribution = {(a["attack"], a["view"]): a for a in w["attribution"]}
    fooled = [r["adv_bits"].count("0") for r in rows]
    assert [attribution[s, "-"]["fooled"] for s in specs] == fooled
    assert sum(a["first"] for a in w["attribution"]) == round((w["clean_acc"] - w["worst_acc"]) * 6)
    assert [attribution[s, "-"]["first"] for s in specs] == [fooled[0], fooled[1] - fooled[0], fooled[2] - fooled[1]]
    assert [attribution[s, "-"]["only"] for s in specs] == [0, 0, fooled[2] - fooled[1]]
    assert "Which attack and view fooled" in report


def test_budget_check_counts_the_last_restart():
    from fdgpu.attacks import BestIterate
    best = BestIterate(torch.zeros(4, 3, 2, 2))
    for run, step, who in ((0, 1, 0), (0, 9, 1), (1, 2, 2)):
        best.at(step, 10, run, 2)
        best.update(torch.zeros(4, 3, 2, 2), torch.zeros(4), torch.arange(4) == who)
    assert best.late().tolist() == [False, True, True, False]  # step 9 of 10 is in the final 20 %; run 2 of 2
    assert best.first_step.tolist() == [1, 9, 2, -1] and best.first_run.tolist() == [0, 0, 1, -1]


def test_rising_loss_check_where_the_attack_had_not_converged():
    """An image still robust whose loss rose in the final 20 % of the iterations is one the attack had not finished
    with. Exactly: PGD-20's rising images are its unfooled images whose returned (highest-loss) point beats that of
    the same run cut at 16 steps; with a step that reaches the box's corner early, nothing rises."""
    from fdgpu.attacks import pgd, recording
    x, y = _mean_images()
    model = _Mean()

    def attack(steps, alpha):
        with recording() as seen:
            xa = pgd(model, x, y, 8 / 255, alpha, steps, generator=torch.Generator().manual_seed(0))
        return xa, seen[0]
    a20, rec = attack(20, 0.08 / 255)
    a16, _ = attack(16, 0.08 / 255)
    with torch.no_grad():
        loss = [nn.functional.cross_entropy(model(a), y, reduction="none") for a in (a20, a16)]
        unfooled = model(a20).argmax(1) == y
    assert torch.equal(rec.rising(), unfooled & (loss[0] > loss[1])) and rec.rising().sum() >= 2
    _, fast = attack(20, None)  # step 2.5 eps / 20: every pixel at the box's corner by step 16
    assert not fast.rising().any() and not fast.fooled.all()
    rows = evaluate(model, x, y, ["none"], ["pgd:8:20:0.08"], ["transfer"], batch_size=6)
    r, = rows
    assert r["rising"] == r["rising_bits"].count("1") >= 2
    found, = [f for f in rows.sanity if f["check"] == "rising-loss"]
    assert found["flagged"] and found["deciding"] == r["rising"]
    assert "WARNING [rising-loss] none: pgd:8:20:0.08: " in markdown_report(rows)
    assert not any(f["check"] == "rising-loss" for f in evaluate(model, x, y, ["none"], ["pgd:8:20"], ["transfer"],
                                                                   batch_size=6).sanity)

"""The registries of defences and attacks: every registered kind parses, builds and runs on a tiny input; the docs'
tables are the registries'; the worked example of docs/extending.md registers and runs, from Python and the CLI."""
import json
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import fdgpu
from fdgpu.eval import build_defence, evaluate, parse_attack, parse_defence, run_attack
from fdgpu.eval.specs import ADAPTIVE_VIEWS
from fdgpu.registry import ATTACKS, DEFENCES, register_attack, register_defence

from .conftest import REPO

DOC = REPO / "docs" / "extending.md"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """The registry examples' ``{tmp}``: FD 1x tables and a data root with synthetic CIFAR-like images."""
    from fdgpu.defences.data import synthetic_images

    d = tmp_path_factory.mktemp("registry")
    torch.save({"luma": fdgpu.tables.fd(1.0)}, d / "tables.pt")
    (d / "data" / "cifar10").mkdir(parents=True)
    np.savez(d / "data" / "cifar10" / "train10k.npz", x=synthetic_images(8, 32, seed=1), y=np.zeros(8, np.int64))
    return d


def _toy(k: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, k)).eval()


@pytest.mark.parametrize("kind", list(DEFENCES))
def test_every_defence_parses_builds_and_runs(kind, scratch):
    entry = DEFENCES[kind]
    spec = parse_defence(entry.example.format(tmp=scratch))
    assert spec.kind == kind
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for backward in ("ste", "bpda"):
        layer = build_defence(spec, backward, calib=lambda: torch.rand(4, 3, 16, 16), seed=3,
                              data_root=str(scratch / "data"))
        xr = x.clone().requires_grad_(True)
        out = layer(xr)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool(((out >= 0) & (out <= 1)).all())
        out.sum().backward()  # every defence can be put in front of an attacked model
        assert xr.grad is not None and bool(torch.isfinite(xr.grad).all())
    assert entry.randomised == callable(getattr(layer, "reseed", None))


@pytest.mark.parametrize("kind", list(ATTACKS))
def test_every_attack_parses_and_runs(kind):
    entry = ATTACKS[kind]
    spec = parse_attack(entry.example)
    assert spec.kind == kind
    model = _toy()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)  # clean-correct: the attacks have something to do
    xa = run_attack(spec, model, x, y, torch.Generator().manual_seed(0))
    assert xa.shape == x.shape and bool(((xa >= 0) & (xa <= 1)).all())
    if entry.norm == "linf":
        assert float((xa - x).abs().max()) <= spec.eps + 1e-6
    elif entry.norm == "l2":
        assert float((xa - x).flatten(1).norm(dim=1).max()) <= spec.eps + 1e-5
    if kind != "none":
        assert not torch.equal(xa, x)


def _doc_section(name: str) -> str:
    text = DOC.read_text()
    m = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", text, re.S)
    assert m, f"docs/extending.md: expected a section between <!-- {name} --> markers"
    return m.group(1)


def test_docs_tables_are_the_registries():
    assert _doc_section("registry:defences") == DEFENCES.table()
    assert _doc_section("registry:attacks") == ATTACKS.table()


def test_cli_help_lists_every_kind(capsys):
    from fdgpu.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for registry in (DEFENCES, ATTACKS):
        for entry in registry.values():
            assert entry.form in out


def _example_code() -> str:
    m = re.search(r"<!-- example:begin -->\n```python\n(.*?)```\n<!-- example:end -->", DOC.read_text(), re.S)
    assert m, "docs/extending.md: expected the worked example between <!-- example:begin/end --> markers"
    return m.group(1)


@pytest.fixture
def example(tmp_path):
    """The worked example of docs/extending.md as a file, its kinds unregistered afterwards."""
    path = tmp_path / "my_defences.py"
    path.write_text(_example_code())
    yield path
    DEFENCES.remove("bits")
    ATTACKS.remove("noise")
    sys.modules.pop("fdgpu_plugin_my_defences", None)


def test_worked_example_registers_and_runs(example):
    exec(compile(example.read_text(), str(example), "exec"), {"__name__": "my_defences"})
    assert "bits:N" in DEFENCES.forms() and "noise:EPS" in ATTACKS.forms()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(build_defence("bits:4")(x), torch.round(x * 15) / 15)
    with pytest.raises(ValueError, match="N in 'bits:9': expected 1 to 8 bits"):
        parse_defence("bits:9")
    with pytest.raises(ValueError, match="'noise' takes no options"):
        parse_attack("noise:8:restarts=2")
    rows = evaluate(_toy(), x, torch.tensor([1, 2]), ["bits:4"], ["noise:8"], ["transfer", "bpda"], batch_size=2)
    assert [(r["defence"], r["attack"], r["view"]) for r in rows] == [("bits:4", "noise:8", "transfer"),
                                                                       ("bits:4", "noise:8", "bpda")]
    assert rows[0]["eps_levels"] == 8.0 and rows[0]["attack_seeds"]


def test_cli_plugin_loads_the_example(example, tmp_path, capsys):
    from fdgpu.cli import main
    from fdgpu.models import cifar_resnet

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), y=np.array([0, 1]))
    torch.manual_seed(0)
    torch.save(cifar_resnet(20).state_dict(), tmp_path / "r20.pt")
    out = tmp_path / "r.json"
    rc = main(["eval", "--plugin", str(example), "--data", str(tmp_path / "d.npz"), "--weights",
               str(tmp_path / "r20.pt"), "--defences", "bits:4", "--attacks", "noise:8", "--views", "bpda",
               "--device", "cpu", "--quiet", "--no-plot", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["results"]
    assert [(r["defence"], r["attack"], r["view"]) for r in rows] == [("bits:4", "noise:8", "bpda")]
    assert main(["eval", "--plugin", str(tmp_path / "missing.py"), "--data", str(tmp_path / "d.npz")]) == 2
    assert "--plugin: expected" in capsys.readouterr().err


@pytest.mark.parametrize("source, what", [
    ("import sys\nsys.exit(3)\n", "called sys.exit(3)"),
    ("import sys\nsys.exit()\n", "called sys.exit(None)"),
    ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt"),
], ids=["sys.exit(3)", "sys.exit()", "KeyboardInterrupt"])
def test_a_plugin_that_exits_at_import_is_a_plugin_error(tmp_path, capsys, source, what):
    import os

    from fdgpu.cli import main

    plugin = tmp_path / "quits.py"
    plugin.write_text(source)
    exit_before = os._exit
    assert main(["eval", "--plugin", str(plugin), "--data", str(tmp_path / "d.npz")]) == 2
    assert capsys.readouterr().err == (f"fdgpu eval: --plugin: {str(plugin)!r} {what} while being imported; a plugin "
                                       f"only registers defences and attacks\n")
    assert os._exit is exit_before and "fdgpu_plugin_quits" not in sys.modules


def test_a_plugin_calling_os_exit_at_import_is_a_plugin_error(tmp_path):
    """os._exit ends a process without unwinding: a child process shows that the command reports it instead."""
    import subprocess

    plugin = tmp_path / "hard.py"
    plugin.write_text("import os\nos._exit(4)\n")
    r = subprocess.run([sys.executable, "-m", "fdgpu.cli", "eval", "--plugin", str(plugin), "--data",
                        str(tmp_path / "d.npz")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"fdgpu eval: --plugin: {str(plugin)!r} called os._exit(4) while being imported; a plugin "
                        f"only registers defences and attacks\n")


def test_ctrl_c_while_a_plugin_is_imported_still_interrupts(tmp_path, capsys):
    """A real SIGINT during the import is the user's Ctrl-C, not the plugin's error."""
    from fdgpu.cli import main

    plugin = tmp_path / "slow.py"
    plugin.write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    assert main(["eval", "--plugin", str(plugin), "--data", str(tmp_path / "d.npz")]) == 130
    assert capsys.readouterr().err == "fdgpu eval: interrupted; nothing partial was written\n"


def test_registration_errors():
    with pytest.raises(ValueError, match="already registered by fdgpu.defences.jpeg"):
        register_defence("jpeg", form="jpeg:Q", summary="x", build=lambda spec, ctx: nn.Identity())
    with pytest.raises(ValueError, match="expected a lower-case name without ':'"):
        register_defence("Bad:kind", form="x", summary="x", build=lambda spec, ctx: nn.Identity())
    with pytest.raises(ValueError, match="options: expected a subset of"):
        register_attack("x", form="x", summary="x", run=lambda *a: a[2], options=("steps",))
    assert "Bad:kind" not in DEFENCES and "x" not in ATTACKS
    with pytest.raises(ValueError, match="backward: expected one of"):
        build_defence("jpeg:75", "nope")
    assert ADAPTIVE_VIEWS == ("exact", "ste", "soft", "bpda")


def test_old_names_still_resolve():
    import fdgpu.baselines.data as bdata

    import fdgpu.baselines as B
    import fdgpu.defences as D
    import fdgpu.defences.data as ddata
    from fdgpu.eval import specs

    assert B.make_defence is D.make_defence and bdata is ddata and B.Quilting is D.Quilting
    assert specs.RandomQualityJPEG is D.RandomQualityJPEG and specs.JPGNoise is D.JPGNoise
    assert specs.DEFENCE_KINDS == tuple(DEFENCES) and specs.ATTACK_KINDS == tuple(ATTACKS)

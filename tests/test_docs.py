"""The documentation's code runs and shows what it prints: every ```python block of the README and of the guide
pages is executed (blocks with ``>>>`` prompts as doctests, so their shown outputs are checked), and the demo's
table in the guide is what ``fdgpu demo`` prints."""
import doctest
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.md", "docs/eval.md", *sorted(str(p.relative_to(REPO))
                                                          for p in (REPO / "docs" / "guide").glob("*.md"))]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def python_blocks(text: str):
    """``(line number, code)`` of each fenced ```python block."""
    for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.M | re.S):
        yield text.count("\n", 0, m.start()) + 2, m.group(1)


def test_pages_have_python_blocks():
    for page in ("README.md", "docs/index.md", "docs/guide/layer.md"):
        assert list(python_blocks((REPO / page).read_text())), page


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write here
    text = (REPO / page).read_text()
    globs = {"__name__": "__docs__"}
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=FLAGS)
    for line, code in python_blocks(text):
        name = f"{page}:{line}"
        if ">>>" in code:
            test = parser.get_doctest(code, globs, name, str(REPO / page), line - 1)
            out = []
            runner.run(test, out=out.append, clear_globs=False)
            assert runner.failures == 0, f"{name}: shown output differs\n" + "".join(out)
        else:
            exec(compile(code, name, "exec"), globs)


def _markdown_rows(text: str, start: str, end: str):
    block = text[text.index(start): text.index(end)]
    block = block[block.index("\n") + 1:]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.strip().splitlines()]
    return [r for r in rows[2:]]  # after the header and the rule


def test_demo_table_is_the_demos_output():
    pytest.importorskip("skimage")
    from fdgpu import demo

    rows = demo.measure(demo.load_samples(demo.SAMPLES), repeats=0)
    expected = [[label, f"{p:.2f}", f"{s:.4f}"] for label, p, s, _, _ in rows]
    shown = _markdown_rows((REPO / "docs/guide/layer.md").read_text(), "<!-- demo-table", "<!-- /demo-table -->")
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in expected)
    assert shown == expected, f"docs/guide/layer.md's demo table differs from `fdgpu demo`; it is now:\n{table}"


BENCH = re.compile(r'<!-- bench: (\S+) ("[^"]+"|\S+) "([^"]+)" -->\n(.*?)<!-- /bench -->', re.S)


@pytest.mark.parametrize("page", ["README.md", "docs/benchmarks.md"])
def test_benchmark_tables_are_the_runs_json(page):
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", REPO / "benchmarks" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    blocks = BENCH.findall((REPO / page).read_text())
    assert blocks, f"{page}: no generated benchmark block"
    for path, group, baseline, shown in blocks:
        group = group.strip('"')
        assert shown == render.render(REPO / path, group, baseline), (
            f"{page}: the table of {path} differs from its JSON; regenerate it with "
            f"python benchmarks/render.py {path} --group {group} --baseline '{baseline}'")


# the public modules and the API reference pages that must document every name they export
PUBLIC = ["fdgpu", "fdgpu.tables", "fdgpu.attacks", "fdgpu.eval", "fdgpu.registry", "fdgpu.models", "fdgpu.defences",
          "fdgpu.backends", "fdgpu.io", "fdgpu.data"]


def _directives():
    """``{object path: members list or None (all public members)}`` of the ``::: path`` blocks of docs/api/."""
    out = {}
    for page in sorted((REPO / "docs" / "api").glob("*.md")):
        for m in re.finditer(r"^::: ([\w.]+)\n((?:[ \t]+.*\n|\n)*)", page.read_text(), flags=re.M):
            members = re.search(r"members:\s*\[([^\]]*)\]", m.group(2))
            names = [n.strip() for n in members.group(1).split(",")] if members else None
            out[m.group(1)] = names if not (members and "show_submodules" in m.group(2)) else names
    return out


@pytest.mark.parametrize("module", PUBLIC)
def test_api_reference_documents_every_public_name(module):
    import importlib
    import inspect

    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None) or [n for n, v in vars(mod).items() if not n.startswith("_") and
                                               getattr(v, "__module__", "").startswith(module)]
    shown = _directives()
    missing = []
    for name in names:
        obj = getattr(mod, name)
        if inspect.ismodule(obj):
            if obj.__name__.startswith("fdgpu.") and obj.__name__ not in shown:
                missing.append(name)
            continue
        if name.startswith("__") or not (inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj)):
            continue  # constants are documented with their module's text
        home = getattr(obj, "__module__", module)
        ok = any(path in (f"{module}.{name}", f"{home}.{name}") or
                 (path in (module, home) and (members is None or name in members))
                 for path, members in shown.items())
        if not ok:
            missing.append(name)
    assert not missing, f"{module}: not in the API reference (docs/api/*.md): {missing}"


def test_user_pages_carry_no_development_history():
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    pattern = re.compile(r"\bissue \d+|\bissues? #?\d+|\bengineers?\b|\bsession\b", re.I)
    found = [f"{p.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for p in pages for text in [p.read_text()] for m in pattern.finditer(text)]
    assert not found, "user-facing pages mention development history:\n" + "\n".join(found)

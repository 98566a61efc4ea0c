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


BENCH = re.compile(r'<!-- bench: (\S+) (\S+) "([^"]+)" -->\n(.*?)<!-- /bench -->', re.S)


@pytest.mark.parametrize("page", ["README.md", "docs/benchmarks.md"])
def test_benchmark_tables_are_the_runs_json(page):
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", REPO / "benchmarks" / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    blocks = BENCH.findall((REPO / page).read_text())
    assert blocks, f"{page}: no generated benchmark block"
    for path, group, baseline, shown in blocks:
        assert shown == render.render(REPO / path, group, baseline), (
            f"{page}: the table of {path} differs from its JSON; regenerate it with "
            f"python benchmarks/render.py {path} --group {group} --baseline '{baseline}'")

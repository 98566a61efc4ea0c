"""Markdown tables for the documentation, made from pytest-benchmark's own JSON output, so that a page and the run
it shows cannot disagree.

    python -m pytest benchmarks/test_bench_cpu.py --benchmark-only --benchmark-json docs/benchmarks/cpu.json
    python benchmarks/render.py docs/benchmarks/cpu.json --group cpu-224px-batch32 --baseline "Pillow save+load"

prints the machine line (CPU, cores, threads, load average at the start, versions, commit, date), the command and
one table: each benchmark of the group with its median (and interquartile range) in ms per image and its ratio to
the baseline's median. ``tests/test_docs.py`` renders the JSON files under ``docs/benchmarks/`` and compares the
result with the blocks of the pages that show them (between ``<!-- bench: FILE GROUP BASELINE -->`` and
``<!-- /bench -->``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _per_image(bench: dict) -> float:
    """Median seconds -> ms per image (``extra_info['batch']`` images per call, default 1)."""
    return bench["stats"]["median"] * 1e3 / bench.get("extra_info", {}).get("batch", 1)


def machine_line(data: dict) -> str:
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or "?"
    env = info.get("fdgpu", {})
    vers = env.get("versions", {})
    parts = [f"{cpu}, {info.get('cpu', {}).get('count', '?')} cores"]
    if "torch_threads" in env:
        parts.append(f"{env['torch_threads']} torch threads")
    if env.get("loadavg_start"):
        parts.append(f"load average {env['loadavg_start'][0]:.1f} at the start")
    if env.get("busy"):
        parts.append(env["busy"])
    named = [f"{k} {vers[k]}" for k in ("torch", "PIL", "libjpeg_turbo", "simplejpeg", "kornia") if vers.get(k)]
    if named:
        parts.append(", ".join(named).replace("PIL ", "Pillow ").replace("libjpeg_turbo ", "libjpeg-turbo "))
    commit = data.get("commit_info", {})
    if commit.get("id"):
        parts.append(f"commit {commit['id'][:7]}" + (" with uncommitted changes" if commit.get("dirty") else ""))
    date = data.get("datetime", "")[:10]
    if date:
        parts.append(date)
    return "; ".join(parts)


def table(data: dict, group: str, baseline: str) -> str:
    rows = [b for b in data["benchmarks"] if b.get("group") == group]
    if not rows:
        raise ValueError(f"--group: expected a group of the run such as "
                         f"{sorted({b.get('group') for b in data['benchmarks']})}, got {group!r}")
    base = [b for b in rows if b["name"] == baseline]
    if not base:
        raise ValueError(f"--baseline: expected a benchmark of group {group!r} such as "
                         f"{[b['name'] for b in rows]}, got {baseline!r}")
    ref = _per_image(base[0])
    lines = [f"| method | ms / image (median) | IQR | × {baseline} |", "| --- | ---: | ---: | ---: |"]
    for b in rows:
        ms = _per_image(b)
        iqr = b["stats"]["iqr"] * 1e3 / b.get("extra_info", {}).get("batch", 1)
        lines.append(f"| {b['name']} | {ms:.3f} | {iqr:.3f} | {ms / ref:.2f} |")
    return "\n".join(lines)


def render(path: Path, group: str, baseline: str) -> str:
    """The markdown block for one group of one JSON file: machine line and table."""
    data = json.loads(Path(path).read_text())
    return f"Machine: {machine_line(data)}.\n\n{table(data, group, baseline)}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="pytest-benchmark's --benchmark-json output")
    p.add_argument("--group", required=True, help="the benchmark group to show")
    p.add_argument("--baseline", required=True, help="the benchmark (name) the ratios divide by")
    args = p.parse_args(argv)
    print(render(args.json, args.group, args.baseline), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

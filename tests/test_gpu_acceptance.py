"""benchmarks/gpu_acceptance.py --dry-run: the whole acceptance script at tiny sizes on the CPU (Triton's
interpreter), so that it runs the day a GPU is there. Its numbers are not measurements; the checks are real."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install 'fdgpu[triton]')")

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_writes_both_reports(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script sets it itself
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_acceptance.py"), "--out", str(tmp_path),
                          "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    assert rep["dry_run"] is True and rep["passed"] is True and rep["timings"]["measured"] is False
    eq = rep["equality"]
    assert eq["passed"] and eq["forward_passed"] == eq["forward_cases"] + eq["half_cases"] > 20
    assert eq["gradient_cases"] >= 4 and not eq["failures"]
    assert rep["capture"]["compile_fullgraph"]["passed"] is True
    assert "skipped" in rep["capture"]["cuda_graph"] and "skipped" in rep["sanitizer"]
    rows = rep["timings"]["rows"]
    assert {r["pass"] for r in rows if r["provider"] == "triton"} == {"fwd", "fwd+ste", "fwd+soft"}
    assert all("error" not in r for r in rows)
    assert set(rep["timings"]["host"]["us_per_call"]) == {"fwd validate=False", "fwd validate=True",
                                                         "fwd+ste validate=False"}
    md = (tmp_path / "gpu_acceptance.md").read_text()
    assert "DRY RUN" in md and "NOT measurements" in md and "| triton | fwd+soft |" in md
    assert not list(tmp_path.glob("*.tmp"))

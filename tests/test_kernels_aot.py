"""Every Triton kernel variant compiles ahead of time for sm_80 and sm_90 without register spills.

Runs ``python -m fdgpu.kernels.aot --json`` in a subprocess with ``TRITON_INTERPRET`` unset (the interpreter
replaces the compiler; the test session itself runs under it). No GPU is needed: Triton compiles to PTX and ptxas
to SASS for a ``GPUTarget``. About a minute on a 2-core machine.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install 'fdgpu[triton]')")

ROOT = Path(__file__).resolve().parents[1]
CCS = (80, 90)


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    # python -m fdgpu.kernels.aot, with fdgpu.kernels found in a checkout without pip install too
    main = ("import runpy, tests._source_checkout; "
            "runpy.run_module('fdgpu.kernels.aot', run_name='__main__', alter_sys=True)")
    res = subprocess.run([sys.executable, "-c", main, "--json", "--cc", *map(str, CCS)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if res.returncode != 0 and ("ptxas" in res.stderr and "No such file" in res.stderr):
        pytest.skip("ptxas is not available in this triton install")
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_every_variant_compiles_for_each_arch(report):
    labels = {r["kernel"] for r in report}
    for cc in CCS:
        assert {r["kernel"] for r in report if r["cc"] == cc} == labels, f"sm_{cc}: missing variants"
    assert len(labels) >= 20


def test_no_spills(report):
    spilled = [f"{r['kernel']} sm_{r['cc']}: {r['spill_stores']} B stored, {r['spill_loads']} B loaded"
               for r in report if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, "register spills:\n" + "\n".join(spilled)


def test_resources_fit(report):
    for r in report:
        assert 0 < r["registers"] <= 255, r
        assert r["shared"] <= 96 * 1024, f"{r['kernel']} sm_{r['cc']}: {r['shared']} B of shared memory"
        assert r["sass_stg"] > 0 and r["sass_ldg"] > 0, r


def test_shared_memory_access_pattern(report):
    """Static shared-memory check (``fdgpu.kernels.aot.shared_memory_findings``): no ``tt.dot`` (whose operands are
    staged in shared memory: the 64x64 DCT matrix staged unswizzled and read column-contiguously put every lane of a
    warp in the same four banks, 32 shared cycles instead of 4), and no explicit shared allocation with an
    unswizzled layout. What shared memory remains is Triton's layout-conversion scratch, which its lowering swizzles.
    Checked to fail on the previous float-DCT kernel (2 dots, 4 unswizzled allocations in fwd gray, sm_90)."""
    bad = [f"{r['kernel']} sm_{r['cc']}: {r['dots']} dots, {r['unswizzled_shared']} unswizzled shared allocations"
           for r in report if r["dots"] or r["unswizzled_shared"]]
    assert not bad, "shared-memory access pattern:\n" + "\n".join(bad)


def test_dct_reductions_stay_in_thread(report):
    """The integer DCT passes reduce over their 8 taps inside a thread (the tap axis leads the product, so
    Triton's blocked layout keeps it in registers): no warp shuffles in the forward kernels. Written with the taps
    last, fwd gray had 385 SHFL (sm_90)."""
    shuffling = [f"{r['kernel']} sm_{r['cc']}: {r['sass_shfl']} SHFL" for r in report
                 if r["kernel"].startswith(("fwd ", "fwd_sub")) and r["sass_shfl"] > 8]
    assert not shuffling, "\n".join(shuffling)


def test_executed_path_pins_match_the_kernels(tmp_path):
    """The cost model's executed paths compile copies of kernels/jpeg.py with the run-time branches pinned: every
    branch it pins is still in the kernels (else it raises), and each pin leaves importable kernels."""
    pytest.importorskip("triton.backends.nvidia", reason="triton without its NVIDIA backend")
    from fdgpu.kernels import aot
    for integer, luma in aot.PATHS.values():
        mod = aot.pinned_module(integer, luma, str(tmp_path))
        src = open(mod.__file__).read()
        assert not [c for c in aot._BRANCHES if c in src]
        assert mod._PIN_INT.value is integer and mod._PIN_LUMA.value is luma
        assert hasattr(mod, "_jpeg_fwd_sub_kernel") and hasattr(mod, "_jpeg_bwd_table_kernel")


def test_executed_paths(report):
    """The cost model counts the instructions a program executes, by branch region (``aot.executed_regions``): the
    runtime branches are found (luma / chroma programs of ``encode``, the integer / float64 quantizer), one path
    runs fewer instructions than the whole static code, and a runtime loop's body counts once per trip."""
    from fdgpu.kernels.aot import region_counts as path_counts
    by = {(r["kernel"], r["cc"]): r for r in report}
    for cc in CCS:
        sub = by[("encode 4:2:0", cc)]
        assert {"", "luma", "chroma", "int", "f64"} <= set(sub["regions"]), sub["regions"]
        luma, chroma = (path_counts(sub["regions"], frozenset({side, "int"}))[0] for side in ("luma", "chroma"))
        assert 0 < luma < chroma < sub["sass_instructions"]
        gray = by[("fwd gray", cc)]
        assert path_counts(gray["regions"], frozenset({"int"}))[0] < path_counts(gray["regions"],
                                                                                   frozenset({"f64"}))[0]
        assert path_counts(gray["regions"], frozenset({"f64"}))[0] < gray["sass_instructions"]
        rgb = by[("fwd 4:4:4", cc)]  # the 3-plane loop: its body (most of the kernel) counted 3 times
        assert path_counts(rgb["regions"], frozenset({"int"}))[0] > 1.2 * rgb["sass_instructions"]
        for r in report:
            if r["cc"] == cc and r["kernel"].split(" small")[0] not in ("fwd 4:4:4", "bwd 4:4:4 soft"):
                assert sum(v[0] for v in r["regions"].values()) <= r["sass_instructions"], r["kernel"]


def test_cost_table_in_docs(report):
    """docs/kernels.md's cost-model table is the one the current code gives (``python -m fdgpu.kernels.aot
    --cost``): regenerate it when the kernels change."""
    from fdgpu.kernels.aot import Report, cost_table
    table = cost_table([Report(**r) for r in report])
    doc = (ROOT / "docs" / "kernels.md").read_text()
    stale = [line for line in table.splitlines() if line not in doc]
    assert not stale, "docs/kernels.md: cost table out of date (python -m fdgpu.kernels.aot --cost):\n" + table


def test_executed_regions_agree_with_pinned_compiles():
    """The two ways of counting a path agree: the regions of one compile (what the model reads) and the static
    count of a kernel compiled with its branches pinned (``aot.path_counts``), within 10 % (the compiler schedules a
    pinned kernel differently, and the pinned float count includes the float64 division's slow path)."""
    pytest.importorskip("triton.backends.nvidia", reason="triton without its NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile, not interpret
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json, tests._source_checkout; from fdgpu.kernels import aot; label = 'encode 4:2:0'; "
            "r = aot.compile_one(*{v[0]: v for v in aot.variants(('large',))}[label], 90); "
            "print(json.dumps([r.regions, aot.path_counts({label}, 90)[label]]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    regions, pinned = json.loads(res.stdout.splitlines()[-1])
    from fdgpu.kernels.aot import PATHS, region_counts
    for path, (integer, luma) in PATHS.items():
        ours = region_counts(regions, frozenset({"int" if integer else "f64", "luma" if luma else "chroma"}))[0]
        assert abs(ours - pinned[path]) <= 0.1 * pinned[path], (path, ours, pinned[path])

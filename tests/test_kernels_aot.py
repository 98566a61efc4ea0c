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

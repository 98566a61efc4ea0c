"""Smoke tests of ``fdgpu bench`` on tiny settings: valid JSON, a PNG, labelled data sources. No timing asserts."""
import json

import pytest

import fdgpu
from fdgpu.cli import main

from ._paths import data_missing, data_root_with

DATA = data_root_with("cifar10/test.npz")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_bench(tmp_path, *extra):
    out = tmp_path / "bench"
    rc = main(["bench", "--sizes", "16", "--batches", "1", "2", "--repeats", "1", "--warmup", "0",
               "--db-size", "500", "--out", str(out), *extra])
    return rc, out


def test_bench_smoke_synthetic(tmp_path, capsys):
    rc, out = run_bench(tmp_path, "--synthetic")
    assert rc == 0
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC
    meta, results = report["meta"], report["results"]
    assert meta["synthetic_data"] is True
    assert all("SYNTHETIC" in str(v) for v in meta["data"].values())
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    streamed = out.splitlines()
    assert streamed[0].startswith("time per image as each cell finishes")  # a header before the first row
    assert streamed[1].split()[:4] == ["size", "batch", "method", "median"]
    assert streamed[2].split()[:3] == ["16", "1", "fdgpu_fd"]
    assert meta["environment"]["cpu"] and meta["versions"]["torch"]
    assert meta["backends"] == fdgpu.backends.status() and fdgpu.backends.summary() in streamed
    timed = {(r["method"], r["batch"]) for r in results if "median_ms" in r}
    for method in ("fdgpu_fd", "fdgpu_fd_fwdbwd", "fdgpu_jpeg", "pillow", "kornia", "quilting", "tvm"):
        assert {(method, 1), (method, 2)} <= timed, method
    for r in results:
        if "median_ms" in r:
            assert r["median_ms"] > 0 and r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["n"] == 1
            assert r["ratio_to_fdgpu"] > 0 and r["ratio_min_to_fdgpu"] > 0 and r["min_ms"] <= r["median_ms"]
        else:
            assert r["skipped"], r  # only the CUDA rows on a machine without CUDA
    assert all(r["ratio_to_fdgpu"] == 1.0 for r in results if r["method"] == "fdgpu_fd")


@pytest.mark.skipif(DATA is None, reason=data_missing("cifar10/test.npz"))
def test_bench_real_data_labelled(tmp_path):
    rc, out = run_bench(tmp_path, "--data", str(DATA), "--methods", "fdgpu_fd", "quilting")
    assert rc == 0
    meta = json.loads((out / "bench.json").read_text())["meta"]
    assert meta["synthetic_data"] is False
    assert "test.npz" in meta["data"]["timed_cifar"] and "train10k" in meta["data"]["quilting_db_cifar"]["images"]


def test_bench_bad_arguments(tmp_path, capsys):
    assert main(["bench", "--sizes", "0", "--out", str(tmp_path)]) == 2
    assert "expected positive --sizes" in capsys.readouterr().err
    assert main(["bench", "--threads", "0", "--out", str(tmp_path)]) == 2
    assert "expected --threads >= 1" in capsys.readouterr().err

"""The CPU path with other work beside it: thread policies side by side, quiet and loaded, in one run.

    python -m pytest benchmarks/test_bench_contention.py --benchmark-only

(or together with benchmarks/test_bench_cpu.py: the table of the CPU targets at the end includes these.)

Each case runs with 0, 1 and 2 background processes that loop small torch ops at torch's default thread count
(what a second experiment or data-loader workers doing tensor work look like to the layer). Providers, in the
same conditions: the layer as shipped (the compiled forward, ``fdgpu/backends/cpu.py``: a batch's images split
over single-threaded workers, a small call on the calling thread); the same code on one thread; the torch
reference forward (``backend="torch"``: its chunks on the single-threaded workers, ``fdgpu/reference/parallel.py``);
and Pillow's save + load (libjpeg-turbo, one image at a time). fdgpu runs as users call it (``validate=True``, the
default). Workloads: a batch of 32 RGB
224x224 images and a single 32x32 image, q75 4:2:0. The summary printed at the end gives ms per image and the
ratios the issue's targets are stated in (this / Pillow, this / one thread).
"""
import contextlib
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

import fdgpu  # noqa: E402
import _targets  # noqa: E402
from _common import pillow_roundtrip, print_past_capture, require_c_library  # noqa: E402
from _targets import record  # noqa: E402

QUALITY = 75
WORKLOADS = {"32x224^2": (32, 224), "1x32^2": (1, 32)}
BUSY_LOOP = "import torch\na = torch.rand(256, 256)\nwhile True:\n    (a * 2 + 1).sum()\n"
_results = {}


@pytest.fixture(scope="module", autouse=True)
def c_library():
    _targets.BACKEND["auto"] = require_c_library()


@pytest.fixture(scope="module", params=[0, 1, 2], ids=lambda n: f"busy{n}")
def busy(request):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(request.param)]
    time.sleep(1.0 if procs else 0.0)  # let them start
    yield request.param
    for p in procs:
        p.kill()
        p.wait()


def _images(batch, size):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(batch, 3, max(4, size // 8), max(4, size // 8), generator=g),
                                        size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return (x * 255).round() / 255


@contextlib.contextmanager
def _policy(name, monkeypatch):
    threads = torch.get_num_threads()
    if name == "one thread":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        monkeypatch.undo()


def _record(benchmark, busy, workload, provider, batch, fn, rounds):
    benchmark.group = f"{workload} busy={busy}"
    benchmark.name = provider
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run, nothing timed
        return
    _results[(busy, workload, provider)] = benchmark.stats.stats.median * 1e3 / batch
    record(f"contention {workload} busy={busy}", provider, _results[(busy, workload, provider)])


@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("policy", ["shipped", "one thread", "torch reference"])
def test_fdgpu_forward(benchmark, busy, workload, policy, monkeypatch, summary):
    batch, size = WORKLOADS[workload]
    x = _images(batch, size)
    backend = "torch" if policy == "torch reference" else "auto"
    with _policy(policy, monkeypatch):
        _record(benchmark, busy, workload, f"fdgpu ({policy})" if policy == "shipped" else f"fdgpu {policy}", batch,
                lambda: fdgpu.jpeg(x, QUALITY, backend=backend),
                rounds=(3 if policy == "torch reference" else 7) if batch > 1 else 200)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_pillow_roundtrip(benchmark, busy, workload, summary):
    batch, size = WORKLOADS[workload]
    _record(benchmark, busy, workload, "Pillow save+load", batch, pillow_roundtrip(_images(batch, size), QUALITY),
            rounds=7 if batch > 1 else 200)


@pytest.fixture(scope="session")
def summary(request):
    yield
    if not _results:
        return
    lines = [f"\nmedian ms per image, q{QUALITY} 4:2:0, torch {torch.__version__}, {torch.get_num_threads()} threads"
             " (busy = background processes looping small torch ops):"]
    for (busy, workload) in sorted({k[:2] for k in _results}):
        pil = _results.get((busy, workload, "Pillow save+load"))
        one = _results.get((busy, workload, "fdgpu one thread"))
        lines.append(f"  busy={busy} {workload}")
        for (b, w, provider), ms in _results.items():
            if (b, w) != (busy, workload):
                continue
            vs_pil = f"{ms / pil:6.2f}x Pillow" if pil else ""
            vs_one = f"{ms / one:6.2f}x one thread" if one and provider.startswith("fdgpu") else ""
            lines.append(f"    {provider:34s} {ms:9.3f} ms  {vs_pil}  {vs_one}")
    print_past_capture(request, lines)

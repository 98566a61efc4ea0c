"""Per-image speed of fdgpu against the baselines, side by side: pytest-benchmark suites.

    pytest benchmarks/test_bench_baselines.py --benchmark-only [--benchmark-json out.json]

Groups are ``{size}px-batch{batch}`` for sizes 32 (CIFAR-10 test images) and 299 (natural photos 100+), batches 1
and 32. Methods, data and setup are those of ``fdgpu bench`` (``fdgpu.bench.PROVIDERS``, ``BenchData``): fdgpu FD
forward (the reference),
FD forward+backward, JPEG q75, Pillow round trip, kornia ``jpeg_codec_differentiable`` (forward, and
forward+backward), image quilting (100,000-patch database, exact faiss search) and TV minimisation.
pytest-benchmark's table gives time per *call*; ``extra_info`` holds time per image and the ratio to fdgpu FD of
the same group, and a summary of both is printed at the end of the module. Data come from ``$FDGPU_DATA`` or
../shared/data next to the checkout; without them the suite times synthetic images and says so in
``extra_info["data"]`` and in the summary.

Runtime: without the quilting-299-32 cell, 7 minutes on the project's 2-core machine under a load average of ~6
(other jobs running); that cell adds one call quilting 32 photos, 5-10 minutes there (5-12 s per 299 x 299 image).
Skip it with ``-k "not quilting-299-32"``. ``FDGPU_BENCH_DB_SIZE`` changes the database size. On a busy machine
compare minima rather than medians (both are in the summary).
"""
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")

from _common import print_past_capture  # noqa: E402
from fdgpu.bench import PROVIDERS, REFERENCE, BenchData, Settings, make  # noqa: E402
from fdgpu.bench.report import table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FDGPU_DATA", ROOT.parent / "shared" / "data"))
METHODS = ["fdgpu_fd", "fdgpu_fd_fwdbwd", "fdgpu_jpeg", "pillow", "kornia", "kornia_fwdbwd", "quilting",
           "tvm"]
CELLS = [(size, batch, m) for size in (32, 299) for batch in (1, 32) for m in METHODS]
# rounds per cell: enough for a median on fast methods, one or two for the slow baselines at 299 x 299
ROUNDS = {"quilting": {32: 3, 299: 1}, "tvm": {32: 5, 299: 2}}
FAST_ROUNDS = 10

_medians = {}
_rows = []


@pytest.fixture(scope="module")
def data(request):
    d = BenchData(str(DATA) if DATA.is_dir() else None, synthetic=not DATA.is_dir(), seed=0,
                  db_size=int(os.environ.get("FDGPU_BENCH_DB_SIZE", 100_000)))
    yield d
    if not _rows:
        return
    print_past_capture(request, ["", ("SYNTHETIC DATA - " if d.synthetic else "") +
                                 "time per image; x fd = median (or min) / fdgpu_fd's median (or min) of the same "
                                 "group", table(_rows)] + [f"  {key}: {val}" for key, val in d.sources.items()])


@pytest.mark.parametrize("size, batch, method", CELLS, ids=[f"{m}-{s}-{b}" for s, b, m in CELLS])
def test_per_image(benchmark, data, size, batch, method):
    x = data.batch(size, batch)
    settings = Settings(quality=75.0, strength=1.0, seed=0, database=data.database)
    call = make(method, x, settings)
    if PROVIDERS[method].slow:
        make(method, x[:1], settings)()  # one-time costs (index, imports) off the clock
        rounds, warmup = ROUNDS[method][size], 0
    else:
        rounds, warmup = FAST_ROUNDS, 2
    benchmark.group = f"{size}px-batch{batch}"
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=warmup)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test, nothing timed
        return
    per_image = benchmark.stats.stats.median / batch * 1e3
    st = benchmark.stats.stats
    min_per_image = st.min / batch * 1e3
    if method == REFERENCE:
        _medians[(size, batch)] = (per_image, min_per_image)
    ref = _medians.get((size, batch))
    row = {"size": size, "batch": batch, "method": method, "median_ms": per_image,
           "iqr_ms": (st.q3 - st.q1) / batch * 1e3, "min_ms": min_per_image, "n": st.rounds,
           "ratio_to_fdgpu": per_image / ref[0] if ref else None,
           "ratio_min_to_fdgpu": min_per_image / ref[1] if ref else None}
    _rows.append(row)
    benchmark.extra_info.update({"per_image_ms": per_image, "ratio_to_fdgpu": row["ratio_to_fdgpu"],
                                 "min_per_image_ms": min_per_image, "ratio_min_to_fdgpu": row["ratio_min_to_fdgpu"],
                                 "data": "SYNTHETIC" if data.synthetic else "real",
                                 "threads": torch.get_num_threads()})

"""File sizes: ``fdgpu.jpeg_size`` against what a user would do instead, Pillow's save into memory and ``len()``.

    python -m pytest benchmarks/test_bench_size.py --benchmark-only

The images: natural photos 0-31 of the shared data (299x299 RGB; ``$FDGPU_DATA`` or ../shared/data), else 32 smooth
random 299x299 images. Quality 75, 4:2:0, standard Huffman tables and ``optimize=True``. Providers: Pillow's save of
each image (one at a time, ``len(buf.getvalue())``; libjpeg-turbo runs on the calling thread), ``fdgpu.jpeg_size`` on
the C library and on the torch coder (with ``validate=False``, as in a training loop, and the C path also with
``validate=True``), and ``fdgpu.rate``'s forward. The thread count is set for each provider and named in its row:
one thread (``torch.set_num_threads(1)``: the C path runs on the calling thread, as Pillow does), and the C path
again with the torch thread count the session started with (its default: the batch is spread over that many of the
library's workers). The summary printed at the end gives ms per image and each provider's ratio to Pillow's save.
"""
import io
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

import fdgpu  # noqa: E402
from _common import print_past_capture  # noqa: E402

BATCH, QUALITY = 32, 75
DEFAULT_THREADS = torch.get_num_threads()  # the session's default, before any provider sets its own
_results = {}


def _photos():
    roots = [Path(os.environ["FDGPU_DATA"])] if os.environ.get("FDGPU_DATA") else []
    roots.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for root in roots:
        files = sorted((root / "natural").glob("*.png"))[:BATCH]
        if len(files) == BATCH:
            return [np.asarray(Image.open(f).convert("RGB")).copy() for f in files], f"natural photos 0-{BATCH - 1}"
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(BATCH, 3, 38, 38, generator=g), size=299, mode="bicubic")
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return list(x), "smooth random images"


@pytest.fixture(scope="module")
def images(request):
    imgs, what = _photos()
    # a batch as PyTorch code usually holds one: contiguous (N, 3, H, W) (the C path reads a channels-last view of
    # the same values in place, at about the same speed)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255).contiguous()
    yield imgs, x
    if _results:
        lines = [f"\nmedian ms per image, {BATCH} x {what} ({imgs[0].shape[1]}x{imgs[0].shape[0]}), q{QUALITY} 4:2:0, "
                 f"load average {os.getloadavg()[0]:.1f} (ratio: Pillow's save / this):"]
        for opt in (False, True):
            base = _results.get(("pillow save, 1 thread", opt))
            for (name, o), ms in _results.items():
                if o == opt:
                    ratio = f"{base / ms:6.2f}x" if base else ""
                    lines.append(f"  {name + (', optimize' if opt else ''):60s} {ms:8.3f} ms   {ratio}")
        print_past_capture(request, lines)


def _threads(k: int) -> str:
    return "1 thread" if k == 1 else f"{k} threads"


def _run(benchmark, name, optimize, fn, rounds=10, threads=1):
    """Times ``fn`` with ``threads`` torch threads (set outside the clock: setting them rebuilds torch's pool)."""
    name = f"{name}, {_threads(threads)}" + (" (default)" if threads == DEFAULT_THREADS and threads > 1 else "")
    benchmark.group = f"size-batch{BATCH}" + ("-optimize" if optimize else "")
    benchmark.name = name
    benchmark.extra_info["batch"] = BATCH
    benchmark.extra_info["threads"] = threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
    finally:
        torch.set_num_threads(before)
    if benchmark.stats is None:  # --benchmark-disable: a smoke run
        return
    _results[(name, optimize)] = benchmark.stats.stats.median * 1e3 / BATCH


def _pillow(imgs, optimize):
    def run():
        out = []
        for a in imgs:
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, "JPEG", quality=QUALITY, subsampling=2, optimize=optimize)
            out.append(len(buf.getvalue()))
        return out
    return run


@pytest.mark.parametrize("optimize", [False, True], ids=["standard", "optimize"])
def test_pillow_save(benchmark, images, optimize):
    _run(benchmark, "pillow save", optimize, _pillow(images[0], optimize), rounds=30)


@pytest.mark.parametrize("threads", [1, DEFAULT_THREADS] if DEFAULT_THREADS > 1 else [1],
                         ids=lambda k: _threads(k).replace(" ", "-"))
@pytest.mark.parametrize("optimize", [False, True], ids=["standard", "optimize"])
def test_fdgpu_size_c(benchmark, images, optimize, threads):
    imgs, x = images
    assert fdgpu.jpeg_size(x, QUALITY, optimize=optimize, backend="cpu").tolist() == _pillow(imgs, optimize)()
    _run(benchmark, "fdgpu.jpeg_size (C)", optimize,
         lambda: fdgpu.jpeg_size(x, QUALITY, optimize=optimize, backend="cpu", validate=False), rounds=30,
         threads=threads)


def test_fdgpu_size_c_validated(benchmark, images):
    _run(benchmark, "fdgpu.jpeg_size (C), validate=True", False,
         lambda: fdgpu.jpeg_size(images[1], QUALITY, backend="cpu"), rounds=30)


def test_fdgpu_size_torch(benchmark, images):
    _run(benchmark, "fdgpu.jpeg_size (torch coder)", False,
         lambda: fdgpu.jpeg_size(images[1], QUALITY, backend="torch", validate=False), rounds=3)


def test_fdgpu_rate(benchmark, images):
    _run(benchmark, "fdgpu.rate (forward)", False, lambda: fdgpu.rate(images[1], QUALITY, validate=False), rounds=3)

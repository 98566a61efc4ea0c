"""File sizes: ``fdgpu.jpeg_size`` against what a user would do instead, Pillow's save into memory and ``len()``.

    python -m pytest benchmarks/test_bench_size.py --benchmark-only

The images: natural photos 0-31 of the shared data (299x299 RGB; ``$FDGPU_DATA`` or ../shared/data), else 32 smooth
random 299x299 images. Quality 75, 4:2:0, standard Huffman tables and ``optimize=True``. Providers: Pillow's save of
each image (one at a time, ``len(buf.getvalue())``), ``fdgpu.jpeg_size`` on the compiled C coder and on the torch
coder (both with ``validate=False``, as in a training loop, and the C coder also with ``validate=True``). The
summary printed at the end gives ms per image and each provider's ratio to Pillow's save.
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
    # a batch as PyTorch code holds one: contiguous (N, 3, H, W); a channels-last view would add a layout copy of the
    # whole batch to every call (about 0.6 ms per image on one thread), which is input preparation, not coding
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div_(255).contiguous()
    yield imgs, x
    if _results:
        lines = [f"\nmedian ms per image, {BATCH} x {what} ({imgs[0].shape[1]}x{imgs[0].shape[0]}), q{QUALITY} 4:2:0, "
                 f"load average {os.getloadavg()[0]:.1f} (ratio: Pillow's save / this):"]
        for opt in (False, True):
            base = _results.get(("pillow save", opt))
            for (name, o), ms in _results.items():
                if o == opt:
                    ratio = f"{base / ms:6.2f}x" if base else ""
                    lines.append(f"  {name + (', optimize' if opt else ''):42s} {ms:8.3f} ms   {ratio}")
        print_past_capture(request, lines)


def _run(benchmark, name, optimize, fn, rounds=10):
    benchmark.group = f"size-batch{BATCH}" + ("-optimize" if optimize else "")
    benchmark.name = name
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
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
    _run(benchmark, "pillow save", optimize, _pillow(images[0], optimize))


@pytest.mark.parametrize("optimize", [False, True], ids=["standard", "optimize"])
def test_fdgpu_size_c(benchmark, images, optimize):
    imgs, x = images
    assert fdgpu.jpeg_size(x, QUALITY, optimize=optimize, backend="cpu").tolist() == _pillow(imgs, optimize)()
    _run(benchmark, "fdgpu.jpeg_size (C coder)", optimize,
         lambda: fdgpu.jpeg_size(x, QUALITY, optimize=optimize, backend="cpu", validate=False))


def test_fdgpu_size_c_validated(benchmark, images):
    _run(benchmark, "fdgpu.jpeg_size (C coder), validate=True", False,
         lambda: fdgpu.jpeg_size(images[1], QUALITY, backend="cpu"))


def test_fdgpu_size_torch(benchmark, images):
    _run(benchmark, "fdgpu.jpeg_size (torch coder)", False,
         lambda: fdgpu.jpeg_size(images[1], QUALITY, backend="torch", validate=False), rounds=3)


def test_fdgpu_rate(benchmark, images):
    _run(benchmark, "fdgpu.rate (forward)", False, lambda: fdgpu.rate(images[1], QUALITY, validate=False), rounds=3)

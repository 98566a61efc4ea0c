"""CPU speed of the core layer next to what users would pick instead, in one run (issue 2, section 8).

    python -m pytest benchmarks/test_bench_cpu.py --benchmark-only

A batch of 32 RGB 224x224 images (smooth random images: speed does not depend on content here), JPEG q75 4:2:0:
fdgpu forward and forward+backward (ste), Pillow's save+load round trip (libjpeg-turbo, one image at a time), and
kornia's ``jpeg_codec_differentiable`` forward and forward+backward. pytest-benchmark's table gives the time per
call (a batch of 32); the summary printed at the end gives ms per image and the ratio of each provider to fdgpu.

Issue 8 (the bit-exact integer forward) is measured against the forward it replaced: the float-DCT reference of
commit 72a837f, loaded from git (``git show``) into a temporary package, never vendored. Both are called as
``reference.forward(x, luma, chroma, "4:2:0")``, side by side in one run ("reference forward" rows); skipped when
git or that commit is not available (e.g. a shallow clone).
"""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
np = pytest.importorskip("numpy")

import fdgpu  # noqa: E402
from _common import pillow_roundtrip, print_past_capture  # noqa: E402

BATCH, SIZE, QUALITY = 32, 224, 75
_results = {}


@pytest.fixture(scope="module")
def images(request):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(BATCH, 3, 28, 28, generator=g), size=SIZE, mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    x = (x * 255).round() / 255
    yield x
    if _results:
        base = _results.get("fdgpu forward")
        lines = [f"\nmedian ms per image, batch {BATCH} x 3 x {SIZE} x {SIZE}, q{QUALITY}, "
                 f"{torch.get_num_threads()} threads (ratio: this / fdgpu forward):"]
        for name, ms in _results.items():
            ratio = f"{ms / base:6.2f}x" if base else ""
            lines.append(f"  {name:32s} {ms:8.3f} ms   {ratio}")
        print_past_capture(request, lines)


def _run(benchmark, name, fn):
    benchmark.group = f"cpu-{SIZE}px-batch{BATCH}"
    benchmark.name = name
    benchmark.pedantic(fn, rounds=10, warmup_rounds=2, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test, nothing timed
        return
    ms = benchmark.stats.stats.median * 1e3 / BATCH
    benchmark.extra_info["ms_per_image"] = ms
    _results[name] = ms


def test_fdgpu_forward(benchmark, images):
    _run(benchmark, "fdgpu forward", lambda: fdgpu.jpeg(images, QUALITY, validate=False))


FLOAT_DCT_COMMIT = "72a837f"  # the last commit with the float-DCT forward (before issue 8)


@pytest.fixture(scope="module")
def float_dct_reference(tmp_path_factory):
    """The ``fdgpu/reference`` package of FLOAT_DCT_COMMIT, imported under another name from a temporary folder."""
    repo = Path(__file__).resolve().parents[1]
    pkg = f"fdgpu_reference_{FLOAT_DCT_COMMIT}"
    root = tmp_path_factory.mktemp("old_reference")
    (root / pkg).mkdir()
    for name in ("__init__", "color", "dct", "jpeg", "quantize", "sampling"):
        try:
            src = subprocess.run(["git", "-C", str(repo), "show", f"{FLOAT_DCT_COMMIT}:fdgpu/reference/{name}.py"],
                                 check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            pytest.skip(f"needs git and commit {FLOAT_DCT_COMMIT} to load the float-DCT forward: {e}")
        (root / pkg / f"{name}.py").write_text(src)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(pkg)
    finally:
        sys.path.remove(str(root))


def test_reference_forward_integer(benchmark, images):
    from fdgpu import reference

    lt, ct = fdgpu.tables.ijg(QUALITY)
    _run(benchmark, "reference forward (integer DCT)", lambda: reference.forward(images, lt, ct, "4:2:0"))


def test_reference_forward_float_dct(benchmark, images, float_dct_reference):
    lt, ct = fdgpu.tables.ijg(QUALITY)
    _run(benchmark, f"reference forward (float DCT, {FLOAT_DCT_COMMIT})",
         lambda: float_dct_reference.forward(images, lt, ct, "4:2:0"))


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_fdgpu_forward_backward(benchmark, images, mode):
    x = images.clone().requires_grad_()
    g = torch.ones_like(x)

    def step():
        x.grad = None
        fdgpu.jpeg(x, QUALITY, backward=mode, validate=False).backward(g)
    _run(benchmark, f"fdgpu forward+backward ({mode})", step)


def test_pillow_roundtrip(benchmark, images):
    pytest.importorskip("PIL.Image")
    _run(benchmark, "Pillow save+load", pillow_roundtrip(images, QUALITY))


def test_kornia_forward(benchmark, images):
    kornia = pytest.importorskip("kornia")
    q = torch.full((BATCH,), float(QUALITY))
    _run(benchmark, "kornia forward", lambda: kornia.enhance.jpeg_codec_differentiable(images, q))


def test_kornia_forward_backward(benchmark, images):
    kornia = pytest.importorskip("kornia")
    q = torch.full((BATCH,), float(QUALITY))
    x = images.clone().requires_grad_()

    def step():
        x.grad = None
        kornia.enhance.jpeg_codec_differentiable(x, q).sum().backward()
    _run(benchmark, "kornia forward+backward", step)

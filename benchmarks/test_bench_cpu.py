"""CPU speed of the core layer next to what users would pick instead, and the CPU targets, in one run.

    python -m pytest benchmarks/test_bench_cpu.py benchmarks/test_bench_contention.py --benchmark-only
    DIFFJPEG_PATH=/path/to/Diff-JPEG python -m pytest benchmarks/test_bench_cpu.py ...   # with Diff-JPEG beside

At the end, a table of the CPU targets (benchmarks/_targets.py): every figure as the ratio the target is stated
in, measured side by side in this run.

fdgpu's providers run ``backend="auto"``, which on CPU tensors is the C library; the run fails instead of timing
the torch reference in its place (a missing library is an error here, not a slower figure).

* Batch of 32 RGB 224x224 images (smooth random images: speed does not depend on content here), JPEG q75 4:2:0:
  fdgpu forward with and without ``validate`` (the default is ``validate=True``), forward+backward (ste, soft,
  validated), the torch reference forward (the ``torch`` backend: the path the Triton kernels mirror), Pillow's
  save+load round trip and simplejpeg's encode+decode (both libjpeg-turbo, one image at a time), kornia's
  ``jpeg_codec_differentiable`` forward and forward+backward, and Diff-JPEG (Reich et al., WACV 2024,
  github.com/necla-ml/Diff-JPEG) forward and forward+backward where ``DIFFJPEG_PATH`` names a checkout of its
  repository (imported from there, never part of this package; skipped when unset).
* One 32x32 image per call: ``fdgpu.jpeg`` with and without ``validate``, Pillow's and simplejpeg's round trip.
* ms per megapixel from 32x32 to 1024x1024: forward on 1 MP per call (1024 images of 32x32 ... 1 of 1024x1024).
* Peak memory of the forward as a multiple of the input: in a fresh process, the peak resident set is reset to the
  current one (``/proc/self/clear_refs``, Linux), and its growth during one forward of the batch (``VmHWM`` minus
  ``VmRSS`` before the call) is divided by the input's bytes. The output (1x) is included; skipped where /proc
  does not offer this.

pytest-benchmark's table gives the time per call; the summary printed at the end gives ms per image and each
provider's ratio to the fdgpu forward.

The bit-exact integer forward is measured against the forward it replaced: the float-DCT reference of
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
from _common import pillow_roundtrip, print_past_capture, provider, require_c_library  # noqa: E402
import _targets  # noqa: E402
from _targets import FORWARD, FORWARD_UNVALIDATED, PILLOW, SIMPLEJPEG, record  # noqa: E402

BATCH, SIZE, QUALITY = 32, 224, 75
_results = {}


@pytest.fixture(scope="module", autouse=True)
def c_library():
    """fdgpu's providers time the C library (``backend="auto"`` on CPU tensors): an error, not a slower figure,
    when it is unavailable."""
    _targets.BACKEND["auto"] = require_c_library()


@pytest.fixture(scope="module")
def images(request):
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(BATCH, 3, 28, 28, generator=g), size=SIZE, mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    x = (x * 255).round() / 255
    yield x
    if _results:
        base = _results.get(FORWARD)
        lines = [f"\nmedian ms per image, batch {BATCH} x 3 x {SIZE} x {SIZE}, q{QUALITY}, "
                 f"{torch.get_num_threads()} threads (ratio: this / fdgpu forward):"]
        for name, ms in _results.items():
            ratio = f"{ms / base:6.2f}x" if base else ""
            lines.append(f"  {name:32s} {ms:8.3f} ms   {ratio}")
        print_past_capture(request, lines)


def _run(benchmark, name, fn, rounds=10, warmup=2):
    benchmark.group = f"cpu-{SIZE}px-batch{BATCH}"
    benchmark.name = name
    benchmark.extra_info["batch"] = BATCH
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once as a smoke test, nothing timed
        return
    ms = benchmark.stats.stats.median * 1e3 / BATCH
    benchmark.extra_info["ms_per_image"] = ms
    _results[name] = ms
    record(f"batch {BATCH}x{SIZE}^2", name, ms)


@pytest.mark.parametrize("validate", [True, False])
def test_fdgpu_forward(benchmark, images, validate):
    _run(benchmark, FORWARD if validate else FORWARD_UNVALIDATED,
         provider("fdgpu_jpeg", images, quality=QUALITY, validate=validate))


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
    _run(benchmark, "torch reference forward", lambda: reference.forward(images, lt, ct, "4:2:0"),
         rounds=5)


def test_reference_forward_float_dct(benchmark, images, float_dct_reference):
    lt, ct = fdgpu.tables.ijg(QUALITY)
    _run(benchmark, f"reference forward (float DCT, {FLOAT_DCT_COMMIT})",
         lambda: float_dct_reference.forward(images, lt, ct, "4:2:0"))


@pytest.mark.parametrize("mode", ["ste", "soft"])
def test_fdgpu_forward_backward(benchmark, images, mode):
    _run(benchmark, f"fdgpu forward+backward ({mode})",
         provider("fdgpu_jpeg_fwdbwd", images, quality=QUALITY, backward=mode, validate=True))


def test_pillow_roundtrip(benchmark, images):
    pytest.importorskip("PIL.Image")
    _run(benchmark, PILLOW, pillow_roundtrip(images, QUALITY))


def test_simplejpeg_roundtrip(benchmark, images):
    pytest.importorskip("simplejpeg")
    _run(benchmark, SIMPLEJPEG, provider("simplejpeg_codec", images, quality=QUALITY))


def test_kornia_forward(benchmark, images):
    pytest.importorskip("kornia")
    _run(benchmark, "kornia forward", provider("kornia", images, quality=QUALITY))


def test_kornia_forward_backward(benchmark, images):
    pytest.importorskip("kornia")
    _run(benchmark, "kornia forward+backward", provider("kornia_fwdbwd", images, quality=QUALITY))


def _diffjpeg():
    """Diff-JPEG's ``diff_jpeg_coding`` from the checkout that ``DIFFJPEG_PATH`` names (skip when unset)."""
    import os

    path = os.environ.get("DIFFJPEG_PATH")
    if not path:
        pytest.skip("Diff-JPEG: set DIFFJPEG_PATH to a checkout of github.com/necla-ml/Diff-JPEG to time it beside")
    if not (Path(path) / "diff_jpeg" / "__init__.py").is_file():
        pytest.fail(f"DIFFJPEG_PATH: expected a checkout of Diff-JPEG (with diff_jpeg/__init__.py), got {path!r}")
    sys.path.insert(0, path)
    try:
        return importlib.import_module("diff_jpeg").diff_jpeg_coding
    finally:
        sys.path.remove(path)


def _diffjpeg_op(images):
    # its entry point takes RGB in [0, 255] and a quality per image; its default (ste=False) is the paper's method
    code = _diffjpeg()
    q = torch.full((images.shape[0],), float(QUALITY))
    return lambda t: code(t * 255, q) / 255


def test_diffjpeg_forward(benchmark, images):
    op = _diffjpeg_op(images)
    _run(benchmark, "Diff-JPEG forward", lambda: op(images), rounds=3, warmup=1)


def test_diffjpeg_forward_backward(benchmark, images):
    op = _diffjpeg_op(images)
    xg = images.clone().requires_grad_()
    grad = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))

    def fwdbwd():
        xg.grad = None
        op(xg).backward(grad)
    _run(benchmark, "Diff-JPEG forward+backward", fwdbwd, rounds=3, warmup=1)


# ---------------------------------------------------------------- one 32x32 image per call
@pytest.mark.parametrize("validate", [True, False])
def test_one_small_call(benchmark, validate):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _small(benchmark, f"fdgpu.jpeg (validate={validate})", lambda: fdgpu.jpeg(x, QUALITY, validate=validate))


def test_one_small_call_pillow(benchmark):
    pytest.importorskip("PIL.Image")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _small(benchmark, PILLOW, pillow_roundtrip(x, QUALITY))


def test_one_small_call_simplejpeg(benchmark):
    pytest.importorskip("simplejpeg")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _small(benchmark, SIMPLEJPEG, provider("simplejpeg_codec", x, quality=QUALITY))


def _small(benchmark, name, fn):
    benchmark.group = _targets.SMALL
    benchmark.name = name
    benchmark.pedantic(fn, rounds=2000, warmup_rounds=50, iterations=1)
    if benchmark.stats is not None:
        record(_targets.SMALL, name, benchmark.stats.stats.median * 1e3)


# ---------------------------------------------------------------- cost per pixel across sizes
@pytest.mark.parametrize("size", [32, 64, 128, 256, 512, 1024])
def test_ms_per_megapixel(benchmark, size):
    n = max(1, (1 << 20) // (size * size))  # 1 MP per call
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g),
                                        size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    benchmark.group = "ms per megapixel (1 MP per call)"
    benchmark.name = f"{size}^2 x {n}"
    benchmark.pedantic(lambda: fdgpu.jpeg(x, QUALITY, validate=False), rounds=10, warmup_rounds=2, iterations=1)
    if benchmark.stats is not None:
        record("ms per megapixel", f"{size}^2", benchmark.stats.stats.median * 1e3 * (1 << 20) / (n * size * size))


# ---------------------------------------------------------------- peak memory of the forward
_MEMORY = r"""
import sys, torch, fdgpu
mode = sys.argv[1]
forward = fdgpu.backends.get("torch" if mode == "torch" else "cpu").forward
x = torch.rand(%d, 3, %d, %d)
lt, ct = fdgpu.tables.ijg(%d)
forward(x[:2], lt, ct, "4:2:0", mode == "soft")  # load the library, start the pool, scratch
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident set (VmHWM) := the current one (Linux >= 4.0)
before = status("VmRSS:")
y = forward(x, lt, ct, "4:2:0", mode == "soft")
print((status("VmHWM:") - before) / (x.numel() * x.element_size()))
"""


@pytest.mark.parametrize("mode", ["fused", "soft", "torch"])
def test_peak_memory(benchmark, mode):
    import subprocess
    import sys

    script = _MEMORY % (BATCH, SIZE, SIZE, QUALITY)
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = {}

    def run():
        r = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, cwd=root,
                           env={**__import__("os").environ, "PYTHONPATH": root})
        out["ratio"] = float(r.stdout) if r.returncode == 0 else None
        out["error"] = r.stderr[-300:]
    name = {"fused": "fdgpu forward", "soft": "fdgpu forward, saving the soft state",
            "torch": "torch reference forward"}[mode]
    benchmark.group = "peak memory (x input)"
    benchmark.name = name
    benchmark.pedantic(run, rounds=1, iterations=1)
    if out["ratio"] is None:
        pytest.skip(f"peak resident set not measurable here (/proc/self/clear_refs, VmHWM): {out['error']}")
    benchmark.extra_info["peak_over_input"] = out["ratio"]
    record("peak memory", name, out["ratio"])

"""GPU throughput of the JPEG layer, providers side by side (CUDA only; skipped cleanly without a GPU).

    pytest benchmarks/test_bench_gpu.py --benchmark-only [--benchmark-json gpu.json] [-k "224 and fwd-"]

Providers: ``triton`` (fdgpu's fused kernels), ``torch`` (the reference pipeline, eager), ``compile``
(``torch.compile`` of the reference pipeline), ``kornia`` (``kornia.enhance.jpeg_codec_differentiable``) and
``nvjpeg`` (torchvision ``encode_jpeg``/``decode_jpeg`` on the GPU: a real codec, forward only, uint8 in and out;
its conversions from and to float and the copy of the encoded bytes to the host are timed with it). Each at
quality 75, 4:2:0, forward (``fwd``) and forward + ``ste`` backward (``fwdbwd``), batch 1 and 64, 224x224 and
512x512.

Timing: two warm-up rounds (Triton/Inductor compilation, cuDNN/nvJPEG handles), then rounds of one call each with a
``torch.cuda.synchronize()`` inside the timed function, so a round is the wall time of finished GPU work; the
median is reported with its spread by pytest-benchmark. ``extra_info`` carries images/s and GB/s, where GB/s counts
the minimum traffic of the operation, not what a provider actually moves: forward reads and writes the fp32 image
(24 B per pixel), forward + backward also reads the output gradient and writes the input gradient (48 B per pixel).
The GPU name, CUDA, torch and triton versions go to ``extra_info`` and to the summary printed at the end.
"""
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytest_benchmark")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the GPU benchmarks need one (the CPU suites are test_bench_cpu.py and "
                "test_bench_baselines.py)", allow_module_level=True)

import fdgpu  # noqa: E402
from _common import print_past_capture  # noqa: E402
from fdgpu import environment  # noqa: E402

QUALITY = 75
SIZES = (224, 512)
BATCHES = (1, 64)
PROVIDERS = ("triton", "torch", "compile", "kornia", "nvjpeg")
PASSES = ("fwd", "fwdbwd")
ROUNDS = int(os.environ.get("FDGPU_GPU_BENCH_ROUNDS", 20))
CELLS = [(s, b, p, m) for s in SIZES for b in BATCHES for m in PASSES for p in PROVIDERS
         if not (p == "nvjpeg" and m == "fwdbwd")]
_rows = []
# docs/kernels.md's cost-model ESTIMATES (python -m fdgpu.kernels.aot --cost; no GPU measured them), microseconds
# per 224x224 image in a large batch, 4:2:0: forward, and forward + ste backward. Printed beside the measured
# triton rows so that a GPU run confirms or refutes them.
ESTIMATE_US = {"A100": {"fwd": 1.01, "fwdbwd": 1.01 + 1.29}, "H100": {"fwd": 0.54, "fwdbwd": 0.54 + 0.73}}


def _versions():
    v = environment.versions(("torch", "triton"))
    return {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda, "torch": v["torch"], "triton": v["triton"]}


def _provider(name):
    """A function ``x -> y`` (differentiable where the provider is), or a skip reason."""
    if name == "triton":
        from fdgpu import kernels
        if not kernels.AVAILABLE:
            pytest.skip("triton is not installed")
        return lambda x: fdgpu.jpeg(x, QUALITY, backend="triton", validate=False)
    if name == "torch":
        return lambda x: fdgpu.jpeg(x, QUALITY, backend="torch", validate=False)
    if name == "compile":
        return torch.compile(lambda x: fdgpu.jpeg(x, QUALITY, backend="torch", validate=False), dynamic=False)
    if name == "kornia":
        kornia = pytest.importorskip("kornia")
        q = torch.tensor([float(QUALITY)], device="cuda")
        return lambda x: kornia.enhance.jpeg_codec_differentiable(x, q.expand(x.shape[0]))
    if name == "nvjpeg":
        tvio = pytest.importorskip("torchvision.io")
        if not hasattr(tvio, "encode_jpeg"):
            pytest.skip("this torchvision has no encode_jpeg")

        def nvjpeg(x):
            u8 = list(x.mul(255).round_().to(torch.uint8))
            data = tvio.encode_jpeg(u8, quality=QUALITY)  # CUDA tensors in, encoded bytes on the GPU out
            # decode_jpeg takes the encoded bytes on the host (a small copy: ~10 KB per 224^2 image at q75)
            return torch.stack(tvio.decode_jpeg([d.cpu() for d in data], device="cuda")).float().div_(255)
        return nvjpeg
    raise ValueError(name)


@pytest.mark.parametrize("size, batch, provider, mode", CELLS,
                         ids=[f"{p}-{m}-{s}-{b}" for s, b, p, m in CELLS])
def test_gpu_throughput(benchmark, size, batch, provider, mode):
    fn = _provider(provider)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand(batch, 3, size, size, device="cuda", generator=g)
    gy = torch.randn(batch, 3, size, size, device="cuda", generator=g)
    if mode == "fwd":
        def call():
            with torch.no_grad():
                fn(x)
            torch.cuda.synchronize()
    else:
        xg = x.clone().requires_grad_(True)

        def call():
            xg.grad = None
            fn(xg).backward(gy)
            torch.cuda.synchronize()
    try:
        call()
        call()  # warm-up: compilation, handles, caches
    except Exception as e:  # a provider that cannot run here is skipped with its reason, never silently
        pytest.skip(f"{provider} failed to run: {type(e).__name__}: {e}")
    benchmark.group = f"{size}px-batch{batch}-{mode}"
    benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    st = benchmark.stats.stats
    px = batch * size * size
    bytes_min = (24 if mode == "fwd" else 48) * px
    row = {"provider": provider, "mode": mode, "size": size, "batch": batch, "median_ms": st.median * 1e3,
           "iqr_ms": (st.q3 - st.q1) * 1e3, "images_per_s": batch / st.median, "GB_per_s": bytes_min / st.median / 1e9,
           **_versions()}
    benchmark.extra_info.update(row)
    _rows.append(row)


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    if not _rows:
        return
    v = _versions()
    lines = ["", f"{v['gpu']}, CUDA {v['cuda']}, torch {v['torch']}, triton {v['triton']}; quality {QUALITY}, "
             f"4:2:0; GB/s counts 24 (fwd) or 48 (fwd+bwd) bytes per pixel",
             f"{'size':>5} {'batch':>5} {'mode':>7} {'provider':>8} {'median ms':>10} {'IQR ms':>8} "
             f"{'images/s':>10} {'GB/s':>7}"]
    est = next((e for k, e in ESTIMATE_US.items() if k in v["gpu"]), None)
    for r in sorted(_rows, key=lambda r: (r["size"], r["batch"], r["mode"], r["median_ms"])):
        note = ""
        if est is not None and r["provider"] == "triton" and r["size"] == 224 and r["batch"] > 1:
            note = f"  (docs/kernels.md estimate {est[r['mode']]:.2f} us/image, measured " \
                   f"{r['median_ms'] * 1e3 / r['batch']:.2f})"
        lines.append(f"{r['size']:>5} {r['batch']:>5} {r['mode']:>7} {r['provider']:>8} {r['median_ms']:>10.3f} "
                     f"{r['iqr_ms']:>8.3f} {r['images_per_s']:>10.1f} {r['GB_per_s']:>7.1f}{note}")
    print_past_capture(request, lines)

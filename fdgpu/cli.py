"""The ``fdgpu`` command: ``demo``, ``compress``, ``eval`` and ``bench`` subcommands.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``; they are
imported only when chosen, so ``fdgpu --help`` stays fast and optional dependencies stay optional.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = {
    "demo": ("fdgpu.demo", "PSNR/SSIM of JPEG and FD on scikit-image's sample photos, with a figure"),
    "compress": ("fdgpu.compress", "JPEG/FD-compress image files to PNG (simulated) or real baseline JPEG"),
    "eval": ("fdgpu.eval.cli", "evaluate defences against (adaptive) attacks on a classifier"),
    "bench": ("fdgpu.bench", "per-image speed of fdgpu against quilting, TVM, Pillow and kornia"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="fdgpu", description="Differentiable JPEG / Feature Distillation.")
    parser.add_argument("--version", action="version", version=f"fdgpu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ImportError as exc:  # a missing optional dependency: report it when the command is used
            p.set_defaults(_import_error=exc)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_import_error", None) is not None:
        print(f"fdgpu {args.command}: a dependency is missing ({args._import_error}). "
              f"Install the extras: pip install 'fdgpu[all]'", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Bits per pixel of each JPEG/FD defence of an ``fdgpu eval`` run, beside its clean accuracy and its per-image worst
case: how much file a defence's tables cost for the robustness they buy.

For every defence of the run's JSON (``jpeg:Q``, ``fd:K``, ``fd-official:K``, ``tables:PATH``) the exact size of the
file Pillow writes for each evaluated image (:func:`fdgpu.jpeg_size`: 4:2:0, standard Huffman tables) is turned into
bits per pixel and averaged over the same images the run evaluated (read again from the run's own data settings).
``fd-official`` codes R, G and B as three grayscale planes with the authors' table (no colour conversion): its size is
that of three grayscale files. JPEG rows whose quality has the nearest bits per pixel to an FD/learned row are marked,
which is the comparison at equal file size.

    export FDGPU_DATA=../shared/data FDGPU_MODELS=../shared/models
    fdgpu eval --model resnet20 --start 100 --limit 200 --defences jpeg:50 fd:1 --attacks none apgd:1:20 \\
        --views bpda soft --no-plot --out cifar.json
    PYTHONPATH=. python examples/bits_per_pixel.py cifar.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import fdgpu
from fdgpu.eval.specs import parse_defence


def load_images(meta: dict, data_root: str | None) -> torch.Tensor:
    """The images the run evaluated, ``(N, 3, H, W)`` float in [0, 1], as ``fdgpu eval`` loaded them."""
    from fdgpu.data import data_root as default_root

    root = Path(data_root) if data_root else default_root(None)
    start, n = meta.get("start", 0), meta["n"]
    if meta["data"] == "natural":
        from fdgpu.models.imagenet import load_natural

        return load_natural(root / "natural", start=start, limit=n)[0]
    from fdgpu.data import load_npz

    return load_npz(meta["data"], root=root, start=start, limit=n)[0]


def bits_per_pixel(x: torch.Tensor, spec: str) -> float:
    """Mean bits per pixel of the files of ``x`` with the defence ``spec``'s tables."""
    d = parse_defence(spec)
    h, w = x.shape[-2:]
    if d.kind == "jpeg":
        sizes = fdgpu.jpeg_size(x, int(d.args[0]))
    elif d.kind in ("fd", "fd-official"):
        variant = "official" if d.kind == "fd-official" else "paper"
        table = fdgpu.tables.fd(float(d.args[0]), variant=variant).round()
        if variant == "official":  # three grayscale planes
            sizes = fdgpu.jpeg_size(x.reshape(-1, 1, h, w), luma_table=table).view(-1, 3).sum(1)
        else:
            sizes = fdgpu.jpeg_size(x, luma_table=table)
    elif d.kind == "tables":
        t = torch.load(d.args[0], weights_only=True)
        sizes = fdgpu.jpeg_size(x, luma_table=t["luma"].round(), chroma_table=t["chroma"].round())
    else:
        raise ValueError(f"defence {spec!r}: bits per pixel only for jpeg, fd, fd-official and tables defences")
    return float(sizes.double().mul(8 / (h * w)).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="fdgpu eval --out JSON files (same images)")
    p.add_argument("--data-root", default=None, help="as fdgpu eval's (default $FDGPU_DATA)")
    args = p.parse_args(argv)
    rows, x, meta0 = [], None, None
    for path in args.runs:
        run = json.loads(Path(path).read_text())
        meta = run["meta"]
        if x is None:
            x, meta0 = load_images(meta, args.data_root), meta
        elif (meta["data"], meta.get("start"), meta["n"]) != (meta0["data"], meta0.get("start"), meta0["n"]):
            p.error(f"{path}: expected the same images as {args.runs[0]}")
        for wc in run["worst_case"]:
            if wc["defence"] == "none":
                continue
            rows.append((wc["defence"], bits_per_pixel(x, wc["defence"]), wc["clean_acc"], wc["worst_acc"],
                         ", ".join(f"{v} {a * 100:.1f}" for v, a in wc["per_view"].items())))
    jpeg = [(r[1], r[0]) for r in rows if r[0].startswith("jpeg:")]
    print(f"{meta0['data']} images {meta0.get('start', 0)}-{meta0.get('start', 0) + meta0['n'] - 1} "
          f"({x.shape[-1]}x{x.shape[-2]}), model {meta0['model']}\n")
    print("| defence | bits per pixel | JPEG quality at that size | clean % | worst case % | per view % |")
    print("| --- | ---: | --- | ---: | ---: | --- |")
    for name, bpp, clean, worst, views in sorted(rows, key=lambda r: r[1]):
        near = "" if name.startswith("jpeg:") or not jpeg else min(jpeg, key=lambda j: abs(j[0] - bpp))[1]
        print(f"| {name} | {bpp:.3f} | {near} | {clean * 100:.1f} | {worst * 100:.1f} | {views} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

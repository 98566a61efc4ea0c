"""``fdgpu compress``: apply JPEG or Feature Distillation to image files.

``--format png`` writes fdgpu's simulated round trip losslessly; ``--format jpeg`` writes a real baseline JPEG
through Pillow with the same quantization tables and subsampling, so FD can be applied at compression time and
read by any decoder. Every output is written to a temporary file in the output folder and renamed into place, so an
interrupted run never leaves a partial image. Unreadable or unsupported inputs are reported and skipped; the exit
status is then 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quality", type=float, help="IJG quality in [1, 100]")
    g.add_argument("--fd", type=float, metavar="K", help="Feature Distillation strength K (1, 2, 3 = FD 1x/2x/3x)")
    p.add_argument("--format", choices=("png", "jpeg"), default="png",
                   help="png: the simulated result; jpeg: a real baseline JPEG with the same tables (default: png)")
    p.add_argument("--subsampling", choices=tuple(PIL_SUBSAMPLING), default="4:2:0")


def collect(inputs: List[str]) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(source file, path relative to the output folder) pairs, and error messages for inputs that do not exist."""
    items, errors = [], []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{p}: no image files found in this folder")
            items += [(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            items.append((p, Path(p.name)))
        else:
            errors.append(f"{p}: no such file or folder")
    return items, errors


def tables_for(args):
    """(luma, chroma) float (8, 8) tables for the chosen --quality or --fd."""
    from . import tables

    if args.quality is not None:
        return tables.ijg(args.quality)
    t = tables.fd(args.fd)
    return t, t


def load_image(path: Path):
    """Float ``(C, H, W)`` in [0, 1] with C = 3 (RGB) or 1 (L). Raises ValueError for what JPEG cannot hold."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("P", "1"):
            has_alpha = im.mode == "P" and "transparency" in im.info
            if has_alpha:
                raise ValueError("palette image with transparency: JPEG cannot store the alpha channel "
                                 "(flatten it onto a background first)")
            im = im.convert("RGB" if im.mode == "P" else "L")
        if im.mode not in ("RGB", "L"):
            raise ValueError(f"expected an 8-bit RGB or grayscale image, got mode {im.mode!r} "
                             f"(JPEG cannot store alpha or >8-bit samples; convert it first)")
        a = np.asarray(im).copy()
    t = torch.from_numpy(a).float() / 255
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def _atomic_save(save, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".fdgpu-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        save(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(x, target: Path, fmt: str, luma, chroma, subsampling: str) -> None:
    """Write the result for one image: ``x`` is the float ``(C, H, W)`` input."""
    import numpy as np
    import torch
    from PIL import Image

    from . import functional

    if fmt == "png":
        y = functional.requantize(x, luma, chroma, subsampling=subsampling)
        a = (y * 255).round().to(dtype=torch.uint8)
        a = a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()
        _atomic_save(lambda p: Image.fromarray(a).save(p, format="PNG"), target)
        return
    qt = []
    for t in (luma, chroma) if x.shape[0] == 3 else (luma,):
        if not bool((t == t.round()).all()) or float(t.max()) > 255:
            raise ValueError(f"a baseline JPEG stores integer steps in [1, 255], got table entries up to "
                             f"{float(t.max()):g} (non-integer or too large); use --format png for this table")
        qt.append([int(v) for v in t.flatten().tolist()])
    a = (x * 255).round().to(dtype=torch.uint8)
    a = a[0].numpy() if a.shape[0] == 1 else np.ascontiguousarray(a.permute(1, 2, 0).numpy())
    kw = {"subsampling": PIL_SUBSAMPLING[subsampling]} if x.shape[0] == 3 else {}
    _atomic_save(lambda p: Image.fromarray(a).save(p, format="JPEG", qtables=qt, **kw), target)


def run(args) -> int:
    from tqdm import tqdm

    try:
        luma, chroma = tables_for(args)
    except ValueError as exc:
        print(f"fdgpu compress: {exc}", file=sys.stderr)
        return 2
    items, errors = collect(args.inputs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if args.format == "png" else ".jpg"
    seen = set()
    written = 0
    for src, rel in tqdm(items, desc="compress", unit="img", disable=len(items) < 2, file=sys.stderr):
        target = (out / rel).with_suffix(suffix)
        if target in seen:
            errors.append(f"{src}: skipped, another input already wrote {target}")
            continue
        if target.resolve() == src.resolve():
            errors.append(f"{src}: skipped, the output would overwrite the input; choose another --out")
            continue
        seen.add(target)
        try:
            x = load_image(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            write(x, target, args.format, luma, chroma, args.subsampling)
            written += 1
        except Exception as exc:  # a corrupt or unsupported file is reported; the others go on
            errors.append(f"{src}: skipped ({type(exc).__name__}: {exc})")
    for e in errors:
        print(f"fdgpu compress: {e}", file=sys.stderr)
    print(f"wrote {written} of {len(items)} image(s) to {out}" + (f"; {len(errors)} problem(s)" if errors else ""))
    return 1 if errors else 0

"""``fdgpu compress``: apply JPEG or Feature Distillation to image files.

``--format png`` writes fdgpu's simulated round trip losslessly; ``--format jpeg`` writes a real baseline JPEG
through Pillow with the same quantization tables and subsampling, so FD can be applied at compression time and
read by any decoder. Every output is encoded in memory, written to a temporary file in the output folder through a
checked write, synced and renamed into place (:mod:`fdgpu.files`), so a full disk or an interrupted run (Ctrl-C or
SIGTERM) never leaves a partial image; a full disk stops the run with one line naming the file.

Inputs are never replaced or modified. All output names are planned before anything is written: an output that would
land on an input file, or on another input's output (``a.jpg`` and ``a.png`` both give ``a.png``), gets a unique name
instead (``a.jpg.png``), and a note on stderr says so. The EXIF orientation is applied, as image viewers do.
What JPEG cannot hold is refused, never silently dropped: animated or multi-frame images, samples of more than 8
bits (RGB and grayscale alike), alpha that is not fully opaque, colour spaces other than RGB and grayscale.
Unreadable or refused inputs are reported and skipped; the exit status is then 1. Usage errors (a table that cannot
be used, an --out that is not a folder or cannot be created) are reported before any work, with exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .choices import PIL_SUBSAMPLING
from .files import WriteError, clean_stale, exit_status, prepare_out, terminate_as_interrupt, write_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--quality", type=float, help="IJG quality in [1, 100]")
    g.add_argument("--fd", type=float, metavar="K", help="Feature Distillation strength K (1, 2, 3 = FD 1x/2x/3x)")
    p.add_argument("--format", choices=("png", "jpeg"), default="png",
                   help="png: the simulated result; jpeg: a real baseline JPEG with the same tables (default: png)")
    p.add_argument("--subsampling", choices=tuple(PIL_SUBSAMPLING), default="4:2:0",
                   help="chroma subsampling, as Pillow's subsampling= (default: 4:2:0, Pillow's own default)")


def collect(inputs: List[str], skip: Optional[Path] = None) -> Tuple[List[Tuple[Path, Path]], List[str]]:
    """(source file, path relative to the output folder) pairs, and error messages for inputs that do not exist.

    Files under ``skip`` (the output folder, when it lies inside an input folder) are left out, so that a second run
    does not compress the first run's outputs again.
    """
    items, errors = [], []
    skip = skip.resolve() if skip is not None else None
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            inner = skip if skip is not None and skip != p.resolve() and skip.is_relative_to(p.resolve()) else None
            found, broken = [], []
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if inner is not None and f.resolve().is_relative_to(inner):
                    continue  # an earlier run's output inside this input folder
                if f.is_file():
                    found.append(f)
                elif f.is_symlink() and not f.exists():
                    broken.append(f)
            if not found and not broken:
                errors.append(f"{p}: no image files found in this folder")
            errors += [f"{f}: skipped, a broken symbolic link or a symlink loop" for f in broken]
            items += [(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            items.append((p, Path(p.name)))
        elif p.is_symlink():
            errors.append(f"{p}: a broken symbolic link or a symlink loop")
        else:
            errors.append(f"{p}: no such file or folder")
    return items, errors


def _entry(path: Path) -> Tuple[str, str]:
    """The directory entry a path names (its folder resolved, its own name kept): what a rename would replace."""
    return (os.path.realpath(path.parent), path.name)


def plan(items: List[Tuple[Path, Path]], out: Path, suffix: str) -> Tuple[List[Path], Dict[int, str]]:
    """One output path per input, all distinct and none of them an input file, decided before anything is written.

    The natural name is ``out / rel`` with the output suffix. When several inputs share it, the one whose own suffix
    is the output's keeps it (``a.png`` over ``a.jpg`` for PNG output); the others, and any input whose natural name
    is an input file (``--out`` equal to an input folder) or an existing folder, get their full name plus the suffix
    (``a.jpg.png``), numbered if that is taken too. Returns the targets and ``{index: note}`` for renamed outputs.
    """
    sources = {_entry(src) for src, _ in items}

    def taken(t: Path) -> bool:
        return _entry(t) in sources or (os.path.lexists(t) and not (t.is_file() and not t.is_symlink()))

    def same_kind(src: Path) -> bool:
        ext = src.suffix.lower()
        return ext == suffix or (suffix == ".jpg" and ext == ".jpeg")

    natural = [(out / rel).with_suffix(suffix) for _, rel in items]
    groups: dict = {}
    for i, t in enumerate(natural):
        groups.setdefault(_entry(t), []).append(i)
    targets: List = [None] * len(items)
    used = set()
    for key, members in groups.items():
        first = min(members, key=lambda i: (not same_kind(items[i][0]), i))
        if not taken(natural[first]):
            targets[first] = natural[first]
            used.add(key)
    notes = {}
    for i, (src, rel) in enumerate(items):
        if targets[i] is not None:
            continue
        base = (out / rel).parent / rel.name
        cand, n = base.with_name(base.name + suffix), 1
        while _entry(cand) in used or taken(cand):
            n += 1
            cand = base.with_name(f"{base.name}-{n}{suffix}")
        targets[i] = cand
        used.add(_entry(cand))
        if taken(natural[i]):
            why = "is an input file" if _entry(natural[i]) in sources else "is a folder or not a regular file"
        else:
            other = items[next(j for j in groups[_entry(natural[i])]
                               if targets[j] is not None and _entry(targets[j]) == _entry(natural[i]))][0]
            why = f"is the output of {other}"
        notes[i] = f"{src}: written as {cand}, because {natural[i]} {why}"
    return targets, notes


def tables_for(args):
    """(luma, chroma) float (8, 8) tables for the chosen --quality or --fd."""
    from . import tables

    if args.quality is not None:
        return tables.ijg(args.quality)
    t = tables.fd(args.fd)
    return t, t


def _bits_per_sample(im) -> int:
    """Bits per sample as stored in the file (Pillow opens 16-bit RGB PNG and TIFF as 8-bit "RGB")."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return 32 if im.mode in ("I", "F") else 16
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    if im.format == "PNG":
        for tile in im.tile or ():
            raw = tile.args[0] if isinstance(tile.args, tuple) else tile.args
            if isinstance(raw, str) and raw.endswith(";16B"):
                return 16
    return 8


def _check_header(im) -> None:
    """Refuse, before decoding, what a JPEG cannot hold: several frames, more than 8 bits per sample."""
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        raise ValueError(f"expected a single image, got {frames} frames (animated or multi-page); a JPEG holds "
                         f"one frame: extract the frames first")
    bits = _bits_per_sample(im)
    if bits > 8:
        kind = "grayscale" if im.mode[0] in "IFL" else "colour"
        raise ValueError(f"expected 8-bit samples, got {bits}-bit {kind} samples; JPEG stores 8 bits, and fdgpu "
                         f"does not reduce them silently: convert the image to 8 bits first")


def probe(path: Path) -> None:
    """Open ``path`` and check its header (no decoding); raises what :func:`load_image` would for those checks."""
    from PIL import Image

    with Image.open(path) as im:
        _check_header(im)


def read_image(path: Path):
    """The 8-bit samples of an image file as viewers show it: uint8 ``(H, W, 3)`` (RGB) or ``(H, W)`` (grayscale).

    The EXIF orientation is applied; palette and 1-bit images are expanded; a fully opaque alpha channel is dropped.
    Raises ValueError for what cannot be represented that way (nor in a JPEG): several frames, more than 8 bits per
    sample, transparent pixels, colour spaces other than RGB and grayscale (CMYK, ...). Pillow's own errors
    (``UnidentifiedImageError``, ``OSError`` for truncated files) pass through.
    """
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        _check_header(im)
        im.load()
        im = ImageOps.exif_transpose(im)  # as image viewers display it; the output carries no orientation tag
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "PA":
            im = im.convert("RGBA")
        elif im.mode == "1":
            im = im.convert("L")
        if im.mode in ("RGBA", "LA"):
            alpha = np.asarray(im.getchannel("A"))
            if alpha.size and int(alpha.min()) < 255:
                raise ValueError("expected an opaque image, got transparent pixels; JPEG cannot store the alpha "
                                 "channel: flatten it onto a background first")
            im = im.convert(im.mode[:-1])  # a fully opaque alpha channel carries nothing
        if im.mode not in ("RGB", "L"):
            raise ValueError(f"expected an RGB or grayscale image, got mode {im.mode!r}; convert it to RGB first")
        return np.asarray(im).copy()


def load_image(path: Path):
    """Float ``(C, H, W)`` in [0, 1] with C = 3 (RGB) or 1 (L): :func:`read_image` as a tensor."""
    import torch

    t = torch.from_numpy(read_image(path)).float() / 255
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def write(x, target: Path, fmt: str, luma, chroma, subsampling: str) -> None:
    """Write the result for one image: ``x`` is the float ``(C, H, W)`` input."""
    import numpy as np
    from PIL import Image

    from . import functional
    from .pixels import to_uint8

    if fmt == "png":
        y = functional.requantize(x, luma, chroma, subsampling=subsampling)
        u = to_uint8(y)
        a = u[0].numpy() if u.shape[0] == 1 else u.permute(1, 2, 0).numpy()
        write_file(target, lambda fh: Image.fromarray(a).save(fh, format="PNG"))
        return
    qt = []
    for t in (luma, chroma) if x.shape[0] == 3 else (luma,):
        if not bool((t == t.round()).all()) or float(t.max()) > 255:
            raise ValueError(f"a baseline JPEG stores integer steps in [1, 255], got table entries up to "
                             f"{float(t.max()):g} (non-integer or too large); use --format png for this table")
        qt.append([int(v) for v in t.flatten().tolist()])
    u = to_uint8(x)  # the samples the layer reads (halves up), not torch.round's halves to even
    a = u[0].numpy() if u.shape[0] == 1 else np.ascontiguousarray(u.permute(1, 2, 0).numpy())
    kw = {"subsampling": PIL_SUBSAMPLING[subsampling]} if x.shape[0] == 3 else {}
    write_file(target, lambda fh: Image.fromarray(a).save(fh, format="JPEG", qtables=qt, **kw))


def _check_tables(args, luma, chroma) -> str:
    """A usage error (the same for every image) in the chosen tables, or ''."""
    opt = f"--quality {args.quality:g}" if args.quality is not None else f"--fd {args.fd:g}"
    for t in (luma, chroma):
        if not bool(t.isfinite().all()) or float(t.min()) < 1:
            return (f"{opt}: expected quantization steps >= 1 and finite, got a table with entries from "
                    f"{float(t.min()):g} to {float(t.max()):g}" + ("; use --fd K with K >= 1" if args.fd else ""))
        if args.format == "jpeg" and (not bool((t == t.round()).all()) or float(t.max()) > 255):
            return (f"{opt} --format jpeg: a baseline JPEG stores integer steps in [1, 255], got table entries up "
                    f"to {float(t.max()):g} (non-integer or too large); use --format png for this table")
    return ""


def run(args) -> int:
    from tqdm import tqdm

    try:
        luma, chroma = tables_for(args)
    except ValueError as exc:  # the tables' own message names quality / strength: the command line's options
        msg = str(exc)
        for arg, option in (("quality:", "--quality:"), ("strength:", "--fd:")):
            if msg.startswith(arg):
                msg = option + msg[len(arg):]
        print(f"fdgpu compress: {msg}", file=sys.stderr)
        return 2
    out = Path(args.out)
    problem = _check_tables(args, luma, chroma) or prepare_out(out)
    if problem:
        print(f"fdgpu compress: {problem}", file=sys.stderr)
        return 2
    found, errors = collect(args.inputs, skip=out)
    items, once = [], set()
    for src, rel in found:  # files that cannot even be opened take no output name
        if _entry(src) in once:  # the same file named twice (a folder and a file in it): one output
            continue
        once.add(_entry(src))
        try:
            probe(src)
            items.append((src, rel))
        except Exception as exc:
            errors.append(f"{src}: skipped ({type(exc).__name__}: {exc})")
    suffix = ".png" if args.format == "png" else ".jpg"
    targets, notes = plan(items, out, suffix)
    clean_stale(out, recursive=True)  # temporary files a killed earlier run left behind
    written, renamed, stopped = 0, [], ""
    bar = tqdm(total=len(items), desc="compress", unit="file", disable=len(items) < 2, file=sys.stderr)
    try:
        with terminate_as_interrupt():
            for i, ((src, _), target) in enumerate(zip(items, targets)):
                try:
                    x = load_image(src)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write(x, target, args.format, luma, chroma, args.subsampling)
                except WriteError as exc:  # a full disk or a read-only folder: the next images would fail too
                    stopped = f"{exc}; stopped after {written} of {len(once)} image(s)"
                    break
                except Exception as exc:  # a corrupt or unsupported file is reported; the others go on
                    errors.append(f"{src}: skipped ({type(exc).__name__}: {exc})")
                    continue
                written += 1
                bar.update(1)  # the bar counts the files written
                if i in notes:
                    renamed.append(notes[i])
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the image being written was not renamed into place
        bar.close()
        print(f"fdgpu compress: interrupted after {written} of {len(once)} image(s); nothing partial was written",
              file=sys.stderr)
        return exit_status(exc)
    bar.close()
    for line in renamed + errors:
        print(f"fdgpu compress: {line}", file=sys.stderr)
    if stopped:
        print(f"fdgpu compress: {stopped}", file=sys.stderr)
        return 1
    print(f"wrote {written} of {len(once)} image(s) to {out}" + (f"; {len(errors)} problem(s)" if errors else ""))
    return 1 if errors else 0

"""Data loaders for evaluation: CIFAR-10 ``.npz`` subsets and folders of images.

Paths always come from the caller; the fallbacks are the environment variable ``FDGPU_DATA``, which names a
folder laid out like the project's shared data (``cifar10/test.npz``, ``cifar10/train10k.npz``, ``natural/*.png``),
then ``~/.cache/fdgpu/data``, where ``fdgpu data cifar10`` puts CIFAR-10. An extracted ``cifar-10-batches-py``
folder (the official archive, as torchvision keeps it) is read directly too.

All loaders return ``x`` as ``(N, 3, H, W)`` float32 in [0, 1] (exact ``uint8 / 255``) and ``y`` as ``(N,)`` int64.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

PathLike = Union[str, os.PathLike]
ENV_VAR = "FDGPU_DATA"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


GET_CIFAR10 = "fdgpu data cifar10"  # the command that downloads CIFAR-10 into the default data folder
BATCHES = {"test": "test_batch", "train10k": "data_batch_1"}  # npz name -> file of cifar-10-batches-py


def data_root(root: Optional[PathLike] = None, required: bool = True) -> Optional[Path]:
    """The data folder: ``root`` if given, else ``$FDGPU_DATA``, else ``~/.cache/fdgpu/data`` when it exists.

    The one place that decides where fdgpu's data is (``fdgpu eval --data-root``, quilting's patch database,
    ``fdgpu bench``). ``required=False``: return ``None`` instead of raising when there is no such folder (for
    callers with a fallback, such as the benchmark's synthetic images).

    Raises:
        FileNotFoundError: when none of them is a folder (and ``required``); the message says how to get the data.
    """
    from .download import data_dir

    if root is None and not os.environ.get(ENV_VAR):
        path = data_dir()
        if not path.is_dir():
            if not required:
                return None
            raise FileNotFoundError(f"expected a data folder, got none: download CIFAR-10 with `{GET_CIFAR10}` "
                                    f"(into {path}), or pass --data-root DIR (Python: root=DIR) or set {ENV_VAR} "
                                    f"to a folder holding cifar10/test.npz")
        return path
    path = data_dir(root)
    if not path.is_dir():
        if not required:
            return None
        raise FileNotFoundError(f"expected a data folder, got {str(path)!r} which is not a directory; "
                                f"`{GET_CIFAR10} --root {path}` downloads CIFAR-10 into it")
    return path


def image_files(folder: PathLike) -> List[Path]:
    """The image files (suffix in :data:`IMAGE_SUFFIXES`, any case) of ``folder``, sorted by name; ``[]`` when it
    is not a folder. Every loader of a folder of photos lists it with this."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir())


def resize(im, size: Tuple[int, int]):
    """A Pillow image resized to ``size`` = (H, W), bicubic (Pillow's antialiased filter): the one resampling of
    every loader that resizes (``--data natural`` for an ImageNet model, quilting's photos, image folders)."""
    from PIL import Image

    h, w = size
    return im if im.size == (w, h) else im.resize((w, h), Image.BICUBIC)


def is_cifar10_batches(path: PathLike) -> bool:
    """Whether ``path`` is an extracted ``cifar-10-batches-py`` folder (holding ``test_batch``)."""
    return (Path(path) / "test_batch").is_file()


def resolve_cifar10(name_or_path: PathLike, root: Optional[PathLike] = None) -> Path:
    """Map ``"test"`` / ``"train10k"`` (or ``"cifar10:test"``) to ``<root>/cifar10/<name>.npz``; pass paths through.

    When that ``.npz`` is missing but ``<root>/cifar-10-batches-py`` (or ``<root>/cifar10/cifar-10-batches-py``)
    exists, the matching batch file of that folder is returned instead (``test_batch``, ``data_batch_1``).
    """
    s = os.fspath(name_or_path)
    if s.startswith("cifar10:"):
        s = s.split(":", 1)[1]
    if os.sep not in s and "/" not in s and not s.endswith(".npz"):
        base = data_root(root)
        npz = base / "cifar10" / f"{s}.npz"
        if not npz.is_file() and s in BATCHES:
            for folder in (base / "cifar-10-batches-py", base / "cifar10" / "cifar-10-batches-py"):
                if is_cifar10_batches(folder):
                    return folder / BATCHES[s]
        return npz
    return Path(s).expanduser()


def _check_slice(start, limit) -> None:
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ValueError(f"start: expected an image index >= 0, got {start!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit: expected a number of images >= 1 (or None for all), got {limit!r}")


def check_images(xs: np.ndarray, where: str) -> None:
    """Raise ValueError unless ``xs`` holds 8-bit samples: uint8, or float in [0, 1] (finite)."""
    if xs.dtype == np.uint8:
        return
    if not np.issubdtype(xs.dtype, np.floating):
        raise ValueError(f"x in {where}: expected uint8 samples (0..255) or float in [0, 1], got dtype {xs.dtype}; "
                         f"convert it with x.astype(np.uint8) if it holds 0..255")
    if xs.size:
        lo, hi = float(np.min(xs)), float(np.max(xs))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"x in {where}: expected float values in [0, 1], got NaN or infinite values")
        if lo < 0 or hi > 1:
            hint = "; divide by 255 (or store uint8)" if hi > 1 else ""
            raise ValueError(f"x in {where}: expected float values in [0, 1], got {xs.dtype} values from {lo:g} to "
                             f"{hi:g}{hint}")


def check_labels(ys: np.ndarray, n: int, where: str, num_classes: Optional[int] = None) -> None:
    """Raise ValueError unless ``ys`` is ``(n,)`` integer class indices in [0, num_classes) (or >= 0)."""
    if ys.shape != (n,):
        raise ValueError(f"y in {where}: expected labels of shape ({n},), one per image, got {ys.shape}")
    if np.issubdtype(ys.dtype, np.floating) and n and bool(np.all(np.isfinite(ys))) and \
            bool(np.all(ys == np.round(ys))):
        pass  # whole numbers stored as float (np.zeros' default): exact as int64
    elif not np.issubdtype(ys.dtype, np.integer):
        bad = "" if not np.issubdtype(ys.dtype, np.floating) else " with fractional or non-finite values"
        raise ValueError(f"y in {where}: expected integer class indices, got dtype {ys.dtype}{bad}")
    if n:
        lo, hi = int(ys.min()), int(ys.max())
        want = ">= 0" if num_classes is None else f"in [0, {num_classes - 1}]"
        if lo < 0 or (num_classes is not None and hi >= num_classes):
            raise ValueError(f"y in {where}: expected class indices {want}, got values from {lo} to {hi}")


def load_cifar10_batch(path: PathLike, start: int = 0, limit: Optional[int] = None,
                       num_classes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images of one batch file of ``cifar-10-batches-py`` (or of the folder: its ``test_batch``); ``start``,
    ``limit`` and ``num_classes`` as in :func:`load_npz`.

    Returns:
        ``x`` ``(N, 3, 32, 32)`` float32 in [0, 1], ``y`` ``(N,)`` int64.
    """
    from .download import read_batch

    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "test_batch"
    if not p.is_file():
        raise FileNotFoundError(f"expected a CIFAR-10 batch file, got {str(p)!r} which does not exist")
    _check_slice(start, limit)
    xs, ys = read_batch(p.read_bytes(), str(p))
    if start >= xs.shape[0]:
        raise ValueError(f"start: expected an index below the {xs.shape[0]} images of {str(p)!r}, got {start}")
    end = None if limit is None else start + int(limit)
    xs, ys = xs[start:end], ys[start:end]
    check_labels(ys, xs.shape[0], repr(str(p)), num_classes)
    x = torch.from_numpy(np.ascontiguousarray(xs)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return x.contiguous(), torch.from_numpy(ys.copy()).to(torch.int64)


def load_npz(path: PathLike, root: Optional[PathLike] = None, start: int = 0,
             limit: Optional[int] = None, num_classes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Load a CIFAR-style ``.npz`` with ``x`` uint8 ``(N, H, W, 3)`` HWC and ``y`` int ``(N,)``.

    Args:
        path: a file path, or ``"test"`` / ``"train10k"`` resolved under ``root`` / ``$FDGPU_DATA`` /
            ``~/.cache/fdgpu/data`` + ``cifar10/``; an extracted ``cifar-10-batches-py`` folder (its test set) or
            one of its batch files is read too.
        start, limit: keep images ``start .. start + limit - 1`` (``limit=None``: all from ``start``); ``start``
            must be an index of the file, ``limit`` at least 1.
        num_classes: when given, labels must lie in ``[0, num_classes)`` (else only ``>= 0`` is checked).

    Returns:
        ``x`` ``(N, 3, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` int64.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable ``.npz`` (truncated, another format), lacks ``x`` or ``y``, or holds
            something else than 8-bit images (uint8, or float in [0, 1]) with integer labels; a bad ``start`` or
            ``limit``.

    Example (needs ``$FDGPU_DATA``):
        >>> x, y = load_npz("test", limit=8)  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        (torch.Size([8, 3, 32, 32]), torch.Size([8]))
    """
    import zipfile
    import zlib

    _check_slice(start, limit)
    p = resolve_cifar10(path, root)
    if p.is_dir() and is_cifar10_batches(p) or p.parent.name == "cifar-10-batches-py" and p.suffix != ".npz":
        return load_cifar10_batch(p, start, limit, num_classes)
    if not p.is_file():
        hint = (f"; `{GET_CIFAR10}" + (f" --root {p.parent.parent}`" if root is not None else "`") +
                " downloads it" if p.parent.name == "cifar10" and p.stem in BATCHES else "")
        raise FileNotFoundError(f"expected an .npz file with arrays x, y, got {str(p)!r} which does not exist{hint}")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        what = "a single .npy array" if magic == b"\x93NUM" else "not a zip archive"
        raise ValueError(f"expected an .npz archive with arrays x, y (as np.savez writes), got {str(p)!r} which is "
                         f"{what}")
    unreadable = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)
    try:
        f = np.load(p, allow_pickle=False)
    except unreadable as exc:
        raise ValueError(f"expected an .npz archive with arrays x, y, got {str(p)!r} which cannot be read "
                         f"({type(exc).__name__}: {exc}); is it truncated?") from None
    with f:
        if "x" not in f or "y" not in f:
            raise ValueError(f"expected arrays 'x' and 'y' in {str(p)!r}, got {sorted(f.keys())}")
        try:
            xs, ys = f["x"], f["y"]
        except unreadable as exc:
            raise ValueError(f"expected an .npz archive with arrays x, y, got {str(p)!r} whose arrays cannot be read "
                             f"({type(exc).__name__}: {exc}); is it truncated?") from None
    if xs.ndim != 4 or xs.shape[-1] not in (1, 3):
        raise ValueError(f"expected x of shape (N, H, W, 3) in {str(p)!r}, got {xs.shape}")
    if ys.shape != xs.shape[:1]:
        raise ValueError(f"y in {str(p)!r}: expected labels of shape ({xs.shape[0]},), one per image, got {ys.shape}")
    if start >= xs.shape[0]:
        raise ValueError(f"start: expected an index below the {xs.shape[0]} images of {str(p)!r}, got {start}")
    end = None if limit is None else start + int(limit)
    xs, ys = xs[start:end], ys[start:end]
    check_images(xs, repr(str(p)))
    check_labels(ys, xs.shape[0], repr(str(p)), num_classes)
    x = torch.from_numpy(np.ascontiguousarray(xs)).permute(0, 3, 1, 2).contiguous()
    x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    return x, torch.from_numpy(np.asarray(ys)).to(torch.int64)


def load_image_folder(path: PathLike, size: Optional[Tuple[int, int]] = None, labels_csv: Optional[PathLike] = None,
                      limit: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Load every image in a folder (sorted by name) as RGB.

    Args:
        path: the folder.
        size: ``(H, W)`` to resize to (bicubic, Pillow: :func:`resize`); needed when the images differ in size.
        labels_csv: optional CSV with columns ``ImageId`` (file stem) and ``TrueLabel`` (or a second column) for
            the labels, as in ``natural/images.csv``; without it labels are -1.
        limit: keep the first ``limit`` images.

    Returns:
        ``x`` ``(N, 3, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` int64, and the file names.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image files.
        ValueError: an image that cannot be read as 8-bit RGB or grayscale as viewers show it (corrupt, animated,
            16-bit, transparent, CMYK: see :func:`fdgpu.compress.read_image`; the EXIF orientation is applied), a
            malformed ``labels_csv``, images of different sizes without ``size``.
    """
    from PIL import Image

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a folder of images, got {str(folder)!r} which is not a directory")
    files = image_files(folder)[:limit]
    if not files:
        raise FileNotFoundError(f"expected image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}, got none")
    labels = {}
    if labels_csv is not None:
        import csv
        with open(labels_csv, newline="") as fh:
            for line, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    key = row.get("ImageId") or next(iter(row.values()))
                    val = row.get("TrueLabel") or list(row.values())[1]
                    labels[key] = int(val)
                except (IndexError, StopIteration, TypeError, ValueError):
                    raise ValueError(f"labels_csv: expected columns ImageId,TrueLabel with an integer label, got "
                                     f"{dict(row)} on line {line} of {str(labels_csv)!r}") from None
    from PIL import UnidentifiedImageError

    from .compress import read_image

    arrays = []
    for f in files:
        try:  # 8-bit RGB or gray as viewers show it; animated, 16-bit or transparent images are refused
            a = read_image(f)
        except (ValueError, OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{f}: expected a readable 8-bit image, got {type(exc).__name__}: {exc}") from None
        im = Image.fromarray(a).convert("RGB")
        if size is not None:
            im = resize(im, size)
        arrays.append(np.asarray(im))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"expected images of one size, got {sorted(shapes)[:3]}...; pass size=(H, W)")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    y = torch.tensor([labels.get(f.stem, -1) for f in files], dtype=torch.int64)
    return x.contiguous(), y, [f.name for f in files]

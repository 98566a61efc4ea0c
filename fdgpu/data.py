"""Data loaders for evaluation: CIFAR-10 ``.npz`` subsets and folders of images.

Paths always come from the caller; the fallbacks are the environment variable ``FDGPU_DATA``, which names a
folder laid out like the project's shared data (``cifar10/test.npz``, ``cifar10/train10k.npz``, ``natural/*.png``),
then ``~/.cache/fdgpu/data``, where ``fdgpu data cifar10`` puts CIFAR-10. An extracted ``cifar-10-batches-py``
folder (the official archive, as torchvision keeps it) is read directly too.

The one place fdgpu reads images from disk; ``fdgpu eval``, the defences, ``fdgpu bench`` and the models all call it.
Two views of the same images: the ``read_*`` functions and :func:`load_images` give the uint8 ``(N, H, W, C)`` arrays
as stored, the ``load_*`` functions the float32 ``(N, 3, H, W)`` tensors in [0, 1] (exact ``uint8 / 255``,
:func:`to_float`) that models take; labels are ``(N,)`` int64. Image files are read as viewers show them (EXIF
orientation applied), and what is not 8-bit RGB or grayscale (16-bit, transparent, animated, CMYK) is refused rather
than reduced; labels files have one parser (:func:`read_labels`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import torch

PathLike = Union[str, os.PathLike]
ENV_VAR = "FDGPU_DATA"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


GET_CIFAR10 = "fdgpu data cifar10"  # the command that downloads CIFAR-10 into the default data folder
BATCHES = {"test": "test_batch", "train10k": "data_batch_1"}  # npz name -> file of cifar-10-batches-py


@overload
def data_root(root: Optional[PathLike] = None, required: Literal[True] = True) -> Path: ...


@overload
def data_root(root: Optional[PathLike] = None, required: bool = True) -> Optional[Path]: ...


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
    return im if im.size == (w, h) else im.resize((w, h), Image.Resampling.BICUBIC)


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


def to_float(xs: np.ndarray) -> torch.Tensor:
    """The float view of images: uint8 (or float in [0, 1]) ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` in [0, 1]
    (exact ``uint8 / 255``), contiguous. Every float loader ends with it.

    >>> x = to_float(np.full((2, 4, 5, 3), 255, np.uint8))
    >>> x.shape, x.dtype, float(x.max())
    (torch.Size([2, 3, 4, 5]), torch.float32, 1.0)
    """
    x = torch.from_numpy(np.ascontiguousarray(xs)).permute(0, 3, 1, 2)
    x = x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    return x.contiguous()


def read_batch_file(path: PathLike, start: int = 0, limit: Optional[int] = None,
                    num_classes: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The uint8 view of one batch file of ``cifar-10-batches-py`` (or of the folder: its ``test_batch``): ``x``
    uint8 ``(N, 32, 32, 3)``, ``y`` int64 ``(N,)``; arguments as in :func:`load_npz`."""
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
    return np.ascontiguousarray(xs), ys.astype(np.int64)


def load_cifar10_batch(path: PathLike, start: int = 0, limit: Optional[int] = None,
                       num_classes: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images of one batch file of ``cifar-10-batches-py`` (or of the folder: its ``test_batch``); ``start``,
    ``limit`` and ``num_classes`` as in :func:`load_npz`.

    Returns:
        ``x`` ``(N, 3, 32, 32)`` float32 in [0, 1], ``y`` ``(N,)`` int64.
    """
    xs, ys = read_batch_file(path, start, limit, num_classes)
    return to_float(xs), torch.from_numpy(ys)


def read_npz(path: PathLike, root: Optional[PathLike] = None, start: int = 0, limit: Optional[int] = None,
             num_classes: Optional[int] = None, labels: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The arrays of a CIFAR-style ``.npz`` as stored, checked: ``x`` ``(N, H, W, C)`` (C = 1 or 3) uint8 or float in
    [0, 1], ``y`` int64 ``(N,)`` (``None`` with ``labels=False``, which neither needs nor reads ``y``).

    Arguments and errors as in :func:`load_npz`, which is this with the float view (:func:`to_float`).
    """
    import zipfile
    import zlib

    _check_slice(start, limit)
    p = resolve_cifar10(path, root)
    if p.is_dir() and is_cifar10_batches(p) or p.parent.name == "cifar-10-batches-py" and p.suffix != ".npz":
        xs_b, ys_b = read_batch_file(p, start, limit, num_classes)
        return xs_b, ys_b if labels else None
    want = "arrays x, y" if labels else "array x"
    if not p.is_file():
        hint = (f"; `{GET_CIFAR10}" + (f" --root {p.parent.parent}`" if root is not None else "`") +
                " downloads it" if p.parent.name == "cifar10" and p.stem in BATCHES else "")
        raise FileNotFoundError(f"expected an .npz file with {want}, got {str(p)!r} which does not exist{hint}")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        what = "a single .npy array" if magic == b"\x93NUM" else "not a zip archive"
        raise ValueError(f"expected an .npz archive with {want} (as np.savez writes), got {str(p)!r} which is {what}")
    unreadable = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)
    try:
        f = np.load(p, allow_pickle=False)
    except unreadable as exc:
        raise ValueError(f"expected an .npz archive with {want}, got {str(p)!r} which cannot be read "
                         f"({type(exc).__name__}: {exc}); is it truncated?") from None
    with f:
        names = ("x", "y") if labels else ("x",)
        if any(name not in f for name in names):
            raise ValueError(f"expected {' and '.join(repr(n) for n in names)} in {str(p)!r}, got "
                             f"{sorted(f.keys())}")
        try:
            xs = f["x"]
            ys: Optional[np.ndarray] = f["y"] if labels else None
        except unreadable as exc:
            raise ValueError(f"expected an .npz archive with {want}, got {str(p)!r} whose arrays cannot be read "
                             f"({type(exc).__name__}: {exc}); is it truncated?") from None
    if xs.ndim != 4 or xs.shape[-1] not in (1, 3):
        raise ValueError(f"expected x of shape (N, H, W, 3) in {str(p)!r}, got {xs.shape}")
    if ys is not None and ys.shape != xs.shape[:1]:
        raise ValueError(f"y in {str(p)!r}: expected labels of shape ({xs.shape[0]},), one per image, got {ys.shape}")
    if start >= xs.shape[0]:
        raise ValueError(f"start: expected an index below the {xs.shape[0]} images of {str(p)!r}, got {start}")
    end = None if limit is None else start + int(limit)
    xs = xs[start:end]
    check_images(xs, repr(str(p)))
    if ys is None:
        return xs, None
    ys = ys[start:end]
    check_labels(ys, xs.shape[0], repr(str(p)), num_classes)
    return xs, np.asarray(ys).astype(np.int64)


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
        ``x`` ``(N, 3, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` int64. :func:`read_npz` gives the arrays as stored.

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
    xs, ys = read_npz(path, root, start, limit, num_classes)
    return to_float(xs), torch.from_numpy(ys)


# ------------------------------------------------------------------------------------------------ folders of images
LABEL_COLUMNS = ("ImageId", "TrueLabel")  # the columns of a labels file (the NIPS 2017 adversarial-competition CSV)


def read_labels(path: PathLike) -> Dict[str, int]:
    """The labels file of an image folder: a CSV whose header names the columns ``ImageId`` (a file's name without
    its suffix) and ``TrueLabel`` (an integer; other columns are ignored) -> ``{ImageId: TrueLabel}``.

    The one parser of labels files. Strict: a header without both columns (a file without a header would lose its
    first row to it), an empty ``ImageId``, a label that is not an integer, or an ``ImageId`` given twice raises.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: as above; the message names the file and the line.
    """
    import csv

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"labels_csv: expected a CSV file with columns {','.join(LABEL_COLUMNS)}, got "
                                f"{str(p)!r} which does not exist")
    key, col = LABEL_COLUMNS
    labels: Dict[str, int] = {}
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or key not in reader.fieldnames or col not in reader.fieldnames:
            raise ValueError(f"labels_csv: expected a header row naming the columns {key},{col}, got "
                             f"{reader.fieldnames} in {str(p)!r}")
        for line, row in enumerate(reader, start=2):
            name, value = (row.get(key) or "").strip(), (row.get(col) or "").strip()
            try:
                label = int(value)
            except ValueError:
                label = None
            if not name or label is None:
                raise ValueError(f"labels_csv: expected columns {key},{col} with an integer label, got "
                                 f"{dict(row)} on line {line} of {str(p)!r}")
            if name in labels:
                raise ValueError(f"labels_csv: expected each {key} once, got {name!r} again on line {line} of "
                                 f"{str(p)!r}")
            labels[name] = label
    return labels


def image_range(folder: PathLike, start: int = 0, limit: Optional[int] = None) -> List[Path]:
    """The image files ``start .. start + limit - 1`` of :func:`image_files` (sorted by name).

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or holds no image files.
        ValueError: a bad ``start`` (at or past the number of images) or ``limit``.
    """
    _check_slice(start, limit)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"expected a folder of images, got {str(folder)!r} which is not a directory")
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"expected image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}, got none")
    if start >= len(files):
        raise ValueError(f"start: expected an index below the {len(files)} images of {str(folder)!r}, got {start}")
    return files[start:None if limit is None else start + int(limit)]


def read_images(files: Sequence[PathLike], size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The uint8 view of image files: ``(N, H, W, 3)`` RGB, each as viewers show it (:func:`fdgpu.compress.read_image`:
    the EXIF orientation applied; grayscale expanded to RGB), resized to ``size`` = (H, W) when given (:func:`resize`).

    Raises:
        ValueError: a file that cannot be read as 8-bit RGB or grayscale (corrupt, animated, 16-bit, transparent,
            CMYK; the message names the file), or images of different sizes without ``size``.
    """
    from PIL import Image, UnidentifiedImageError

    from .compress import read_image

    arrays = []
    for f in files:
        try:  # 8-bit RGB or gray as viewers show it; animated, 16-bit or transparent images are refused
            a = read_image(Path(f))
        except (ValueError, OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"{f}: expected a readable 8-bit image, got {type(exc).__name__}: {exc}") from None
        im = Image.fromarray(a).convert("RGB")
        if size is not None:
            im = resize(im, size)
        arrays.append(np.asarray(im))
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise ValueError(f"expected images of one size, got {len(shapes)} sizes ({shapes[:3]}...); pass size=(H, W) "
                         f"to resize them")
    if not arrays:
        raise ValueError("expected at least one image file, got none")
    return np.stack(arrays)


def resize_images(xs: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` images resized to ``size`` = (H, W) (:func:`resize`, each from its own 8 bits)."""
    from PIL import Image

    if xs.shape[1:3] == tuple(size):
        return xs
    return np.stack([np.asarray(resize(Image.fromarray(a), size)) for a in xs])


def load_images(folder: PathLike, start: int = 0, limit: Optional[int] = None,
                size: Optional[Tuple[int, int]] = None, labels_csv: Optional[PathLike] = None,
                labels_required: bool = False) -> Tuple[np.ndarray, np.ndarray, List[Path]]:
    """The uint8 view of a folder of images, with their labels: what every loader of photos reads.

    Args:
        folder, start, limit: the files of :func:`image_range`.
        size: ``(H, W)`` to resize to (:func:`read_images`).
        labels_csv: a labels file (:func:`read_labels`); every image kept must have a label in it.
        labels_required: raise when ``labels_csv`` is None (else the labels are -1).

    Returns:
        ``x`` uint8 ``(N, H, W, 3)``, ``y`` int64 ``(N,)`` (the file's ``TrueLabel`` as written), the files.
    """
    files = image_range(folder, start, limit)
    if labels_csv is None:
        if labels_required:
            raise FileNotFoundError(f"labels_csv: expected a labels file (columns {','.join(LABEL_COLUMNS)}) for "
                                    f"the images of {str(folder)!r}, got none; pass --labels-csv")
        y = np.full(len(files), -1, dtype=np.int64)
    else:
        labels = read_labels(labels_csv)
        missing = [f.name for f in files if f.stem not in labels]
        if missing:
            raise ValueError(f"labels_csv: expected a label for every image, got none for {len(missing)} of them "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}) in {str(labels_csv)!r}")
        y = np.array([labels[f.stem] for f in files], dtype=np.int64)
    return read_images(files, size), y, files


def load_image_folder(path: PathLike, size: Optional[Tuple[int, int]] = None, labels_csv: Optional[PathLike] = None,
                      limit: Optional[int] = None, start: int = 0) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Load the images of a folder (sorted by name) as RGB: the float view of :func:`load_images`.

    Args:
        path: the folder.
        size: ``(H, W)`` to resize to (bicubic, Pillow: :func:`resize`); needed when the images differ in size.
        labels_csv: optional CSV with columns ``ImageId`` (file stem) and ``TrueLabel`` (:func:`read_labels`), as in
            ``natural/images.csv``; every image needs a label in it. Without it labels are -1.
        limit, start: keep images ``start .. start + limit - 1``.

    Returns:
        ``x`` ``(N, 3, H, W)`` float32 in [0, 1], ``y`` ``(N,)`` int64, and the file names.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image files.
        ValueError: an image that cannot be read as 8-bit RGB or grayscale as viewers show it (corrupt, animated,
            16-bit, transparent, CMYK: see :func:`fdgpu.compress.read_image`; the EXIF orientation is applied), a
            malformed ``labels_csv`` or an image without a label in it, images of different sizes without ``size``.
    """
    xs, y, files = load_images(path, start, limit, size, labels_csv)
    return to_float(xs), torch.from_numpy(y), [f.name for f in files]

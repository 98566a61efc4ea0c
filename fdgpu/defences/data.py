"""Loading the clean images the baselines need (quilting's patch database), and a synthetic stand-in.

Paths always come from arguments or from the data folder of :func:`fdgpu.data.data_root` (``$FDGPU_DATA``, else
``~/.cache/fdgpu/data``: a folder laid out as ``cifar10/train10k.npz``, ``cifar10/test.npz`` and ``natural/*.png``);
nothing here knows where a checkout keeps its data. Images are returned as uint8 arrays (M, H, W, 3), HWC RGB.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def data_root(path: Optional[PathLike] = None) -> Optional[Path]:
    """The data folder, or ``None`` when there is none: :func:`fdgpu.data.data_root` with ``required=False`` (this
    name is kept for the callers of ``fdgpu.baselines.data.data_root``)."""
    from ..data import data_root as find

    return find(path, required=False)


def load_cifar(npz_path: PathLike, limit: Optional[int] = None) -> np.ndarray:
    """CIFAR-10 images from an ``.npz`` with key ``x`` (``y`` is not needed), or a ``cifar-10-batches-py`` batch:
    uint8 (M, H, W, 3), the uint8 view of :func:`fdgpu.data.read_npz`. ``limit``: keep the first M."""
    from ..data import read_npz

    path = Path(npz_path)
    if not path.exists():
        raise FileNotFoundError(f"expected a CIFAR-10 .npz file with key 'x', got {path} (not found). "
                                f"Pass its path, or set FDGPU_DATA to the folder holding cifar10/.")
    x, _ = read_npz(path, limit=limit, labels=False)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (M, H, W, 3) under key 'x' in {path}, got {x.dtype} {x.shape}.")
    return x


def load_natural(folder: PathLike, start: int = 0, stop: Optional[int] = 100,
                 size: Optional[int] = None) -> np.ndarray:
    """Photos ``start:stop`` of ``folder`` (sorted by file name): uint8 (M, H, W, 3), the uint8 view of
    :func:`fdgpu.data.load_images` (EXIF orientation applied, 8-bit only).

    Images 0-99 of the shared natural set are the ones meant for building databases; keep the rest for evaluation.
    ``size``: resize (bicubic) to size x size; otherwise all images must share one size. Fewer than ``stop - start``
    images are returned when the folder ends before ``stop``.
    """
    from ..data import load_images

    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, (int, np.integer)) or stop <= start):
        raise ValueError(f"stop: expected an index above start={start!r} (or None for all), got {stop!r}")
    x, _, _ = load_images(folder, start, None if stop is None else stop - start,
                          None if size is None else (size, size))
    return x


def synthetic_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images with a few sharp edges: uint8 (n, size, size, 3).

    A stand-in when no real data is given (tests, ``fdgpu bench`` without data): piecewise-smooth like photos, so
    quilting and TV behave plausibly, but results on them say nothing about real images.
    """
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    cells = max(2, size // 6)
    low = rng.random((n, cells, cells, 3), dtype=np.float32)
    img = zoom(low, (1, size / cells, size / cells, 1), order=1)[:, :size, :size]
    # a random half-plane edge per image, and mild texture
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    a, b, c = rng.normal(size=(3, n, 1, 1)).astype(np.float32)
    edge = ((a * yy + b * xx + c * 0.3) > 0).astype(np.float32)[..., None]
    img = 0.7 * img + 0.3 * edge * rng.random((n, 1, 1, 3), dtype=np.float32)
    img += 0.03 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)

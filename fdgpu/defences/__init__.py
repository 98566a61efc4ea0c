"""Input-transformation baselines of Guo et al. (ICLR 2018) as defences: image quilting and TV minimisation.

Both are non-differentiable (numpy, faiss, scikit-image inside) and run on CPU; their backward pass is the identity
(BPDA), so attackers reach them through BPDA/EOT. Input and output: (N, C, H, W) float in [0, 1], same shape, dtype
and device. Each holds a seeded random stream (deterministic for a seed, a new draw per call).

>>> import torch, fdgpu.defences as B
>>> tvm = B.make_defence("tvm", seed=0)
>>> tvm(torch.rand(1, 3, 32, 32)).shape
torch.Size([1, 3, 32, 32])

``make_defence("quilting", ...)`` needs clean images for its patch database: pass ``database=``, ``images=``, or
``data=`` (a CIFAR ``.npz`` or a folder of photos), or set ``FDGPU_DATA`` (then ``source="cifar"`` uses
``$FDGPU_DATA/cifar10/train10k.npz`` and ``source="natural"`` the photos 0-99 of ``$FDGPU_DATA/natural``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from torch import nn

from .quilting import PatchDatabase, Quilting, build_database, quilt
from .tvm import TVM, tvm

__all__ = ["make_defence", "database_from_data", "Quilting", "TVM", "PatchDatabase", "build_database", "quilt",
           "tvm", "DEFENCES"]

DEFENCES = ("quilting", "tvm")


def database_from_data(data=None, *, source: str = "cifar", n_patches: int = 100_000, seed: int = 0,
                       cache=None, index_kind: str = "flat", size: Optional[int] = None) -> PatchDatabase:
    """Build (or load from ``cache``) a quilting database from clean images on disk.

    ``data``: a CIFAR-style ``.npz`` (key ``x``, uint8 (M, H, W, 3)), a folder of photos (images 0-99 sorted by
    name are used), or a data root laid out as ``cifar10/train10k.npz`` + ``natural/``; ``None`` reads
    ``$FDGPU_DATA``. ``source``: "cifar" or "natural", which set to take from a data root. ``size``: resize the
    photos (bicubic) to ``size x size`` first, e.g. 224 to match an ImageNet model's input (photos only).
    """
    from .data import data_root, load_cifar, load_natural

    if cache is not None and os.path.exists(cache):
        return build_database(None, n_patches, seed=seed, cache=cache, index_kind=index_kind)
    if source not in ("cifar", "natural"):
        raise ValueError(f"database_from_data: expected source 'cifar' or 'natural', got {source!r}.")
    root = data_root(data)
    if root is None:
        raise FileNotFoundError("quilting needs clean images for its patch database: expected data= (a CIFAR .npz, a "
                                "folder of photos, or a data root), database= or images=, got none and FDGPU_DATA is "
                                "unset. Set FDGPU_DATA to a folder holding cifar10/train10k.npz and natural/.")
    root = Path(root)
    if root.is_file():
        images, label = load_cifar(root), str(root)
    elif (root / "cifar10").is_dir() or (root / "natural").is_dir():
        if source == "cifar":
            path = root / "cifar10" / "train10k.npz"
            images, label = load_cifar(path), str(path)
        else:
            images, label = load_natural(root / "natural", 0, 100, size=size), f"{root / 'natural'}[0:100]"
    else:
        images, label = load_natural(root, 0, 100, size=size), f"{root}[0:100]"
    if size is not None:
        label += f" resized to {size}x{size}"
    return build_database(images, n_patches, seed=seed, cache=cache, index_kind=index_kind, source=label)


def make_defence(name: str, **kwargs) -> nn.Module:
    """A baseline defence by name: "quilting" or "tvm". Returns an ``nn.Module`` (N, C, H, W) -> same.

    - ``"tvm"``: kwargs of :class:`TVM` (``keep_prob=0.5``, ``weight=0.03``, ``n_iter=10``, ``seed=0``).
    - ``"quilting"``: ``database=`` a :class:`PatchDatabase`, or ``images=`` (uint8 (M, H, W, 3)) to build one, or
      ``data=``/``source=``/``size=`` as in :func:`database_from_data`; ``n_patches=100_000``, ``cache=`` (a file
      path to reuse a built database), ``index_kind="flat"``; plus ``k=10``, ``overlap=2``, ``seed=0`` of
      :class:`Quilting`.
    """
    key = name.lower().strip()
    if key == "tvm":
        return TVM(**kwargs)
    if key == "quilting":
        database: Optional[PatchDatabase] = kwargs.pop("database", None)
        images = kwargs.pop("images", None)
        build = {k: kwargs.pop(k) for k in ("n_patches", "cache", "index_kind") if k in kwargs}
        size = kwargs.pop("size", None)
        data, source = kwargs.pop("data", None), kwargs.pop("source", "cifar")
        db_seed = kwargs.pop("db_seed", 0)
        if database is None:
            if images is not None:
                database = build_database(images, seed=db_seed, **build)
            else:
                database = database_from_data(data, source=source, seed=db_seed, size=size, **build)
        return Quilting(database, **kwargs)
    raise ValueError(f"make_defence: expected a name in {DEFENCES}, got {name!r}.")

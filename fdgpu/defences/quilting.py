"""Image quilting as an input-transformation defence (Guo et al., ICLR 2018), after Efros & Freeman (2001).

Pipeline, for an input (N, 3, H, W) in [0, 1]:

1. Cut the input into ``patch`` x ``patch`` patches on a grid of step ``patch - overlap`` (5 and 2 by default, as
   Guo et al.: neighbouring patches share 2 rows or columns). The image is first padded by edge replication so the
   grid covers it exactly, and the result is cropped back.
2. Project every patch (75 values) onto the database's PCA basis (64 dimensions) and find its ``k`` = 10 nearest
   database patches with faiss (exact ``IndexFlatL2`` by default; a GPU index when faiss has GPUs).
3. Replace each patch by one of its ``k`` neighbours chosen uniformly at random.
4. Stitch with minimum-error boundary cuts: in every overlap the squared difference (summed over colours) of the
   two patches is computed and a dynamic-programming path of least total error runs through it (moving at most
   one pixel sideways per step); pixels before the path come from the earlier patch, the path and after from the
   later one. Cuts are made separably: first vertical cuts between horizontal neighbours within each row of
   patches, then horizontal cuts (across the full width) between consecutive rows of patches. Each cut compares
   exactly the pixels that a raster-order Efros-Freeman quilt would have in place there, except at the 2 x 2
   corners shared by four patches. With overlap 2 the path through a 2-wide band is the per-line argmin.

The database is cut from clean images (:func:`build_database`): random ``patch`` x ``patch`` windows, stored as uint8,
so every output pixel is a pixel of some database patch. Guo et al. used 1,000,000 patches from ImageNet; here the
size is ``n_patches`` (default 100,000; ``fdgpu bench`` records the size it used and the build time).

Cost, measured on the project's 2-core AMD EPYC (shared, load average 2.5-4), exact flat index: building takes
~4 s for 100,000 patches from CIFAR train10k (2.8 s from 100 natural photos) and ~12 s for 1,000,000; loading a
cached 1,000,000-patch database ~0.9 s. Quilting is dominated by the faiss search, linear in database size:
~0.1 s per 32 x 32 image and ~8 s per 299 x 299 image (9,801 patches) with 100,000 patches; ~0.7 s per 32 x 32
image with 1,000,000 (extrapolated: ~70 s per 299 x 299 image at Guo et al.'s size on this CPU).

Examples:
    >>> import numpy as np, torch
    >>> from fdgpu.defences.data import synthetic_images
    >>> db = build_database(synthetic_images(20, 32), n_patches=2000, seed=0)
    >>> q = Quilting(db, seed=0)
    >>> q(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..attacks.bpda import BPDA
from ..registry import key_values, register_defence
from ._common import check_images, from_numpy_hwc, make_rng, options_build, to_numpy_hwc

PATCH = 5
OVERLAP = 2
PCA_DIMS = 64
K = 10


@dataclass
class PatchDatabase:
    """Clean patches and their PCA projection, searchable with faiss.

    ``patches``: uint8 (n, p, p, C); ``mean``: float32 (p*p*C,); ``components``: float32 (dims, p*p*C), rows are
    orthonormal principal directions (patch values are taken in [0, 1]). ``meta`` records how it was built.
    """
    patches: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    index_kind: str = "flat"
    nprobe: int = 16
    meta: dict = field(default_factory=dict)
    _index: object = field(default=None, repr=False)
    _gpu_resources: object = field(default=None, repr=False)

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[1])

    @property
    def channels(self) -> int:
        return int(self.patches.shape[3])

    def __len__(self) -> int:
        return int(self.patches.shape[0])

    def project(self, flat: np.ndarray) -> np.ndarray:
        """(m, p*p*C) float in [0, 1] -> (m, dims) float32 PCA coordinates."""
        return np.ascontiguousarray((flat.astype(np.float32, copy=False) - self.mean) @ self.components.T,
                                    dtype=np.float32)

    def index(self):
        """The faiss index over the projected database (built on first use, on GPU when faiss has one)."""
        if self._index is None:
            import faiss

            vecs = self.project(self.patches.reshape(len(self), -1).astype(np.float32) / 255.0)
            dims = vecs.shape[1]
            if self.index_kind == "flat":
                index = faiss.IndexFlatL2(dims)
            elif self.index_kind == "ivf":
                nlist = max(1, int(4 * math.sqrt(len(self))))
                index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dims), dims, nlist)
                train = vecs[np.random.default_rng(0).permutation(len(vecs))[: 64 * nlist]]
                index.train(train)
                index.nprobe = self.nprobe
            else:
                raise ValueError(f"index_kind: expected 'flat' or 'ivf', got {self.index_kind!r}.")
            if getattr(faiss, "get_num_gpus", lambda: 0)() > 0:  # faiss-gpu build with a visible GPU
                self._gpu_resources = faiss.StandardGpuResources()  # must outlive the index
                index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
            index.add(vecs)
            self._index = index
        return self._index

    def search(self, flat: np.ndarray, k: int) -> np.ndarray:
        """Indices (m, k) of the k nearest database patches (in PCA space) of each row of ``flat`` (m, p*p*C)."""
        _, idx = self.index().search(self.project(flat), k)
        return idx

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the database to ``path`` (an ``.npz``, whole or not at all: :func:`fdgpu.files.write_file`; the
        faiss index is rebuilt on load, which is fast)."""
        import json

        from ..files import write_file

        meta = np.array(json.dumps({**self.meta, "index_kind": self.index_kind, "nprobe": self.nprobe}))
        write_file(path, lambda fh: np.savez(fh, patches=self.patches, mean=self.mean, components=self.components,
                                             meta=meta))

    @staticmethod
    def load(path: Union[str, os.PathLike]) -> "PatchDatabase":
        """Read a database written by :meth:`save`."""
        import json

        with np.load(path) as d:
            meta = json.loads(str(d["meta"]))
            return PatchDatabase(d["patches"], d["mean"], d["components"], meta.pop("index_kind", "flat"),
                                 int(meta.pop("nprobe", 16)), meta)


def _as_uint8_hwc(images) -> np.ndarray:
    a = images.detach().cpu().permute(0, 2, 3, 1).numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(f"build_database: expected images (M, H, W, C) HWC with C in {{1, 3}} (uint8, or float in "
                         f"[0, 1]), got shape {a.shape}. Torch tensors (M, C, H, W) are accepted too.")
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"build_database: expected uint8 or float images, got dtype {a.dtype}.")
    if a.size and (a.min() < -1e-6 or a.max() > 1 + 1e-6):
        raise ValueError(f"build_database: expected float images in [0, 1], got [{a.min():.4g}, {a.max():.4g}].")
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


def build_database(images, n_patches: int = 100_000, *, patch: int = PATCH, dims: int = PCA_DIMS, seed: int = 0,
                   index_kind: str = "flat", nprobe: int = 16, pca_samples: int = 200_000,
                   cache: Optional[Union[str, os.PathLike]] = None, source: str = "") -> PatchDatabase:
    """Cut ``n_patches`` random ``patch`` x ``patch`` windows from clean ``images`` and fit a PCA to ``dims``.

    ``images``: uint8 (M, H, W, C) or float in [0, 1] (numpy HWC, or a torch tensor (M, C, H, W)), all of one size
    >= ``patch``. Windows are drawn uniformly (image, row, column) with a seeded generator, with replacement.
    ``cache``: a file path; if it exists the database is loaded from it (and checked against the arguments), else
    built and written there. Keep caches outside the repository.
    ``index_kind``: "flat" (exact search, as the reference) or "ivf" (faiss IVF, ``nprobe`` lists probed: faster,
    approximate). The PCA is fit on at most ``pca_samples`` of the patches.
    """
    if cache is not None and os.path.exists(cache):
        db = PatchDatabase.load(cache)
        if len(db) != n_patches or db.patch_size != patch or db.components.shape[0] != min(dims, db.mean.size):
            raise ValueError(f"build_database: cache {cache} holds {len(db)} patches of size {db.patch_size} with "
                             f"{db.components.shape[0]} PCA dims, expected {n_patches}, {patch}, {dims}. "
                             f"Delete the file or name another cache.")
        db.index_kind, db.nprobe = index_kind, nprobe
        return db
    t0 = time.perf_counter()
    imgs = _as_uint8_hwc(images)
    m, h, w, c = imgs.shape
    if m == 0 or h < patch or w < patch:
        raise ValueError(f"build_database: expected at least one image of size >= {patch}x{patch}, got {imgs.shape}.")
    if n_patches < 1:
        raise ValueError(f"build_database: expected n_patches >= 1, got {n_patches}.")
    rng = np.random.default_rng(seed)
    which = rng.integers(0, m, n_patches)
    ys = rng.integers(0, h - patch + 1, n_patches)
    xs = rng.integers(0, w - patch + 1, n_patches)
    d = np.arange(patch)
    patches = imgs[which[:, None, None], ys[:, None, None] + d[None, :, None], xs[:, None, None] + d[None, None, :]]
    flat = patches.reshape(n_patches, -1).astype(np.float32) / 255.0
    fit = flat[rng.permutation(n_patches)[:pca_samples]]
    mean = fit.mean(0)
    cov = np.cov(fit - mean, rowvar=False).reshape(flat.shape[1], flat.shape[1])
    evals, evecs = np.linalg.eigh(cov.astype(np.float64))
    order = np.argsort(evals)[::-1][: min(dims, flat.shape[1])]
    components = np.ascontiguousarray(evecs[:, order].T, dtype=np.float32)
    db = PatchDatabase(np.ascontiguousarray(patches), mean.astype(np.float32), components, index_kind, nprobe,
                       {"source": source, "n_images": int(m), "image_size": [int(h), int(w)], "seed": int(seed),
                        "explained_variance": float(evals[order].sum() / max(evals.sum(), 1e-12))})
    db.index()  # build now so that build time includes it
    db.meta["build_seconds"] = round(time.perf_counter() - t0, 3)
    if cache is not None:
        db.save(cache)
    return db


def _min_cut(err: np.ndarray) -> np.ndarray:
    """Minimum-error boundary through bands of errors ``err`` (..., L, O): for each of the L lines, the position
    in [0, O) of the path, which moves at most one position per line. Returns int (..., L)."""
    L, O = err.shape[-2:]
    cost = err.astype(np.float64).copy()
    big = np.inf
    for i in range(1, L):
        prev = cost[..., i - 1, :]
        left = np.concatenate([np.full(prev.shape[:-1] + (1,), big), prev[..., :-1]], -1)
        right = np.concatenate([prev[..., 1:], np.full(prev.shape[:-1] + (1,), big)], -1)
        cost[..., i, :] += np.minimum(np.minimum(left, prev), right)
    path = np.empty(err.shape[:-1], dtype=np.int64)
    path[..., L - 1] = np.argmin(cost[..., L - 1, :], -1)
    cols = np.arange(O)
    for i in range(L - 2, -1, -1):
        nxt = path[..., i + 1][..., None]
        row = np.where(np.abs(cols - nxt) <= 1, cost[..., i, :], big)
        path[..., i] = np.argmin(row, -1)
    return path


def quilt(x: np.ndarray, db: PatchDatabase, *, k: int = K, overlap: int = OVERLAP,
          rng: Optional[np.random.Generator] = None, return_choice: bool = False):
    """Quilt images ``x`` float32 (N, H, W, C) in [0, 1] from database ``db``; returns the same shape in [0, 1].

    ``return_choice``: also return the chosen database indices (N, ny, nx) and the padded size (Hp, Wp); patch
    (i, j) covers rows i*s .. i*s+p-1 and columns j*s .. j*s+p-1 of the padded image, s = p - overlap.
    """
    rng = make_rng(rng)
    n, h, w, c = x.shape
    p = db.patch_size
    s = p - overlap
    if not 0 <= overlap < p or s < overlap:
        raise ValueError(f"quilt: expected 0 <= overlap <= patch/2, got overlap {overlap} for patch {p}.")
    if c != db.channels:
        raise ValueError(f"quilt: expected {db.channels} channels as in the database, got {c}.")
    if not 1 <= k <= len(db):
        raise ValueError(f"quilt: expected 1 <= k <= database size {len(db)}, got k={k}.")
    hp = p + s * max(0, -(-(h - p) // s))
    wp = p + s * max(0, -(-(w - p) // s))
    ny, nx = (hp - p) // s + 1, (wp - p) // s + 1
    if n == 0:
        out = x.copy()
        return (out, np.zeros((0, ny, nx), np.int64), (hp, wp)) if return_choice else out
    xp = np.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(xp, (p, p), axis=(1, 2))[:, ::s, ::s]  # [N, ny, nx, C, p, p]
    queries = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(-1, p * p * c)
    nn_idx = db.search(queries, k)                                                    # [N*ny*nx, k]
    pick = rng.integers(0, k, nn_idx.shape[0])
    choice = nn_idx[np.arange(nn_idx.shape[0]), pick].reshape(n, ny, nx)
    P = db.patches[choice].astype(np.float32) / 255.0                                 # [N, ny, nx, p, p, C]

    # rows of patches: strips (N, ny, p, Wp, C), vertical cuts between horizontal neighbours
    strip = np.empty((n, ny, p, wp, c), np.float32)
    for j in range(nx):
        strip[:, :, :, j * s:j * s + p] = P[:, :, j]
    if overlap and nx > 1:
        old = P[:, :, :-1, :, s:, :]                                                  # [N, ny, nx-1, p, o, C]
        new = P[:, :, 1:, :, :overlap, :]
        cut = _min_cut(((old - new) ** 2).sum(-1))                                    # [N, ny, nx-1, p]
        take_new = np.arange(overlap) >= cut[..., None]                               # [N, ny, nx-1, p, o]
        band = np.where(take_new[..., None], new, old)
        for j in range(nx - 1):
            strip[:, :, :, (j + 1) * s:(j + 1) * s + overlap] = band[:, :, j]
    # stack the strips: horizontal cuts across the full width between consecutive rows of patches
    out = np.empty((n, hp, wp, c), np.float32)
    for i in range(ny):
        out[:, i * s:i * s + p] = strip[:, i]
    if overlap and ny > 1:
        old = strip[:, :-1, s:]                                                       # [N, ny-1, o, Wp, C]
        new = strip[:, 1:, :overlap]
        cut = _min_cut(((old - new) ** 2).sum(-1).swapaxes(-1, -2))                   # [N, ny-1, Wp]
        take_new = (np.arange(overlap)[:, None] >= cut[..., None, :])                 # [N, ny-1, o, Wp]
        band = np.where(take_new[..., None], new, old)
        for i in range(ny - 1):
            out[:, (i + 1) * s:(i + 1) * s + overlap] = band[:, i]
    out = out[:, :h, :w]
    return (out, choice, (hp, wp)) if return_choice else out


class Quilting(nn.Module):
    """Image-quilting defence: (N, 3, H, W) float in [0, 1] -> same shape, dtype and device.

    Forward runs :func:`quilt` on CPU (numpy + faiss); backward is the identity (BPDA), so attackers reach it through
    BPDA/EOT. Randomness (the choice among the ``k`` neighbours) comes from a numpy generator seeded with ``seed``:
    two modules with the same seed produce the same sequence of outputs; successive calls differ. ``forward(x,
    seed=s)`` uses a fresh generator seeded with ``s`` for that call only.

    >>> from fdgpu.defences.data import synthetic_images
    >>> q = Quilting(build_database(synthetic_images(8, 32), n_patches=1000), seed=0)
    >>> x = torch.rand(1, 3, 32, 32, requires_grad=True)
    >>> q(x).sum().backward(); bool((x.grad == 1).all())
    True
    """

    def __init__(self, database: PatchDatabase, *, k: int = K, overlap: int = OVERLAP, seed: Optional[int] = 0):
        super().__init__()
        if not isinstance(database, PatchDatabase):
            raise TypeError(f"Quilting: expected a PatchDatabase (see build_database), got {type(database).__name__}.")
        self.database, self.k, self.overlap = database, int(k), int(overlap)
        if not 1 <= self.k <= len(database):
            raise ValueError(f"Quilting: expected 1 <= k <= database size {len(database)}, got k={k}.")
        self.reseed(seed)

    def reseed(self, seed: Optional[int]) -> None:
        """Restart the random stream from ``seed``."""
        self._rng = make_rng(seed)

    def forward(self, x: torch.Tensor, seed: Optional[int] = None) -> torch.Tensor:
        check_images(x, "Quilting", channels=self.database.channels)
        rng = self._rng if seed is None else make_rng(seed)

        def fn(t: torch.Tensor) -> torch.Tensor:
            return from_numpy_hwc(quilt(to_numpy_hwc(t), self.database, k=self.k, overlap=self.overlap, rng=rng), t)

        return BPDA(fn)(x)

    def extra_repr(self) -> str:
        return f"database={len(self.database)} patches, k={self.k}, overlap={self.overlap}"


def database_from_data(data=None, *, source: str = "cifar", n_patches: int = 100_000, seed: int = 0,
                       cache=None, index_kind: str = "flat", size: Optional[int] = None) -> PatchDatabase:
    """Build (or load from ``cache``) a quilting database from clean images on disk.

    ``data``: a CIFAR-style ``.npz`` (key ``x``, uint8 (M, H, W, 3)), a folder of photos (images 0-99 sorted by
    name are used), or a data root laid out as ``cifar10/train10k.npz`` + ``natural/``; ``None``: the data root of
    :func:`fdgpu.data.data_root` (``$FDGPU_DATA``, else ``~/.cache/fdgpu/data`` where ``fdgpu data cifar10`` puts
    CIFAR-10). ``source``: "cifar" or "natural", which set to take from a data root. ``size``: resize the photos
    (bicubic) to ``size x size`` first, e.g. 224 to match an ImageNet model's input (photos only).
    """
    from ..data import data_root
    from .data import load_cifar, load_natural

    if cache is not None and os.path.exists(cache):
        return build_database(None, n_patches, seed=seed, cache=cache, index_kind=index_kind)
    if source not in ("cifar", "natural"):
        raise ValueError(f"database_from_data: expected source 'cifar' or 'natural', got {source!r}.")
    if data is not None:
        root = Path(data)
    else:
        try:
            root = data_root()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"quilting needs clean images for its patch database: expected data= (a CIFAR "
                                    f".npz, a folder of photos, or a data root), database= or images=, got none and "
                                    f"FDGPU_DATA is unset ({exc})") from None
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


def make_quilting(*, database: Optional[PatchDatabase] = None, images=None, data=None, source: str = "cifar",
                  size: Optional[int] = None, db_seed: int = 0, **kwargs) -> Quilting:
    """A :class:`Quilting` defence with its database: ``database=``, or ``images=`` (uint8 (M, H, W, 3)) to build
    one, or ``data=``/``source=``/``size=`` as in :func:`database_from_data`; ``n_patches=100_000``, ``cache=``
    (a file path to reuse a built database), ``index_kind="flat"`` and ``db_seed=0`` for building it; the rest
    (``k=10``, ``overlap=2``, ``seed=0``) go to :class:`Quilting`."""
    build = {k: kwargs.pop(k) for k in ("n_patches", "cache", "index_kind") if k in kwargs}
    if database is None:
        if images is not None:
            database = build_database(images, seed=db_seed, **build)
        else:
            database = database_from_data(data, source=source, seed=db_seed, size=size, **build)
    return Quilting(database, **kwargs)


def _build(spec, ctx):
    kwargs = dict(spec.kwargs)
    if ctx.data_root is not None and not {"data", "database", "images"} & set(kwargs):
        kwargs["data"] = ctx.data_root  # fdgpu eval --data-root; a data= in the spec wins
    return options_build(spec, kwargs, make_quilting)


register_defence("quilting", form="quilting[:k=v,...]",
                 summary="image quilting (Guo et al. 2018; `fdgpu.defences.make_defence(\"quilting\", **kwargs)`), "
                         "e.g. `quilting:source=natural,size=224`; identity backward",
                 parse=key_values, build=_build, nargs=(0, 1), example="quilting:n_patches=200",
                 requires=(("faiss", "faiss-cpu"),), randomised=True, factory=make_quilting)

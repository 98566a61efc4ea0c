"""The images the speed comparisons time, and quilting's patch databases: real data when a data root is given
(``cifar10/{train10k,test}.npz``, ``natural/*.png``), synthetic images otherwise, labelled so in ``sources``."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional


def family(size: int) -> str:
    """The data family of an image size: CIFAR-10 up to 64 px, natural photos above."""
    return "cifar" if size <= 64 else "natural"


class BenchData:
    """Timed images and quilting databases per family; synthetic when no data is found (and labelled so).

    Args:
        data: data root; default ``$FDGPU_DATA``. Ignored with ``synthetic=True``.
        synthetic: time synthetic images even when data is there.
        seed: of the synthetic images and of the database's patch sampling.
        db_size, db_cache, index: quilting's database: patches, a folder to cache built databases in, and the faiss
            index kind ("flat" or "ivf").
    """

    def __init__(self, data=None, synthetic: bool = False, seed: int = 0, db_size: int = 100_000,
                 db_cache: Optional[str] = None, index: str = "flat"):
        from ..defences.data import data_root

        root = None if synthetic else data_root(data)
        self.root: Path = root if root is not None and root.is_dir() else Path()
        # (no data folder: synthetic images, and self.root is unused)
        self.synthetic = root is None or not root.is_dir()
        self.seed, self.db_size, self.db_cache, self.index_kind = seed, db_size, db_cache, index
        self.sources: dict = {}
        self._dbs: dict = {}

    @classmethod
    def from_args(cls, args) -> "BenchData":
        """From ``fdgpu bench``'s parsed arguments."""
        return cls(args.data, args.synthetic, args.seed, args.db_size, args.db_cache, args.index)

    def images(self, size: int, batch: int):
        """uint8 (batch, size, size, 3)."""
        from ..data import resize_images
        from ..defences.data import load_cifar, load_natural, synthetic_images

        fam = family(size)
        if self.synthetic:
            self.sources[f"timed_{fam}"] = "SYNTHETIC (fdgpu.defences.data.synthetic_images)"
            return synthetic_images(batch, size, seed=self.seed + 1)
        if fam == "cifar":
            path = self.root / "cifar10" / "test.npz"
            a = resize_images(load_cifar(path, batch), (size, size))
            self.sources["timed_cifar"] = f"{path}[0:{batch}]"
        else:
            folder = self.root / "natural"
            a = load_natural(folder, 100, 100 + batch, size=size)
            self.sources["timed_natural"] = f"{folder} (sorted) [100:{100 + batch}]"
        if len(a) < batch:
            raise ValueError(f"expected at least {batch} images for size {size}, got {len(a)}; pass smaller --batches.")
        return a

    def batch(self, size: int, batch: int):
        """:meth:`images` as the float ``(batch, 3, size, size)`` tensor in [0, 1] that providers take."""
        from ..data import to_float

        return to_float(self.images(size, batch))

    def database(self, size: int):
        """Quilting's patch database for images of ``size`` (built once per family, indexed)."""
        from ..defences import build_database
        from ..defences.data import load_cifar, load_natural, synthetic_images

        fam = "synthetic" if self.synthetic else family(size)
        if fam in self._dbs:
            return self._dbs[fam]
        cache = None
        if self.db_cache:
            Path(self.db_cache).mkdir(parents=True, exist_ok=True)
            cache = str(Path(self.db_cache) / f"quilting-{fam}-{self.db_size}-seed{self.seed}.npz")
        if fam == "synthetic":
            images, label = synthetic_images(200, 64, seed=self.seed), "SYNTHETIC (200 images 64x64)"
        elif fam == "cifar":
            path = self.root / "cifar10" / "train10k.npz"
            images, label = load_cifar(path), str(path)
        else:
            images, label = load_natural(self.root / "natural", 0, 100), f"{self.root / 'natural'} (sorted) [0:100]"
        cached = cache is not None and os.path.exists(cache)
        t0 = time.perf_counter()
        db = build_database(images, self.db_size, seed=self.seed, cache=cache, index_kind=self.index_kind,
                            source=label)
        db.index()
        self._dbs[fam] = db
        self.sources[f"quilting_db_{fam}"] = {"images": label, "patches": len(db), "index": self.index_kind,
                                              "build_seconds": db.meta.get("build_seconds"),
                                              "loaded_from_cache": cached,
                                              "load_seconds": round(time.perf_counter() - t0, 3) if cached else None}
        return db

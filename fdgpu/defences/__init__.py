"""Input-transformation defences: the JPEG family (JPEG, Feature Distillation, random-quality JPEG, JPEG noise, tables
from a file) and the baselines of Guo et al. (ICLR 2018), image quilting and TV minimisation.

Every defence registers itself with its spec form in :data:`fdgpu.registry.DEFENCES` (see the table in
docs/extending.md): :func:`fdgpu.eval.build_defence` builds any of them from its spec (``"jpeg:75"``), as
``fdgpu eval`` does. Quilting and TVM are non-differentiable (numpy, faiss, scikit-image inside) and run on CPU;
their backward pass is the identity (:class:`fdgpu.attacks.BPDA`), so attackers reach them through BPDA/EOT. Input
and output: (N, C, H, W) float in [0, 1], same shape, dtype and device. Randomised defences hold a seeded random
stream (deterministic for a seed, a new draw per call) and offer ``reseed(seed)``.

Examples:
    >>> import torch, fdgpu.defences as D
    >>> tvm = D.make_defence("tvm", seed=0)
    >>> tvm(torch.rand(1, 3, 32, 32)).shape
    torch.Size([1, 3, 32, 32])

``make_defence("quilting", ...)`` needs clean images for its patch database: pass ``database=``, ``images=``, or
``data=`` (a CIFAR ``.npz`` or a folder of photos), or set ``FDGPU_DATA`` (then ``source="cifar"`` uses
``$FDGPU_DATA/cifar10/train10k.npz`` and ``source="natural"`` the photos 0-99 of ``$FDGPU_DATA/natural``).

``fdgpu.baselines`` is this package's former name and stays importable.
"""
from __future__ import annotations

from torch import nn

from ..registry import DEFENCES as REGISTRY
from .jpeg import JPGNoise, RandomQualityJPEG, load_tables
from .quilting import PatchDatabase, Quilting, build_database, database_from_data, make_quilting, quilt
from .tvm import TVM, tvm

__all__ = ["make_defence", "database_from_data", "make_quilting", "Quilting", "TVM",
           "PatchDatabase", "build_database", "quilt", "tvm", "RandomQualityJPEG", "JPGNoise", "load_tables",
           "DEFENCES"]

#: the defences :func:`make_defence` builds from keyword options (those registered with a ``factory``)
DEFENCES = tuple(kind for kind, d in REGISTRY.items() if d.factory is not None)


def make_defence(name: str, **kwargs) -> nn.Module:
    """A baseline defence by name, from keyword options: "quilting" or "tvm". Returns an ``nn.Module``
    (N, C, H, W) -> same.

    - ``"tvm"``: kwargs of :class:`TVM` (``keep_prob=0.5``, ``weight=0.03``, ``n_iter=10``, ``seed=0``).
    - ``"quilting"``: kwargs of :func:`make_quilting`: ``database=`` a :class:`PatchDatabase`, or ``images=``
      (uint8 (M, H, W, 3)) to build one, or ``data=``/``source=``/``size=`` as in :func:`database_from_data`;
      ``n_patches=100_000``, ``cache=`` (a file path to reuse a built database), ``index_kind="flat"``; plus ``k=10``,
      ``overlap=2``, ``seed=0`` of :class:`Quilting`.
    """
    key = name.lower().strip()
    entry = REGISTRY.get(key)
    if entry is None or entry.factory is None:
        raise ValueError(f"make_defence: expected a name in {DEFENCES}, got {name!r}.")
    return entry.factory(**kwargs)

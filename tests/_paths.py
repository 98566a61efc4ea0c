"""Where the tests find real data and weights, and the user's caches they keep using.

Captured once, when this module is first imported (by ``tests/conftest.py``, before any test runs and before each
test's isolated HOME is in place), so the places a user's own commands put things are still searched:

- data: ``$FDGPU_DATA``, then ``../shared/data`` beside the repository, then ``~/.cache/fdgpu/data`` (where
  ``fdgpu data cifar10`` puts CIFAR-10);
- weights: ``$FDGPU_MODELS``, then ``../shared/models``, then ``~/.cache/fdgpu/models`` (``fdgpu models fetch``).

A test that needs a file asks for it by its path under such a root (:func:`data_file`, :func:`model_file`) and
skips, naming every place searched, when none has it. Nothing here decides results: the tests themselves run with
an empty HOME and no ``FDGPU_DATA`` / ``FDGPU_MODELS`` (the ``isolated_home`` fixture of conftest.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
_HOME = Path(os.path.expanduser("~"))
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or _HOME / ".cache")


def _roots(env: str, shared: str, cached: str) -> List[Path]:
    found = []
    for p in ([os.environ[env]] if os.environ.get(env) else []) + [REPO.parent / "shared" / shared,
                                                                   _HOME / ".cache" / "fdgpu" / cached]:
        p = Path(p).expanduser()
        if p not in found:
            found.append(p)
    return found


DATA_ROOTS = _roots("FDGPU_DATA", "data", "data")
MODEL_ROOTS = _roots("FDGPU_MODELS", "models", "models")

# Caches every test shares (one per session, not per test): the compiled C library (rebuilt per test otherwise),
# Triton's cache, matplotlib's font list. They hold no data a result depends on.
SESSION_ENV: Dict[str, str] = {
    "FDGPU_CACHE": os.environ.get("FDGPU_CACHE") or str(_CACHE / "fdgpu"),
    # a source checkout whose C library was not built in place (or is stale: fused.c edited since) compiles it on
    # first use into FDGPU_CACHE, so the tests always run the library of the source they test
    "FDGPU_BUILD": os.environ.get("FDGPU_BUILD", "1"),
    "TRITON_HOME": os.environ.get("TRITON_HOME") or str(_HOME),
    "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or str(_CACHE / "matplotlib"),
}
if os.environ.get("PYTHONUSERBASE"):
    SESSION_ENV["PYTHONUSERBASE"] = os.environ["PYTHONUSERBASE"]
else:
    import site

    SESSION_ENV["PYTHONUSERBASE"] = site.getuserbase()


def data_root_with(rel: str) -> Optional[Path]:
    """The first data root that holds ``rel`` (e.g. ``"natural/images.csv"``), or None."""
    return next((root for root in DATA_ROOTS if (root / rel).exists()), None)


def data_file(rel: str) -> Optional[Path]:
    """``root / rel`` for the first data root that holds ``rel`` (e.g. ``"cifar10/test.npz"``), or None."""
    root = data_root_with(rel)
    return None if root is None else root / rel


def model_file(rel: str) -> Optional[Path]:
    """``root / rel`` for the first weights root that holds ``rel`` (e.g. ``"resnet20-cifar10.pt"``), or None."""
    return next((root / rel for root in MODEL_ROOTS if (root / rel).exists()), None)


def missing(rel: str, roots: List[Path], how: str) -> str:
    """A skip reason: ``rel`` in none of ``roots``, and how to get it."""
    return f"{rel} not found under {', '.join(str(r) for r in roots)}; {how}"


def data_missing(rel: str) -> str:
    return missing(rel, DATA_ROOTS, "set FDGPU_DATA to a folder holding it (`fdgpu data cifar10` gets cifar10/)")


def model_missing(rel: str) -> str:
    return missing(rel, MODEL_ROOTS, "set FDGPU_MODELS to a folder holding it (`fdgpu models fetch` gets them)")

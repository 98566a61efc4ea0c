"""Shared test fixtures. Triton's interpreter must be chosen before triton is first imported, so it is set here,
at collection time, when no CUDA device is present (the kernels then run on the CPU)."""
import os

try:
    import torch
    _has_cuda = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from . import _source_checkout  # noqa: E402,F401  (fdgpu.kernels from a checkout without pip install)

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir():
    """The data folder: $FDGPU_DATA, else ../shared/data beside the repository (present on the project's machines,
    absent on a user's fresh clone). Returns None when neither exists."""
    env = os.environ.get("FDGPU_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def data_dir():
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared data not found: set FDGPU_DATA to a folder with cifar10/ and natural/ "
                    "(the project's ../shared/data; `fdgpu data cifar10 --root DIR` gets cifar10/)")
    return d


@pytest.fixture(scope="session")
def natural_images(data_dir):
    """Natural photos 0..49 (sorted by name) as a list of uint8 HWC arrays; the tuning split of ../shared."""
    np = pytest.importorskip("numpy")
    Image = pytest.importorskip("PIL.Image")
    files = sorted((data_dir / "natural").glob("*.png"))[:50]
    if len(files) < 50:
        pytest.skip(f"expected >= 50 natural images in {data_dir / 'natural'}, found {len(files)}")
    return [np.asarray(Image.open(f).convert("RGB")).copy() for f in files]

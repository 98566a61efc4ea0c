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
from ._paths import DATA_ROOTS, SESSION_ENV, data_root_with  # noqa: E402  (captured before any test's isolation)

# from collection on (test modules may load the C library when they are imported), not only inside each test
os.environ.setdefault("FDGPU_BUILD", SESSION_ENV["FDGPU_BUILD"])

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test runs with an empty HOME and XDG folders of its own and without ``FDGPU_DATA`` / ``FDGPU_MODELS``:
    what a user's ``fdgpu data`` or ``fdgpu models fetch`` put under ``~/.cache/fdgpu`` cannot change a result.
    The caches that hold no data (the compiled C library, Triton's, matplotlib's) stay one per session
    (:data:`tests._paths.SESSION_ENV`); tests that need real data find it through :mod:`tests._paths`."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
        monkeypatch.setenv(var, str(home / sub))
    for var in ("FDGPU_DATA", "FDGPU_MODELS"):
        monkeypatch.delenv(var, raising=False)
    for var, value in SESSION_ENV.items():
        monkeypatch.setenv(var, value)
    return home


def shared_data_dir():
    """The first data root holding ``natural/`` (the photos only the project's shared data has): ``$FDGPU_DATA``,
    ``../shared/data`` or ``~/.cache/fdgpu/data`` as they were when the session started. None when none has it."""
    return data_root_with("natural")


@pytest.fixture(scope="session")
def data_dir():
    d = shared_data_dir()
    if d is None:
        pytest.skip(f"natural photos not found under {', '.join(str(r) for r in DATA_ROOTS)}: set FDGPU_DATA to a "
                    f"folder with natural/ (the project's ../shared/data)")
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

"""The test suite is hermetic: data a user downloaded into ``~/.cache/fdgpu`` cannot change a test's result, and the
tests that need real data still find it there."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from fdgpu.data import data_root
from fdgpu.download import data_dir, models_dir

from . import _paths

REPO = Path(__file__).resolve().parents[1]


def test_each_test_has_an_empty_home_and_no_data_variables(isolated_home):
    assert Path.home() == isolated_home != _paths._HOME and not any(isolated_home.iterdir())
    assert "FDGPU_DATA" not in os.environ and "FDGPU_MODELS" not in os.environ
    assert data_root(required=False) is None  # no ~/.cache/fdgpu/data of the user's
    assert not data_dir().exists() and not models_dir().exists()
    assert os.environ["FDGPU_CACHE"] == _paths.SESSION_ENV["FDGPU_CACHE"]  # the compiled library: one per session


def test_suite_passes_after_fdgpu_data_and_finds_that_data(tmp_path):
    """A user who ran ``fdgpu data cifar10`` (``~/.cache/fdgpu/data/cifar10``, no ``FDGPU_DATA``, no ../shared):
    the tests that assume no data folder still pass, and the data-dependent ones use the downloaded files."""
    home = tmp_path / "home"
    cifar = home / ".cache" / "fdgpu" / "data" / "cifar10"
    cifar.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    for name in ("test.npz", "train10k.npz"):
        np.savez(cifar / name, x=x, y=np.arange(8, dtype=np.int64) % 10)
    env = {k: v for k, v in os.environ.items() if k not in ("FDGPU_DATA", "FDGPU_MODELS", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    (cifar / "only-here.npz").write_bytes(b"")  # a file no other data root has (../shared may exist)
    found = subprocess.run([sys.executable, "-c", "from tests._paths import data_file; "
                            "print(data_file('cifar10/only-here.npz'))"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=60)
    assert found.stdout.strip() == str(cifar / "only-here.npz"), found.stderr
    tests = ["tests/test_models.py::test_data_root_errors", "tests/test_baselines.py::test_bad_arguments",
             "tests/test_eval_data_root.py::test_build_defence_data_root_and_explicit_data_wins"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        "--rootdir", str(REPO), *tests], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "3 passed" in r.stdout

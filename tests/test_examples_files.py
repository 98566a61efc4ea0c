"""examples/save_adversarial_jpeg.py and examples/attack_stored_jpeg.py on a few CIFAR-10 images: the saved files
decode to exactly the layer's output, and the re-saved stored files to fdgpu.requantize's output with each file's
tables."""
import importlib.util
from pathlib import Path

import pytest

from ._paths import MODEL_ROOTS, data_file, data_missing, missing, model_file

pytest.importorskip("jpeglib", reason="jpeglib (the 'jpeg' extra) writes the files")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cifar(monkeypatch):
    test = data_file("cifar10/test.npz")
    weights = model_file("resnet20-cifar10.pt")
    if test is None:
        pytest.skip(data_missing("cifar10/test.npz"))
    if weights is None:
        pytest.skip(missing("resnet20-cifar10.pt", MODEL_ROOTS, "set FDGPU_MODELS (`fdgpu models fetch resnet20`)"))
    monkeypatch.setenv("FDGPU_DATA", str(test.parents[1]))
    monkeypatch.setenv("FDGPU_MODELS", str(weights.parent))


def test_save_adversarial_jpeg(cifar, tmp_path, capsys):
    _load("save_adversarial_jpeg").main(["--n", "6", "--steps", "2", "--quality", "60", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "files decode to the layer's output exactly:  True (0 values differ)" in out, out
    layer = float(out.split("layer's output (x_adv):")[1].split()[0])
    files = float(out.split("read by Pillow:")[1].split()[0])
    assert layer == files
    assert len(list(tmp_path.glob("*.jpg"))) == 6


def test_attack_stored_jpeg(cifar, tmp_path, capsys):
    _load("attack_stored_jpeg").main(["--n", "5", "--steps", "2", "--quality", "80", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.count("(files decode to fdgpu.requantize's output: True)") == 2, out
    for name in ("through-resave", "pixels-only", "clean-resaved", "stored"):
        assert len(list((tmp_path / name).glob("*.jpg"))) == 5

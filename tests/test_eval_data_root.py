"""``fdgpu eval --data-root`` reaches every defence that reads clean images from disk (quilting's patch database),
with ``$FDGPU_DATA`` unset. Synthetic data in a temporary data root: no ../shared needed."""
import json

import numpy as np
import pytest
import torch

from fdgpu.baselines import make_defence
from fdgpu.baselines.data import synthetic_images
from fdgpu.cli import main
from fdgpu.eval import build_defence
from fdgpu.models import cifar_resnet


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "cifar10").mkdir(parents=True)
    imgs = synthetic_images(8, 32, seed=3)
    np.savez(r / "cifar10" / "train10k.npz", x=imgs, y=np.zeros(8, np.int64))
    np.savez(r / "cifar10" / "test.npz", x=imgs[:4], y=np.arange(4, dtype=np.int64))
    torch.manual_seed(0)
    torch.save(cifar_resnet(20).state_dict(), tmp_path / "r20.pt")
    return r


def test_cli_data_root_reaches_quilting_database(root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    out = tmp_path / "q.json"
    rc = main(["eval", "--data-root", str(root), "--weights", str(tmp_path / "r20.pt"), "--defences",
               "quilting:n_patches=300", "--attacks", "none", "--limit", "2", "--quiet", "--no-plot",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["results"]
    assert [r["defence"] for r in rows] == ["quilting:n_patches=300"] and rows[0]["n"] == 2


def test_build_defence_data_root_and_explicit_data_wins(root, tmp_path, monkeypatch):
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="FDGPU_DATA is unset"):
        build_defence("quilting:n_patches=200")
    q = build_defence("quilting:n_patches=200", "bpda", data_root=str(root))
    assert str(root / "cifar10" / "train10k.npz") == q.database.meta["source"]
    # a data= in the spec is the user's explicit choice and is not overridden by the data root
    other = tmp_path / "other.npz"
    np.savez(other, x=synthetic_images(4, 32, seed=9), y=np.zeros(4, np.int64))
    q2 = build_defence(f"quilting:n_patches=200,data={other}", "bpda", data_root=str(root))
    assert q2.database.meta["source"] == str(other)


def test_natural_database_resized(tmp_path):
    from PIL import Image

    photos = tmp_path / "natural"
    photos.mkdir()
    for i, im in enumerate(synthetic_images(3, 40, seed=5)):
        Image.fromarray(im).save(photos / f"{i:02d}.png")
    q = make_defence("quilting", data=str(tmp_path), source="natural", size=24, n_patches=100)
    assert q.database.meta["source"].endswith("[0:100] resized to 24x24")
    assert q(torch.rand(1, 3, 24, 24)).shape == (1, 3, 24, 24)

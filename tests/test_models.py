"""fdgpu.models (CIFAR ResNets, Normalize, Ensemble) and fdgpu.data loaders."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from fdgpu.data import data_root, load_image_folder, load_npz
from fdgpu.models import CIFAR10_MEAN, CIFAR10_STD, DEPTHS, Ensemble, Normalize, cifar_resnet

from ._paths import data_file, data_missing, model_file, model_missing



def weights(depth):
    p = model_file(f"resnet{depth}-cifar10.pt")
    if p is None:
        pytest.skip(model_missing(f"resnet{depth}-cifar10.pt"))
    return p


def cifar_test():
    p = data_file("cifar10/test.npz")
    if p is None:
        pytest.skip(data_missing("cifar10/test.npz"))
    return p


@pytest.mark.parametrize("depth", DEPTHS, ids=[f"resnet{d}" for d in DEPTHS])
def test_resnet_shapes_and_block_count(depth):
    net = cifar_resnet(depth)
    assert not net.training
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    assert len(net.layer1) == len(net.layer2) == len(net.layer3) == (depth - 2) // 6


@pytest.mark.parametrize("depth", DEPTHS, ids=[f"resnet{d}" for d in DEPTHS])
def test_state_dict_keys_match_shared_weights(depth):
    state = torch.load(weights(depth), map_location="cpu", weights_only=True)
    ours = {k for k in cifar_resnet(depth).state_dict() if not k.endswith("num_batches_tracked")}
    assert ours == {k for k in state if not k.endswith("num_batches_tracked")}


def test_pretrained_resnet20_accuracy_on_first_200():
    x, y = load_npz(cifar_test(), limit=200)
    model = nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD), cifar_resnet(20, weights=weights(20)))
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.88  # 91.5 % on all 1000 (shared/models/README.md)


def test_option_a_shortcut_is_parameter_free():
    net = cifar_resnet(20)
    assert sum(p.numel() for p in net.parameters()) == 269722  # He et al. 2016, Table 6: "0.27M" for n = 3


def test_cifar_resnet_errors(tmp_path):
    with pytest.raises(ValueError, match="depth: expected 6n \\+ 2"):
        cifar_resnet(21)
    with pytest.raises(FileNotFoundError, match="which does not exist"):
        cifar_resnet(20, weights=tmp_path / "missing.pt")
    path = tmp_path / "r32.pt"
    torch.save(cifar_resnet(32).state_dict(), path)
    with pytest.raises(ValueError, match=r"^weights: expected a state_dict of a CIFAR ResNet-20, got .* which does "
                                         r"not fit: 72 unexpected \(e.g. 'layer1.3.conv1.weight'\); check"):
        cifar_resnet(20, weights=path)
    torch.save({"foo": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"fit: 97 of its 116 tensors missing \(e.g. 'conv1.weight'\), 1 unexpected "
                                         r"\(e.g. 'foo'\); check"):
        cifar_resnet(20, weights=path)
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match=r"expected a state_dict \(a dict of tensors\) .* holding a list"):
        cifar_resnet(20, weights=path)


def test_module_prefix_is_stripped(tmp_path):
    net = cifar_resnet(20)
    path = tmp_path / "dp.pt"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)
    loaded = cifar_resnet(20, weights=path)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), net(x))


def test_normalize_values_and_errors():
    norm = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    x = torch.rand(2, 3, 4, 4)
    expected = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    with pytest.raises(ValueError, match="expected \\(B, 3, H, W\\)"):
        norm(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="std: expected positive"):
        Normalize((0.5,), (0.0,))


def test_ensemble_averages_probabilities():
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.randn(5, 4)
    out = Ensemble([a, b])(x)
    expected = (torch.softmax(a(x), -1) + torch.softmax(b(x), -1)) / 2
    torch.testing.assert_close(out.exp(), expected)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


def test_load_npz_layout_and_slicing(tmp_path):
    xs = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", x=xs, y=np.arange(6))
    x, y = load_npz(tmp_path / "s.npz", start=2, limit=3)
    assert x.shape == (3, 3, 8, 8) and x.dtype == torch.float32 and y.tolist() == [2, 3, 4]
    torch.testing.assert_close(x[0, :, 1, 2] * 255, torch.from_numpy(xs[2, 1, 2]).float())


def test_load_npz_by_name_under_root(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "test.npz", x=np.zeros((2, 4, 4, 3), np.uint8), y=np.zeros(2))
    assert load_npz("test", root=tmp_path)[0].shape == (2, 3, 4, 4)
    monkeypatch.setenv("FDGPU_DATA", str(tmp_path))
    assert load_npz("cifar10:test")[1].dtype == torch.int64


def test_data_root_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="set FDGPU_DATA"):
        data_root()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")


def test_load_image_folder(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    for name in ("b", "a"):
        Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / "labels.csv").write_text("ImageId,TrueLabel\na,3\nb,7\n")
    x, y, names = load_image_folder(tmp_path, labels_csv=tmp_path / "labels.csv")
    assert x.shape == (2, 3, 5, 7) and names == ["a.png", "b.png"] and y.tolist() == [3, 7]
    assert load_image_folder(tmp_path, size=(8, 8))[0].shape == (2, 3, 8, 8)

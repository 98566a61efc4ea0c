"""``python -m fdgpu.eval.vaccinate``: the --out check comes before the training, and the weights are written whole."""
import numpy as np
import torch

from fdgpu.eval.vaccinate import main
from fdgpu.models import cifar_resnet


def test_vaccinate_cli_out(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), y=np.arange(4))
    torch.manual_seed(0)
    torch.save(cifar_resnet(20).state_dict(), tmp_path / "r20.pt")
    args = ["--data", str(tmp_path / "d.npz"), "--weights", str(tmp_path / "r20.pt"), "--quality", "50",
            "--epochs", "1", "--batch-size", "4"]
    assert main(args + ["--out", str(tmp_path)]) == 2  # a folder: refused before any training
    assert "--out: expected a file name for the fine-tuned state_dict" in capsys.readouterr().err
    out = tmp_path / "new" / "v50.pt"
    assert main(args + ["--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert set(state) == set(cifar_resnet(20).state_dict())
    assert sorted(p.name for p in out.parent.iterdir()) == ["v50.pt"]  # no temporary file left

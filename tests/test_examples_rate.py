"""examples/learn_tables.py's rate term and examples/bits_per_pixel.py's sizes."""
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import fdgpu

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learn_tables_rate_term_coarsens_tables():
    # a rate term alone (a classifier that ignores its input, no coarseness penalty) can only lower the bits:
    # the steps grow and the estimated bits per pixel fall from the first epoch to the last
    lt = _load("learn_tables")
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16)
    y = torch.zeros(16, dtype=torch.long)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    for p in net.parameters():
        p.requires_grad_(False)
        p.zero_()
    logs = []
    layer = lt.learn(net, x, y, x, epochs=3, batch=8, lr=1.0, lam=0.0, floor=40.0, backward="ste", seed=0,
                     rate=1.0, log=logs.append)
    bpp = [float(line.split("bpp ")[1].split(",")[0]) for line in logs]
    assert bpp[0] > 0 and bpp[-1] < bpp[0], logs
    luma, chroma = layer.tables()
    assert float(luma.detach().mean()) > float(fdgpu.tables.fd(1.0).mean())


def test_learn_tables_rejects_negative_rate(tmp_path):
    lt = _load("learn_tables")
    with pytest.raises(SystemExit):
        lt.main(["--out", str(tmp_path / "t.pt"), "--rate", "-1", "--weights", __file__])


def test_bits_per_pixel_equals_pillow_files():
    Image = pytest.importorskip("PIL.Image")
    bpp = _load("bits_per_pixel")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 24, 40, 3), dtype=np.uint8)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255

    def size(a, **kw):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", **kw)
        return len(buf.getvalue())

    want = np.mean([8 * size(a, quality=30) / (24 * 40) for a in imgs])
    assert bpp.bits_per_pixel(x, "jpeg:30") == pytest.approx(want, rel=0, abs=1e-12)
    t = [int(v) for v in fdgpu.tables.fd(2.0, variant="official").flatten()]
    want = np.mean([8 * sum(size(np.ascontiguousarray(a[..., c]), qtables=[t]) for c in range(3)) / (24 * 40)
                    for a in imgs])
    assert bpp.bits_per_pixel(x, "fd-official:2") == pytest.approx(want, rel=0, abs=1e-12)

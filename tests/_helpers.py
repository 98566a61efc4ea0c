"""Test helpers: Pillow oracles and a labelled comparison that reports max abs error and relative RMSE."""
from __future__ import annotations

import io

import numpy as np
import torch

from fdgpu.choices import PIL_SUBSAMPLING


def pillow_roundtrip(img: np.ndarray, quality=None, subsampling="4:2:0", qtables=None) -> np.ndarray:
    """Save ``img`` (uint8 HWC RGB or HW gray) as JPEG with Pillow/libjpeg-turbo and decode it again."""
    from PIL import Image

    buf = io.BytesIO()
    kw = {"subsampling": PIL_SUBSAMPLING[subsampling]} if img.ndim == 3 else {}
    if qtables is not None:
        kw["qtables"] = qtables
    else:
        kw["quality"] = quality
    Image.fromarray(img).save(buf, "JPEG", **kw)
    buf.seek(0)
    return np.asarray(Image.open(buf))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HWC (or HW) -> float (C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img)).float() / 255
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (C, H, W) on the 1/255 grid -> uint8 HWC (or HW for C = 1)."""
    a = (x.detach().double() * 255).round().clamp(0, 255).to(torch.uint8)
    return a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rel_rmse: float, max_abs: float = None):
    """Fail with a labelled report when the relative RMSE (or the max abs error) is above the tolerance, or on NaN."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN in result"
    err = (actual - expected)
    rmse = err.square().mean().sqrt().item()
    ref = expected.square().mean().sqrt().item()
    rel = rmse / ref if ref > 0 else rmse
    mx = err.abs().max().item() if err.numel() else 0.0
    msg = f"{name}: max abs err {mx:.3g}, rel RMSE {rel:.3g} (tol {rel_rmse:g})"
    assert rel <= rel_rmse, msg
    if max_abs is not None:
        assert mx <= max_abs, msg + f", max abs tol {max_abs:g}"

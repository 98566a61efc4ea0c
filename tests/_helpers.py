"""Test helpers: the Pillow oracle (fdgpu.pillow), uint8 <-> tensor conversions, PSNR and a labelled comparison
that reports max abs error, relative RMSE and the identical fraction."""
from __future__ import annotations

import numpy as np
import torch

from fdgpu.choices import PIL_SUBSAMPLING  # noqa: F401 (the tests' name for Pillow's subsampling codes)
from fdgpu.pillow import encode as pillow_encode  # noqa: F401
from fdgpu.pillow import roundtrip as pillow_roundtrip  # noqa: F401


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


def compare(name, actual, expected, rel_rmse=None, min_identical=None, max_abs=None):
    """Labelled comparison: reports max abs error, relative RMSE and the identical fraction; fails on NaN (and on
    each tolerance given). Returns the report."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN in result ({int(torch.isnan(actual).sum())} values: " \
                                          f"an output the kernel never wrote?)"
    err = (actual - expected).abs()
    mx = err.max().item() if err.numel() else 0.0
    ref_rms = expected.square().mean().sqrt().item()
    rel = err.square().mean().sqrt().item() / ref_rms if ref_rms > 0 else err.square().mean().sqrt().item()
    same = (err == 0).double().mean().item() if err.numel() else 1.0
    msg = f"{name}: max abs err {mx:.3g}, rel RMSE {rel:.3g}, identical {100 * same:.4f} %"
    if rel_rmse is not None:
        assert rel <= rel_rmse, msg + f" (rel RMSE tol {rel_rmse:g})"
    if min_identical is not None:
        assert same >= min_identical, msg + f" (identical tol {100 * min_identical:g} %)"
    if max_abs is not None:
        assert mx <= max_abs, msg + f" (max abs tol {max_abs:.3g})"
    return msg

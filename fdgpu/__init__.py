"""fdgpu: a differentiable JPEG / Feature-Distillation layer for PyTorch.

Examples:
    >>> import torch, fdgpu
    >>> x = torch.rand(2, 3, 32, 32)
    >>> fdgpu.jpeg(x, quality=75).shape
    torch.Size([2, 3, 32, 32])
"""
__version__ = "0.1.0"

from . import tables
from .choices import BACKWARDS, SUBSAMPLINGS
from .coefficients import Coefficients, decode, encode
from .functional import feature_distillation, jpeg, requantize
from .modules import JPEG, FDJpeg, Requantize
from .pixels import to_uint8
from .size import jpeg_size, rate

__all__ = ["__version__", "tables", "BACKWARDS", "SUBSAMPLINGS", "jpeg", "feature_distillation", "requantize",
           "JPEG", "FDJpeg", "Requantize", "Coefficients", "encode", "decode", "io",
           "to_uint8", "jpeg_size", "rate"]


def __getattr__(name):
    # fdgpu.io (JPEG files through jpeglib, an optional extra) is imported on first use
    if name == "io":
        import importlib
        return importlib.import_module(".io", __name__)
    raise AttributeError(f"module 'fdgpu' has no attribute {name!r}")

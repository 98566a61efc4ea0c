"""The layer's named choices, each listed once: backward modes, chroma subsamplings, backends and colour modes.

Everything that offers, checks, documents or compiles one of these derives from the lists here: the public
functions' argument checks (:mod:`fdgpu.functional`), the modules, the command-line choices, the chroma factors of
the reference pipeline, the kernel variants that ``fdgpu.kernels.aot`` compiles and the Pillow oracle's codes.
Adding a subsampling or a backward mode starts here. No torch import: cheap to read from command-line parsers.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

#: ``backward=`` of every layer: ``"exact"`` (autograd of the forward), ``"ste"`` (straight-through), ``"soft"``
#: (cubic rounding surrogate), ``"bpda"`` (identity). :mod:`fdgpu.autograd` defines each.
BACKWARDS = ("exact", "ste", "soft", "bpda")


class Subsampling(NamedTuple):
    """One chroma subsampling: its (horizontal, vertical) chroma factors and Pillow's ``subsampling=`` code."""
    factors: Tuple[int, int]
    pillow: int


#: ``subsampling=`` of every layer, name -> :class:`Subsampling`, in order of increasing subsampling. The default,
#: as Pillow's, is ``"4:2:0"``.
SUBSAMPLINGS = {
    "4:4:4": Subsampling((1, 1), 0),
    "4:2:2": Subsampling((2, 1), 1),
    "4:2:0": Subsampling((2, 2), 2),
}
#: name -> (horizontal, vertical) factor of the chroma planes (libjpeg's max_h_samp_factor / max_v_samp_factor)
FACTORS = {name: s.factors for name, s in SUBSAMPLINGS.items()}
#: name -> Pillow's ``Image.save(..., "JPEG", subsampling=code)``
PIL_SUBSAMPLING = {name: s.pillow for name, s in SUBSAMPLINGS.items()}

#: ``backend=``: ``"auto"`` (``"cpu"`` on CPU tensors and ``"triton"`` on CUDA tensors when available, else
#: ``"torch"``), ``"torch"`` (the reference, pure PyTorch), ``"cpu"`` (the C library), ``"triton"`` (the kernels).
#: :mod:`fdgpu.backends` holds them.
BACKENDS = ("auto", "torch", "cpu", "triton")
#: ``color=`` of :func:`fdgpu.requantize`: ``"ycbcr"`` (JPEG) or ``"rgb"`` (each RGB channel as a grayscale image)
COLORS = ("ycbcr", "rgb")

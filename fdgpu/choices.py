"""The layer's named choices, each listed once: backward modes, chroma subsamplings, backends and colour modes.

Everything that offers, checks, documents or compiles one of these derives from the lists here: the public
functions' argument checks (:mod:`fdgpu.functional`), the modules, the command-line choices, the chroma factors of
the reference pipeline, the kernel variants that ``fdgpu.kernels.aot`` compiles and the Pillow oracle's codes.
Adding a subsampling or a backward mode starts here. No torch import: cheap to read from command-line parsers.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Tuple


class Backward(NamedTuple):
    """One backward mode, read by every layer that offers, runs or compiles it: the functional API (what the
    forward saves), the custom op and its autograd formula (:mod:`fdgpu.ops`, :mod:`fdgpu.autograd`), the
    backends (the reference's adjoint, the C library, the kernels' launchers) and ``fdgpu.kernels.aot``.

    ``weight`` and ``table_factor`` are functions of the saved quotient ``z = c / Q`` of each coefficient and its
    rounding ``r`` (libjpeg's, halves away from zero), written with tensor methods and operators only: they are the
    definition that the torch reference (and so the ``cpu`` backend's reference ops) evaluates, in this order of
    operations; the C library and the Triton kernels hold their own copies of the ``ste``/``soft`` formulas."""
    kind: str                              # "autograd" (of the torch reference's forward), "identity" or "adjoint"
    table_grads: bool                      # whether tables (and a quality) get a gradient
    kernel: Optional[str]                  # the Triton kernels' MODE constexpr; None: no kernel (not an adjoint)
    weight: Optional[Callable] = None      # adjoint: d c'/d c of coefficient rounding, f(z, r); None: 1 (ste)
    table_factor: Optional[Callable] = None  # adjoint: d c'/d Q at fixed c, f(z, r)
    summary: str = ""

    def saves_state(self, table_grads: bool) -> bool:
        """Whether its backward needs the forward's quotients ``z``: for a rounding weight, or table gradients."""
        return self.kind == "adjoint" and (self.weight is not None or (table_grads and self.table_grads))


def _ste_factor(z, r):
    return (z - r).neg()  # LSQ's straight-through estimate (Esser et al. 2020): round(z) - z


def _soft_weight(z, r):
    return (z - r).square().mul(3.0)  # 3 (z - r)^2: the derivative of the surrogate Q (r + (z - r)^3)


def _soft_factor(z, r):
    d = z - r
    return r + d * d * (d - 3.0 * z)  # d/dQ of Q (r + d^3) at fixed c: r + d^3 - 3 d^2 z


#: ``backward=`` of every layer, name -> :class:`Backward`. :mod:`fdgpu.autograd` documents each.
BACKWARD_MODES = {
    "exact": Backward("autograd", True, None, summary="autograd of the forward as computed (zero almost everywhere)"),
    "ste": Backward("adjoint", True, "ste", None, _ste_factor,
                    summary="every rounding and clamp straight-through; LSQ table gradients"),
    "soft": Backward("adjoint", True, "soft", _soft_weight, _soft_factor,
                     summary="coefficient rounding as Shin & Song's cubic surrogate, the rest straight-through"),
    "bpda": Backward("identity", False, None, summary="the identity (Athalye et al. 2018); tables get no gradient"),
}
#: the names of :data:`BACKWARD_MODES`: ``"exact"``, ``"ste"`` (the default), ``"soft"``, ``"bpda"``
BACKWARDS = tuple(BACKWARD_MODES)


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

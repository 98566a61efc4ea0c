"""Pure-PyTorch reference of the JPEG pipeline, stage by stage (mirrored by the Triton kernels in ``fdgpu.kernels``).

Every stage works on sample values in the 0..255 scale, in float32 (or float64 for tests), on ``(N, C, H, W)``
planes. ``exact=True`` stages emulate libjpeg-turbo's integer arithmetic (their results are integers held in
floats, exact because every intermediate stays below 2**24); ``exact=False`` stages are the real-valued linear maps
that the backward modes differentiate.
"""
from .jpeg import backward, forward, linear_map

__all__ = ["forward", "backward", "linear_map"]

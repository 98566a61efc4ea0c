"""Pure-PyTorch reference of the JPEG pipeline, stage by stage (mirrored by the Triton kernels in ``fdgpu.kernels``).

Every stage works on sample values in the 0..255 scale, on ``(N, C, H, W)`` planes. The forward is libjpeg-turbo's
integer arithmetic bit for bit (colour conversion, down/upsampling, the accurate integer DCT ``jfdctint``, the
encoder's quantizer, the integer inverse DCT ``jidctint``): integers held in floats, exact because every
intermediate is an integer that the float type holds exactly (below 2**24 in float32 stages, below 2**31 in the
float64 DCT passes). ``exact=False`` stages and the orthonormal DCT are the real-valued linear maps that the
backward modes differentiate.
"""
from .jpeg import backward, forward, linear_map

__all__ = ["forward", "backward", "linear_map"]

"""The implementations of the JPEG layer: ``cpu`` (the C library, :mod:`fdgpu.backends.cpu`, built and loaded by
:mod:`fdgpu.backends._library` from ``csrc/fused.c``); the pure-PyTorch reference is :mod:`fdgpu.reference`, the
Triton kernels :mod:`fdgpu.kernels`."""

"""Triton kernels for fdgpu (installed as ``fdgpu.kernels``). Import requires triton."""

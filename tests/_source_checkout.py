"""Running the tests from a source checkout without ``pip install``: resolve ``fdgpu.kernels`` to the repository's
top-level ``kernels/`` folder, as setup.py's ``package_dir`` (and an editable install) does for installed copies.

Installed by ``tests/conftest.py`` (and ``benchmarks/conftest.py``) for pytest, and by the tests that start a
fresh interpreter (``import tests._source_checkout`` with the repository on ``PYTHONPATH``). Lazy (Triton is imported
only when ``fdgpu.kernels`` is), and inert where fdgpu is installed: the finder comes last on ``sys.meta_path``, so
an installed ``fdgpu.kernels`` always wins. The package itself carries no such hook.
"""
import importlib.abc
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INIT = os.path.join(ROOT, "kernels", "__init__.py")


class SourceKernelsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "fdgpu.kernels":
            return None
        return importlib.util.spec_from_file_location(name, _INIT, submodule_search_locations=[os.path.dirname(_INIT)])


def install() -> None:
    """Append the finder to ``sys.meta_path`` once (no-op outside a checkout with ``kernels/``)."""
    if os.path.isfile(_INIT) and not any(isinstance(f, SourceKernelsFinder) for f in sys.meta_path):
        sys.meta_path.append(SourceKernelsFinder())


install()

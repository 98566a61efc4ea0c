"""Build fdgpu: what pyproject.toml cannot say without code.

The metadata (name, version, dependencies, extras, scripts) is in pyproject.toml. Here:

- the packages, with the Triton kernels that live in the top-level ``kernels/`` folder of the repository installed
  as ``fdgpu.kernels`` (never as a top-level ``kernels`` module: that name belongs to another PyPI package);
- the C library of the ``cpu`` backend: ``fdgpu/backends/csrc/fused.c`` compiled once per instruction-set target of
  :mod:`fdgpu.backends._isa` into plain shared libraries ``fdgpu/backends/_fused_<target>.so`` (no Python or torch
  headers: loaded with ctypes, so one wheel serves every Python 3 and torch version: tagged ``py3-none-<platform>``),
  and ``_fused.json``, the record of what was built (each library's SHA-256 and the source's). The libraries are
  optional: without a compiler the build warns and the package installs without them (the ``cpu`` backend is then
  unavailable and ``backend="auto"`` runs the torch reference, with a warning).
"""
import hashlib
import json
import os
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
SOURCES = ["fdgpu/backends/csrc/fused.c", "fdgpu/backends/csrc/entropy.c"]  # one library
MANIFEST = "_fused.json"


def _isa():
    """fdgpu/backends/_isa.py, read as a file (importing fdgpu would import torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fdgpu_isa", HERE / "fdgpu" / "backends" / "_isa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def libraries():
    isa = _isa()
    if sys.platform == "win32":  # MSVC takes none of these flags; the cpu backend is for Linux and macOS
        return []
    # the platform the wheel is for, which a cross-compile (cibuildwheel's macOS arm64 on an x86-64 runner:
    # _PYTHON_HOST_PLATFORM) sets apart from the building machine; universal2 builds two architectures at once, so
    # only flags both take (the baseline)
    machine = sysconfig.get_platform().rsplit("-", 1)[-1]
    exts = []
    for target in isa.targets(machine):
        ext = Extension(f"fdgpu.backends._fused_{target.replace('-', '_')}", SOURCES,
                        extra_compile_args=list(isa.flags(target)) + ["-g0", "-fno-wrapv"], libraries=["m"],
                        optional=True)  # -g0, -fno-wrapv: undo the -g -fwrapv of Python's own CFLAGS
        ext.fdgpu_target = target
        exts.append(ext)
    return exts


class BuildLibraries(build_ext):
    """build_ext for plain shared libraries: no Python ABI tag in the name, no ``PyInit_`` symbol, one object folder
    per target (the same source is compiled with each target's flags), and the record ``_fused.json``."""

    def get_ext_filename(self, fullname):
        return os.path.join(*fullname.split(".")) + ".so"

    def get_export_symbols(self, ext):
        return ext.export_symbols

    def build_extension(self, ext):
        temp = self.build_temp
        self.build_temp = os.path.join(temp, ext.name.rsplit(".", 1)[-1])
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = temp

    def run(self):
        super().run()
        built, folder = {}, None
        for ext in self.extensions:
            path = Path(self.get_ext_fullpath(ext.name))
            folder = path.parent
            if path.is_file():
                built[ext.fdgpu_target] = {"file": path.name, "sha256": _sha256(path), "flags": ext.extra_compile_args}
        if folder is None:
            return
        # the sources' digest as fdgpu.backends._library.sources_sha256 computes it
        digest = hashlib.sha256("".join(_sha256(HERE / p) for p in SOURCES).encode()).hexdigest()
        record = {"source_sha256": digest, "libraries": built}
        if not built:
            print("fdgpu: WARNING: no C library was built (no working C compiler?); the cpu backend will be "
                  "unavailable and the torch reference will run instead", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).write_text(json.dumps(record, indent=1) + "\n")

    def get_outputs(self):
        outputs = super().get_outputs()
        if self.extensions:
            outputs.append(str(Path(self.get_ext_fullpath(self.extensions[0].name)).parent / MANIFEST))
        return outputs


class PlatformWheel(bdist_wheel):
    """A wheel for one platform but any Python 3: the libraries use neither Python's nor torch's C API."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat

# The extras (extras_require: demo, test, bench, jpeg, docs, lint, ...) are declared statically in pyproject.toml's
# [project.optional-dependencies]; this file holds only what needs code: the packages, the kernels/ mapping and the
# C library's build.
setup(
    packages=find_packages(include=["fdgpu", "fdgpu.*"]) + ["fdgpu.backends.csrc", "fdgpu.kernels"],
    package_dir={"fdgpu.kernels": "kernels"},
    # the C sources (for FDGPU_BUILD=1) and the PEP 561 marker: fdgpu ships type hints
    package_data={"fdgpu.backends.csrc": ["fused.c", "entropy.c"], "fdgpu": ["py.typed"]},
    ext_modules=libraries(),
    cmdclass={"build_ext": BuildLibraries, "bdist_wheel": PlatformWheel},
)

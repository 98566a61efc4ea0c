"""Loading the C library (fdgpu/backends/_library.py, _isa.py): every instruction-set target this CPU runs gives the
same bits as the torch reference; packaged libraries are checked against their record (damaged, stale), the
cache of FDGPU_BUILD=1 is usable without a compiler and refuses files it cannot vouch for."""
import hashlib
import json
import os
import shutil
import warnings

import pytest
import torch

import fdgpu
from fdgpu.backends import _isa, _library


@pytest.fixture
def fresh(monkeypatch):
    """A library state of its own (loaded again on the next call), no target forced; the session's cache."""
    monkeypatch.delenv("FDGPU_CPU_TARGET", raising=False)
    monkeypatch.delenv("FDGPU_FUSED", raising=False)
    _library._reset()
    yield
    monkeypatch.undo()
    _library._reset()


@pytest.fixture(scope="session")
def built():
    """(target, file) of a real library of the best target (the package's, or compiled into the session's cache)."""
    _library._reset()
    assert _library.library() is not None, _library.status()
    return _library.info()["isa"], _library.info()["library"]


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, 37, 45, generator=g)


def _run(x, sub):
    """The layer's forward and its ``soft`` and ``ste`` input gradients for ``x``."""
    out = []
    for mode in ("soft", "ste"):
        xx = x.clone().requires_grad_()
        y = fdgpu.jpeg(xx, 75, subsampling=sub, backward=mode)
        y.backward(torch.linspace(-1, 1, y.numel()).view_as(y))
        out += [y.detach(), xx.grad]
    return out


# --------------------------------------------------------------------------------------------------------- targets
def test_targets_from_cpu_features():
    v2 = {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
    v3 = v2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert _isa.supported(frozenset(), "x86_64") == ["x86-64"]
    assert _isa.supported(frozenset(v2 | {"avx", "avx2"}), "x86_64") == ["x86-64-v2", "x86-64"]
    assert _isa.supported(frozenset(v3 - {"movbe"}), "x86_64") == ["x86-64-v2", "x86-64"]  # v3 needs all of v3
    assert _isa.supported(frozenset(v3 | {"avx512f"}), "AMD64") == ["x86-64-v3", "x86-64-v2", "x86-64"]
    assert _isa.supported(frozenset(v4), "x86_64") == ["x86-64-v4", "x86-64-v3", "x86-64-v2", "x86-64"]
    assert _isa.supported(frozenset(v4), "aarch64") == ["baseline"] == _isa.targets("arm64")
    assert _isa.targets("x86_64") == ["x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"]
    for target in _isa.targets("x86_64"):  # every target keeps the float steps as the reference rounds them
        assert {"-ffp-contract=off", "-O3"} <= set(_isa.flags(target)) and "-ffast-math" not in _isa.flags(target)
        assert not any("native" in f for f in _isa.flags(target))


def test_every_target_this_cpu_runs_gives_the_reference_bits(fresh, monkeypatch):
    x = _images()
    monkeypatch.setenv("FDGPU_FUSED", "0")  # the torch reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cpu backend's absence is announced once: not the point here
        want = {sub: fdgpu.jpeg(x, 75, subsampling=sub) for sub in fdgpu.SUBSAMPLINGS}
    # file sizes: the coder's nonzero masks (SSE2, AVX2, AVX-512) and the encoder's 8-block gather (AVX2) differ by
    # target; a row of 18 blocks takes the gather's wide path and its scalar rest
    g = torch.Generator().manual_seed(1)
    wide = torch.rand(2, 3, 19, 137, generator=g)
    want_size = {(sub, opt): fdgpu.jpeg_size(wide, 75, subsampling=sub, optimize=opt, backend="torch")
                 for sub in fdgpu.SUBSAMPLINGS for opt in (False, True)}
    assert _library.library() is None
    monkeypatch.delenv("FDGPU_FUSED")
    runs = _isa.supported()
    first = {}
    for target in runs:
        monkeypatch.setenv("FDGPU_CPU_TARGET", target)
        _library._reset()
        assert _library.library() is not None, _library.status()
        info = _library.info()
        assert info["isa"] == target and os.path.isfile(info["library"]), info
        for sub in fdgpu.SUBSAMPLINGS:
            got = _run(x, sub)
            assert torch.equal(got[0], want[sub]), (target, sub)   # forward: the reference's bits
            if sub not in first:
                first[sub] = got
            for a, b in zip(got, first[sub]):                       # backward: the same bits on every target
                assert torch.equal(a, b), (target, sub)
            for opt in (False, True):
                size = fdgpu.jpeg_size(wide, 75, subsampling=sub, optimize=opt, backend="cpu")
                assert torch.equal(size, want_size[sub, opt]), (target, sub, opt)


def test_forced_target_must_exist_and_run_here(fresh, monkeypatch):
    monkeypatch.setenv("FDGPU_CPU_TARGET", "pentium")
    assert _library.library() is None
    assert _library.status().startswith("unavailable: FDGPU_CPU_TARGET: expected one of ")
    if _isa.is_x86_64():
        monkeypatch.setattr(_isa, "supported", lambda *a: ["x86-64"])
        monkeypatch.setenv("FDGPU_CPU_TARGET", "x86-64-v4")
        _library._reset()
        assert _library.library() is None
        assert _library.status() == "unavailable: FDGPU_CPU_TARGET=x86-64-v4: this CPU does not run it (it runs x86-64)"


# --------------------------------------------------------------------------------------------- packaged libraries
def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def package(built, fresh, monkeypatch, tmp_path):
    """A package folder of its own holding a copy of a real library of the best target, with its record, and a
    private empty cache."""
    target, lib = built
    folder = tmp_path / "pkg"
    (folder / "csrc").mkdir(parents=True)
    sources = tuple(folder / "csrc" / p.name for p in _library.SOURCES)
    for src, dst in zip(_library.SOURCES, sources):
        shutil.copy(src, dst)
    shutil.copy(lib, folder / "_fused_best.so")
    record = {"source_sha256": _library.sources_sha256(sources),
              "libraries": {target: {"file": "_fused_best.so", "sha256": _sha(folder / "_fused_best.so"),
                                     "flags": ["-O3"]}}}
    (folder / "_fused.json").write_text(json.dumps(record))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("FDGPU_CACHE", str(cache))
    monkeypatch.setattr(_library, "HERE", folder)
    monkeypatch.setattr(_library, "SOURCES", sources)
    monkeypatch.setattr(_library, "MANIFEST", folder / "_fused.json")
    monkeypatch.delenv("FDGPU_BUILD", raising=False)
    return folder


def test_packaged_library_loads_without_a_compiler(package, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent")
    monkeypatch.setenv("PATH", "")
    assert _library.library() is not None, _library.status()
    assert _library.info()["library"] == str(package / "_fused_best.so") and _library.info()["origin"] == "package"
    assert _library.compile_seconds is None


@pytest.mark.parametrize("spoil, message", [
    ("library", "does not match its recorded SHA-256 (damaged: reinstall fdgpu)"),
    ("source", "was built from other csrc/*.c sources (edited since the build"),
    ("record", "the package holds no compiled library"),
    ("nothing built", "installed without its C library (no working C compiler when it was built; with one, pip "
                      "install --force-reinstall --no-cache-dir fdgpu builds it"),
])
def test_packaged_library_is_checked(package, spoil, message):
    if spoil == "library":
        with open(package / "_fused_best.so", "ab") as fh:
            fh.write(b"\0")
    elif spoil == "source":
        (package / "csrc" / "fused.c").write_text("/* edited */\n")
    elif spoil == "record":
        (package / "_fused.json").unlink()
    else:
        (package / "_fused.json").write_text(json.dumps({"source_sha256": "", "libraries": {}}))
    assert _library.library() is None
    assert message in _library.status() and _library.FIX in _library.status()


# --------------------------------------------------------------------------------- compile on first use (opt-in)
def test_build_on_first_use_then_cache_without_a_compiler(package, monkeypatch):
    (package / "_fused.json").unlink()  # a package without libraries
    fresh = package.parent / "cache"
    monkeypatch.setenv("FDGPU_BUILD", "1")
    monkeypatch.setenv("FDGPU_CPU_TARGET", _isa.supported()[-1])  # the baseline target
    assert _library.library() is not None, _library.status()
    info = _library.info()
    lib = fresh / os.path.basename(info["library"])
    assert info["origin"] == "compiled now" and lib.is_file() and _library.compile_seconds > 0
    assert "native" not in lib.name and (lib.with_suffix(".sha256")).read_text().strip() == _sha(lib)
    assert sorted(p.name for p in fresh.iterdir()) == sorted([lib.name, lib.with_suffix(".sha256").name])

    monkeypatch.setenv("CC", "/nonexistent")  # no compiler: the cached library is used
    monkeypatch.setenv("PATH", "")
    _library._reset()
    assert _library.library() is not None and _library.info()["origin"] == "cache"

    def replace(data):  # a new file in its place (the loaded one stays mapped as it was)
        (fresh / "new").write_bytes(data)
        os.chmod(fresh / "new", 0o755)
        os.replace(fresh / "new", lib)

    good = lib.read_bytes()
    replace(good + b"\0")  # changed after its build: not loaded, and not rebuilt without a compiler
    _library._reset()
    assert _library.library() is None and "no C compiler found" in _library.status()
    replace(good)
    os.chmod(fresh, 0o777)  # a folder others can write: what is in it is not loaded
    try:
        _library._reset()
        assert _library.library() is None
        os.chmod(fresh, 0o770)  # group-writable: only when the group is the user's private group
        for own, loads in ((False, False), (True, True)):
            monkeypatch.setattr(_library, "_own_group", lambda gid, own=own: own)
            _library._reset()
            assert (_library.library() is not None) == loads
    finally:
        os.chmod(fresh, 0o700)
    _library._reset()
    assert _library.library() is not None and _library.info()["origin"] == "cache"


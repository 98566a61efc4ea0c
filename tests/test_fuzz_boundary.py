"""Hypothesis fuzz of the API boundary (issue 14): whatever a caller passes, the public functions either return a
result of the documented shape or raise one of the documented exception types (TypeError, ValueError) with a
message that names the offending argument. Nothing else escapes: no IndexError, ZeroDivisionError, RuntimeError
from deep inside, no silent NaN output for valid-looking input.

Covered: ``fdgpu.jpeg``, ``fdgpu.feature_distillation``, ``fdgpu.requantize``, ``fdgpu.JPEG`` and ``fdgpu.FDJpeg``,
the eval spec parsers, and ``fdgpu.data.load_npz`` on generated files. A few hundred examples in all, small shapes,
a few seconds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu.eval.specs import parse_attack, parse_defence

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                          HealthCheck.too_slow])

numbers = st.one_of(st.integers(-300, 300), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0, 1, 1.0, 100, 1e38, -1e-9, True, False]))
odd_values = st.one_of(numbers, st.none(), st.text(max_size=4), st.lists(st.integers(0, 3), max_size=3))


def mostly(valid, odd):
    """``valid`` three times in four, else ``odd``: most calls get past the checks and compute something."""
    return st.integers(0, 3).flatmap(lambda k: odd if k == 0 else valid)


@st.composite
def valid_images(draw):
    lead = draw(st.lists(st.integers(1, 2), max_size=2))
    shape = lead + [draw(st.sampled_from([1, 3])), draw(st.integers(1, 11)), draw(st.integers(1, 11))]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    return torch.rand(shape, generator=g, dtype=draw(st.sampled_from([torch.float32, torch.float64])))


@st.composite
def odd_images(draw):
    """One thing wrong: the type, dtype, dims, channels, an empty size, or a value."""
    x = draw(valid_images())
    what = draw(st.sampled_from(["type", "uint8", "int64", "bool", "dims", "channels", "empty", "nan", "inf",
                                 "scale255", "negative", "float16"]))
    if what == "type":
        return draw(odd_values)
    if what in ("uint8", "int64", "bool"):
        return (x * 255).to(getattr(torch, what)) if what != "bool" else x > 0.5
    if what == "dims":
        return x.reshape(-1)[: draw(st.integers(0, 4))].reshape([1] * draw(st.integers(0, 1)) + [-1])
    if what == "channels":
        return x[..., :1, :, :].expand(*x.shape[:-3], draw(st.sampled_from([0, 2, 4])), *x.shape[-2:]).clone()
    if what == "empty":
        return x[..., :0, :] if draw(st.booleans()) else x[:0] if x.dim() > 3 else x[..., :0]
    if what == "float16":
        return x.half()
    flat = x.view(-1)
    flat[draw(st.integers(0, x.numel() - 1))] = {"nan": math.nan, "inf": math.inf, "scale255": 200.0,
                                                  "negative": -0.5}[what]
    return x


images = mostly(valid_images(), odd_images())
qualities = mostly(st.one_of(st.integers(1, 100), st.floats(1, 100)), odd_values)
strengths = mostly(st.floats(1, 5), odd_values)


@st.composite
def valid_tables(draw):
    return torch.tensor(draw(st.lists(st.integers(1, 255), min_size=64, max_size=64)), dtype=torch.float32).view(8, 8)


@st.composite
def odd_tables(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(odd_values)
    shape = draw(st.sampled_from([(8, 8), (1, 8, 8), (2, 8, 8), (8,), (7, 8), (3, 8, 8, 8)]))
    t = torch.full(shape, float(draw(st.sampled_from([1, 2, 50, 255, 0.5, 0, -3, math.nan, math.inf, 1e38]))))
    return t.numpy() if kind == 1 else t.tolist() if kind == 2 else t


table_args = mostly(valid_tables(), odd_tables())
subsamplings = mostly(st.sampled_from(["4:2:0", "4:4:4", "4:2:2"]), st.one_of(st.text(max_size=5), st.none(),
                                                                               st.integers()))
backwards = mostly(st.sampled_from(["ste", "exact", "soft", "bpda"]), st.one_of(st.text(max_size=5), st.none()))


def _check_outcome(call, args_named: tuple, x):
    try:
        y = call()
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        event(f"{type(exc).__name__} {msg.split(':')[0][:20]}")
        assert any(msg.startswith(name) or f"{name}:" in msg or f"{name}=" in msg for name in args_named), \
            f"{type(exc).__name__} does not name its argument ({args_named}): {msg}"
        return
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype
    event("returned a result" + (" (empty)" if not y.numel() else ""))
    if y.numel():
        assert bool(torch.isfinite(y).all()) and 0 <= float(y.min()) and float(y.max()) <= 1


@FAST
@given(x=images, quality=qualities, sub=subsamplings, backward=backwards)
def test_jpeg_boundary(x, quality, sub, backward):
    _check_outcome(lambda: fdgpu.jpeg(x, quality, subsampling=sub, backward=backward, backend="torch"),
                   ("x", "quality", "subsampling", "backward"), x)


@FAST
@given(x=images, strength=strengths)
def test_feature_distillation_boundary(x, strength):
    _check_outcome(lambda: fdgpu.feature_distillation(x, strength, backend="torch"), ("x", "strength",
                                                                                       "luma_table"), x)


@FAST
@given(x=images, luma=table_args, chroma=st.one_of(st.none(), table_args), sub=subsamplings)
def test_requantize_boundary(x, luma, chroma, sub):
    _check_outcome(lambda: fdgpu.requantize(x, luma, chroma, subsampling=sub, backend="torch"),
                   ("x", "luma_table", "chroma_table", "subsampling"), x)


@FAST
@given(x=images, quality=qualities, strength=strengths, sub=subsamplings, backward=backwards,
       which=st.sampled_from(["JPEG", "FDJpeg"]))
def test_module_boundary(x, quality, strength, sub, backward, which):
    """The nn.Module wrappers: bad constructor arguments fail at construction, bad inputs at the call."""
    names = ("quality", "subsampling", "backward") if which == "JPEG" else ("strength", "subsampling", "backward",
                                                                           "luma_table")
    try:
        layer = fdgpu.JPEG(quality, subsampling=sub, backward=backward, backend="torch") if which == "JPEG" else \
            fdgpu.FDJpeg(strength, subsampling=sub, backward=backward, backend="torch")
    except (TypeError, ValueError) as exc:
        assert any(str(exc).startswith(n) or f"{n}:" in str(exc) for n in names), str(exc)
        return
    _check_outcome(lambda: layer(x), ("x",), x)


spec_parts = st.one_of(st.sampled_from(["8", "0", "-1", "8/255", "8/0", "0/0", "nan", "inf", "1e400", "0.5", "x",
                                        "", "3", "10", "300", "-0"]), st.text(max_size=4))


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(["none", "fgsm", "pgd", "pgdl2", "eot", "apgd", "apgd-dlr", "apgd-t", "blur", "PGD"]),
       parts=st.lists(st.one_of(spec_parts, st.sampled_from(["restarts=2", "restarts=0", "eot=-1", "eot=4",
                                                              "targets=3", "targets=x", "foo=1", "=", "eot=1/0"])),
                      max_size=5))
def test_attack_specs(kind, parts):
    spec = ":".join([kind] + parts)
    try:
        a = parse_attack(spec)
    except ValueError as exc:
        msg = str(exc)
        assert spec in msg or repr(spec) in msg, msg
        assert any(w in msg for w in ("EPS", "STEPS", "ALPHA", "SAMPLES", "attack:", "attack option")), msg
        return
    assert math.isfinite(a.eps) and a.eps >= 0
    assert a.kind == "none" or a.kind == "fgsm" or a.steps >= 1
    assert a.alpha is None or (math.isfinite(a.alpha) and a.alpha > 0)
    for count in ("samples", "restarts", "targets"):  # None: the evaluation's default
        assert getattr(a, count, None) is None or getattr(a, count) >= 1


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["none", "jpeg", "jpeg-rand", "fd", "fd-design", "jpgnoise", "quilting", "x"]),
       parts=st.lists(spec_parts, max_size=3))
def test_defence_specs(kind, parts):
    spec = ":".join([kind] + parts)
    try:
        d = parse_defence(spec)
    except ValueError as exc:
        msg = str(exc)
        assert any(w in msg for w in ("Q in", "K in", "LO", "HI", "EPS in", "N in", "defence:", "key=value")), msg
        return
    for v in d.args:
        assert not isinstance(v, float) or math.isfinite(v)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["uint8", "float32", "float64", "int64", "int16", "bool", "complex64"]),
       scale=st.sampled_from([1.0, 255.0, -1.0]), ydtype=st.sampled_from(["int64", "int32", "float32", "uint8"]),
       label=st.sampled_from([0, 9, 10, -1]), n=st.integers(1, 4), start=st.integers(-2, 5),
       limit=st.one_of(st.none(), st.integers(-1, 3)), spoil_y=st.booleans())
def test_load_npz_boundary(tmp_path, dtype, scale, ydtype, label, n, start, limit, spoil_y):
    from fdgpu.data import load_npz

    rng = np.random.default_rng(n)
    x = (rng.random((n, 4, 4, 3)) * scale).astype(dtype) if dtype != "uint8" else \
        rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    y = np.full(n, label).astype(ydtype)
    if spoil_y:
        y = y[:-1]
    path = tmp_path / f"f-{dtype}-{ydtype}.npz"
    np.savez(path, x=x, y=y)
    try:
        xs, ys = load_npz(path, start=start, limit=limit, num_classes=10)
    except ValueError as exc:
        msg = str(exc)
        assert msg.split(":")[0] in ("start", "limit") or msg.startswith(("x in", "y in")), msg
        return
    assert xs.dtype == torch.float32 and ys.dtype == torch.int64 and xs.shape[1:] == (3, 4, 4)
    assert 0 <= float(xs.min()) and float(xs.max()) <= 1 and bool(((ys >= 0) & (ys < 10)).all())
    assert xs.shape[0] == ys.shape[0] == len(range(n)[start:None if limit is None else start + limit]) >= 1

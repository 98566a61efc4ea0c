"""Public API: shapes, dtypes, devices, determinism, per-image qualities, modules, and every error message."""
import re

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import tables


@pytest.mark.parametrize("shape", [(3, 17, 9), (2, 3, 16, 16), (2, 2, 3, 5, 7), (1, 1, 1), (4, 1, 33, 8),
                                   (2, 3, 1, 40)], ids=lambda s: "x".join(map(str, s)))
def test_shapes_preserved(shape):
    x = torch.rand(shape)
    for f in (lambda t: fdgpu.jpeg(t, 50), lambda t: fdgpu.feature_distillation(t, 1.0),
              lambda t: fdgpu.requantize(t, tables.fd(2.0))):
        y = f(x)
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


def test_output_on_the_255_grid_and_in_range():
    y = fdgpu.jpeg(torch.rand(2, 3, 20, 20), 10)
    assert ((y * 255) - (y * 255).round()).abs().max() < 1e-4  # k / 255 in float32
    assert y.min() >= 0 and y.max() <= 1


def test_leading_dims_are_flattened_consistently():
    x = torch.rand(2, 3, 3, 12, 10)
    y = fdgpu.jpeg(x, 40)
    assert torch.equal(y.reshape(6, 3, 12, 10), fdgpu.jpeg(x.reshape(6, 3, 12, 10), 40))
    assert torch.equal(y[1, 2], fdgpu.jpeg(x[1, 2], 40))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_round_trip(dtype):
    x = torch.rand(2, 3, 16, 24)
    y = fdgpu.jpeg(x.to(dtype), 75)
    assert y.dtype == dtype
    ref = fdgpu.jpeg(x.to(dtype).float(), 75)
    # computed in float32 (float64 stays float64) and cast back: equal up to the cast of the 1/255 grid
    assert (y.float() - ref).abs().max() <= (2 ** -8 if dtype != torch.float64 else 1e-6)


def test_deterministic():
    x = torch.rand(3, 3, 29, 31)
    assert torch.equal(fdgpu.jpeg(x, 33), fdgpu.jpeg(x, 33))


def test_per_image_quality_tensor_equals_separate_calls():
    x = torch.rand(3, 3, 24, 20)
    q = torch.tensor([10.0, 55.5, 95.0])
    y = fdgpu.jpeg(x, q)
    for i in range(3):
        assert torch.equal(y[i], fdgpu.jpeg(x[i], float(q[i])))
    # with leading dims, one quality per image of the flattened batch
    x5 = torch.rand(2, 2, 3, 8, 8)
    y5 = fdgpu.jpeg(x5, torch.tensor([10.0, 20.0, 30.0, 40.0]))
    assert torch.equal(y5[1, 0], fdgpu.jpeg(x5[1, 0], 30))


def test_empty_batch_returns_empty():
    for shape in [(0, 3, 8, 8), (2, 0, 3, 8, 8)]:
        y = fdgpu.jpeg(torch.rand(shape), 50)
        assert y.shape == shape


def test_feature_distillation_is_requantize_with_fd_table():
    x = torch.rand(2, 3, 20, 28)
    assert torch.equal(fdgpu.feature_distillation(x, 3.0), fdgpu.requantize(x, tables.fd(3.0), tables.fd(3.0)))
    assert torch.equal(fdgpu.requantize(x, tables.fd(3.0)), fdgpu.requantize(x, tables.fd(3.0), tables.fd(3.0)))


def test_grayscale_uses_luma_table_only():
    x = torch.rand(2, 1, 16, 16)
    lt = tables.fd(1.0)
    assert torch.equal(fdgpu.requantize(x, lt, torch.full((8, 8), 200.0)), fdgpu.requantize(x, lt))


def test_validate_false_skips_value_checks_only():
    x = torch.rand(1, 3, 8, 8)
    x[0, 0, 0, 0] = 1.5
    fdgpu.jpeg(x, 50, validate=False)  # the caller vouches for the values
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fdgpu.jpeg(x, 50)
    with pytest.raises(TypeError, match="floating"):
        fdgpu.jpeg(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 50, validate=False)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("x, exc, match", [
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, r"x\.float\(\) / 255"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.int64), TypeError, "floating"),
    ([[0.5]], TypeError, "torch.Tensor"),
    (torch.rand(8, 8), ValueError, "at least 3 dims"),
    (torch.rand(1, 4, 8, 8), ValueError, "3 \\(RGB\\) or 1 \\(grayscale\\) channels.*got 4"),
    (torch.rand(2, 8, 8, 3), ValueError, "channels at dim -3, got 8"),
    (torch.full((1, 3, 8, 8), float("nan")), ValueError, "NaN or Inf"),
    (torch.full((1, 3, 8, 8), float("inf")), ValueError, "NaN or Inf"),
    (torch.full((1, 3, 8, 8), 255.0), ValueError, r"expected values in \[0, 1\], got min 255.*divide by 255"),
    (torch.full((1, 3, 8, 8), -0.01), ValueError, r"got min -0.01"),
    (torch.rand(1, 3, 0, 8), ValueError, "H, W >= 1"),
])
def test_input_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        fdgpu.jpeg(x, 50)


def test_range_slack():
    x = torch.rand(1, 3, 8, 8)
    x[0, 0, 0, 0] = 1 + 5e-7
    x[0, 0, 0, 1] = -5e-7
    fdgpu.jpeg(x, 50)  # within the documented 1e-6 slack


@pytest.mark.parametrize("kw, exc, match", [
    ({"quality": 0}, ValueError, r"quality: expected values in \[1, 100\].*got 0"),
    ({"quality": 100.5}, ValueError, "got 100.5"),
    ({"quality": torch.tensor([50.0, 60.0])}, ValueError, r"one quality per image.*\(3\), got 2"),
    ({"quality": "high"}, TypeError, "quality"),
    ({"subsampling": "4:1:1"}, ValueError, r"subsampling: expected one of '4:4:4', '4:2:2', '4:2:0', got '4:1:1'"),
    ({"backward": "straight"}, ValueError, r"backward: expected one of 'exact', 'ste', 'soft', 'bpda'"),
    ({"backend": "cuda"}, ValueError, r"backend: expected one of 'auto', 'torch', 'cpu', 'triton'"),
])
def test_argument_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        fdgpu.jpeg(torch.rand(3, 3, 8, 8), **kw)


@pytest.mark.parametrize("strength, shown", [(0, "0"), (-2.0, "-2"), (0.5, "0.5"), (0.999, "0.999"),
                                             (float("nan"), "nan"), ("2", "'2'")])
def test_strength_below_one_one_rule_one_message(strength, shown):
    """Every strength outside the rule gets the same message, from every entry point."""
    message = (rf"^strength: expected a finite number >= 1 \(1, 2, 3 are the paper's FD 1x/2x/3x\), got {shown}: "
               r"the table's low-frequency steps are 1 x strength")
    for build in (lambda: fdgpu.feature_distillation(torch.rand(3, 8, 8), strength),
                  lambda: fdgpu.FDJpeg(strength=strength), lambda: fdgpu.tables.fd(strength)):
        with pytest.raises(ValueError, match=message):
            build()


def test_messages_say_how_to_fix_the_input():
    """A (64,) table: how to reshape it and that tables are in natural order; a numpy array: torch.from_numpy;
    channels-last images: the permute that makes them (..., C, H, W)."""
    with pytest.raises(ValueError, match=r"luma_table: expected shape \(8, 8\) or \(B, 8, 8\), got \(64,\); tables "
                                         r"are in natural \(row-major\) order, not zigzag: .* is t.reshape\(8, 8\)"):
        fdgpu.requantize(torch.rand(1, 3, 16, 16), torch.ones(64))
    with pytest.raises(TypeError, match=r"got numpy.ndarray; convert it with torch.from_numpy\(a\)"):
        fdgpu.jpeg(np.random.rand(3, 16, 16).astype(np.float32), 75)
    for shape, perm in (((16, 24, 3), "x.permute(2, 0, 1)"), ((2, 16, 24, 3), "x.permute(0, 3, 1, 2)"),
                        ((1, 2, 16, 24, 1), "x.movedim(-1, -3)")):
        with pytest.raises(ValueError, match=r"channels-last \(..., H, W, C\) images: pass " + re.escape(perm)):
            fdgpu.jpeg(torch.rand(shape), 75)


def test_the_zigzag_recipe_of_the_table_message_is_right():
    natural = fdgpu.tables.ijg(50)[0]
    zigzag = natural.reshape(64)[fdgpu.tables.zigzag_order()]
    assert torch.equal(torch.empty(64).index_copy(0, fdgpu.tables.zigzag_order(), zigzag).reshape(8, 8), natural)


@pytest.mark.parametrize("table, match", [
    (torch.ones(4, 4), r"shape \(8, 8\) or \(B, 8, 8\), got \(4, 4\)"),
    (torch.zeros(8, 8), "entries >= 1"),
    (torch.full((8, 8), float("nan")), "entries >= 1"),
    (torch.ones(5, 8, 8), "expected 2 per-image tables"),
])
def test_table_errors(table, match):
    with pytest.raises(ValueError, match=match):
        fdgpu.requantize(torch.rand(2, 3, 8, 8), table)


def test_triton_backend_on_cpu_says_what_to_do(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises((ValueError, RuntimeError), match="backend='triton'"):
        fdgpu.jpeg(torch.rand(1, 3, 8, 8), 50, backend="triton")


def test_torch_backend_always_works():
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(fdgpu.jpeg(x, 50, backend="torch"), fdgpu.jpeg(x, 50, backend="auto"))


# ------------------------------------------------------------------------------------------------ modules
def test_modules_match_functional_and_carry_tables():
    x = torch.rand(2, 3, 18, 22)
    assert torch.equal(fdgpu.JPEG(quality=35)(x), fdgpu.jpeg(x, 35))
    assert torch.equal(fdgpu.FDJpeg(strength=2.0)(x), fdgpu.feature_distillation(x, 2.0))
    m = fdgpu.FDJpeg(strength=3.0, subsampling="4:4:4", backward="bpda")
    sd = m.state_dict()
    assert set(sd) == {"luma_table", "chroma_table", "strength"} and torch.equal(sd["luma_table"], tables.fd(3.0))
    assert "strength=3" in repr(m) and "bpda" in repr(m)
    seq = torch.nn.Sequential(fdgpu.JPEG(75), torch.nn.Identity())
    xr = x.clone().requires_grad_()
    seq(xr).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()


def test_module_argument_errors():
    with pytest.raises(ValueError, match="backward"):
        fdgpu.JPEG(50, backward="nope")
    with pytest.raises(ValueError, match="quality"):
        fdgpu.JPEG(150)
    with pytest.raises(ValueError, match="one number"):
        fdgpu.JPEG(torch.tensor([50.0, 60.0]))


def test_torch_compile_smoke():
    f = torch.compile(lambda t: fdgpu.jpeg(t, 50, validate=False), backend="eager")
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    y = f(x)
    y.sum().backward()
    assert torch.equal(y, fdgpu.jpeg(x.detach(), 50)) and x.grad is not None


# ------------------------------------------------------------------------------------------------ issue 14 item 6 etc.
def test_huge_strength_is_refused_not_nan():
    for validate in (True, False):
        with pytest.raises(ValueError, match="strength: expected at most"):
            fdgpu.feature_distillation(torch.rand(1, 3, 8, 8), 1e38, validate=validate)
    with pytest.raises(ValueError, match="strength: expected at most"):
        fdgpu.FDJpeg(1e38)
    y = fdgpu.feature_distillation(torch.rand(1, 3, 8, 8), 1e36, validate=False)  # still a finite table
    assert torch.isfinite(y).all()


def test_module_state_and_description_agree():
    m = fdgpu.JPEG(75)
    m.load_state_dict(fdgpu.JPEG(10).state_dict())
    x = torch.rand(2, 3, 16, 16)
    assert "quality=10" in repr(m) and torch.equal(m(x), fdgpu.jpeg(x, 10))
    f = fdgpu.FDJpeg(1.0)
    f.load_state_dict(fdgpu.FDJpeg(3.0).state_dict())
    assert "strength=3" in repr(f) and torch.equal(f(x), fdgpu.feature_distillation(x, 3.0))


def test_requantize_table_type_error_names_the_argument():
    with pytest.raises(TypeError, match="luma_table: expected an \\(8, 8\\) or \\(B, 8, 8\\) tensor, got str"):
        fdgpu.Requantize("abc")
    with pytest.raises(TypeError, match="chroma_table: expected .* got str"):
        fdgpu.Requantize(tables.fd(1.0), "abc")
    with pytest.raises(TypeError, match="learnable: expected True or False"):
        fdgpu.Requantize(tables.fd(1.0), learnable="yes")


def test_fd_design_empty_batch():
    with pytest.raises(ValueError, match="images: expected at least one image"):
        tables.fd_design(torch.rand(0, 3, 16, 16), 2.0)


# ------------------------------------------------------------------------------------------------ learnable
def test_learnable_requantize_parameters_and_state_dict_round_trip():
    m = fdgpu.Requantize(tables.fd(1.0), tables.fd(2.0), learnable=True)
    assert [n for n, _ in m.named_parameters()] == ["luma_table", "chroma_table"]
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(m(x), fdgpu.requantize(x, tables.fd(1.0), tables.fd(2.0)))  # exact initial tables
    m(x).mean().backward()
    assert m.luma_table.grad.shape == (8, 8) and m.chroma_table.grad.abs().sum() > 0
    with torch.no_grad():
        m.luma_table.add_(torch.randn(8, 8) * 5)
    m2 = fdgpu.Requantize(tables.fd(1.0), learnable=True)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2(x), m(x)) and torch.equal(m2.luma_table, m.luma_table)


def test_learnable_tables_are_used_clamped_to_1_255_with_straight_through_grads():
    m = fdgpu.Requantize(tables.fd(1.0), learnable=True, validate=True)
    with torch.no_grad():
        m.luma_table[0, 0] = -3.0
        m.luma_table[7, 7] = 400.0
    luma, _ = m.tables()
    assert luma[0, 0] == 1 and luma[7, 7] == 255
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(m(x), fdgpu.requantize(x, luma.detach(), m.chroma_table.detach()))
    m(x).square().sum().backward()
    assert m.luma_table.grad[0, 0] != 0  # a parameter past a bound still gets a gradient


def test_learnable_jpeg_quality():
    m = fdgpu.JPEG(50, learnable=True)
    assert [n for n, _ in m.named_parameters()] == ["quality"] and set(m.state_dict()) == {"quality"}
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(m(x), fdgpu.jpeg(x, 50))
    m(x).square().sum().backward()
    assert m.quality.grad is not None and m.quality.grad != 0
    with torch.no_grad():
        m.quality.fill_(130.0)  # used clamped: quality 100
    assert torch.equal(m(x), fdgpu.jpeg(x, 100))
    m2 = fdgpu.JPEG(20, learnable=True)
    m2.load_state_dict(m.state_dict())
    assert "quality=130" in repr(m2) and torch.equal(m2(x), m(x))


BAD_STEPS = [0.0, float("nan"), float("inf"), -1.0, 0.5]


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
@pytest.mark.parametrize("step", BAD_STEPS, ids=lambda v: f"step={v:g}")
def test_invalid_steps_are_an_error_even_without_validation(backend, step):
    """One definition on every backend: a step of 0, NaN, Inf or below 1 is an error naming the table, with
    ``validate=True`` (ValueError, one host sync) and with ``validate=False`` too (``torch._assert_async``: no host
    sync; it was NaN outputs on the torch path while the C library declined the table)."""
    if backend == "triton":
        pytest.importorskip("triton")
    x = torch.rand(2, 3, 9, 11)
    bad = tables.fd(1.0).clone()
    bad[3, 5] = step
    for luma, chroma, name in ((bad, None, "luma_table"), (tables.fd(1.0), bad, "chroma_table"),
                               (bad.expand(2, 8, 8), None, "luma_table")):
        with pytest.raises(ValueError, match=f"{name}: expected finite entries >= 1"):
            fdgpu.requantize(x, luma, chroma, backend=backend)
        with pytest.raises(RuntimeError, match=re.escape(f"{name}: expected finite entries >= 1 (JPEG quantization "
                                                         f"steps; checked even with validate=False)")):
            fdgpu.requantize(x, luma, chroma, backend=backend, validate=False)
    m = fdgpu.Requantize(tables.fd(1.0), validate=False, backend=backend)
    m.luma_table[0, 0] = step  # a buffer changed after the module's own check
    with pytest.raises(RuntimeError, match="luma_table: expected finite entries >= 1"):
        m(x)


def test_nan_quality_is_an_error_even_without_validation():
    x = torch.rand(2, 3, 9, 11)
    with pytest.raises(RuntimeError, match="quality: expected numbers .checked even with validate=False., got NaN"):
        fdgpu.jpeg(x, torch.tensor([50.0, float("nan")]), validate=False)
    # the tables of any other quality are valid steps (the IJG scaling clamps them to 1..255)
    assert torch.equal(fdgpu.jpeg(x, torch.tensor([150.0, 0.0]), validate=False),
                       fdgpu.jpeg(x, torch.tensor([100.0, 1.0])))

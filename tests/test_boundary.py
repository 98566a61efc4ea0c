"""Messages and behaviour at the API boundary that a new user trips on (issue 11, item 3)."""
import numpy as np
import pytest
import torch

import fdgpu


@pytest.mark.parametrize("quality", [np.int64(75), np.int32(75), np.float32(75.0), np.float64(75.0),
                                     np.array(75), torch.tensor(75), torch.tensor(75.0)],
                         ids=lambda q: f"{type(q).__name__}-{getattr(q, 'dtype', '')}")
def test_numpy_scalars_and_0d_tensors_as_quality(quality):
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(fdgpu.jpeg(x, quality), fdgpu.jpeg(x, 75))


@pytest.mark.parametrize("strength", [np.int64(2), np.float32(2.0), torch.tensor(2.0)],
                         ids=lambda s: type(s).__name__)
def test_numpy_scalars_and_0d_tensors_as_strength(strength):
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(fdgpu.feature_distillation(x, strength), fdgpu.feature_distillation(x, 2.0))
    assert fdgpu.FDJpeg(strength).strength == 2.0


def test_quality_still_rejects_non_numbers():
    with pytest.raises(TypeError, match="quality: expected a number"):
        fdgpu.jpeg(torch.rand(3, 8, 8), np.array([[75]]).astype(object))
    with pytest.raises(ValueError, match=r"quality: expected values in \[1, 100\].*got 0"):
        fdgpu.jpeg(torch.rand(3, 8, 8), np.int64(0))


def test_complex_input_is_not_told_to_convert_uint8():
    with pytest.raises(TypeError, match="got complex dtype torch.complex64; pass the image itself") as info:
        fdgpu.jpeg(torch.rand(1, 3, 8, 8, dtype=torch.complex64), 50)
    assert "uint8" not in str(info.value)


def test_integer_and_bool_input_hints():
    with pytest.raises(TypeError, match="largest sample value"):
        fdgpu.jpeg(torch.zeros(1, 3, 8, 8, dtype=torch.int16), 50)
    with pytest.raises(TypeError, match="bool masks"):
        fdgpu.jpeg(torch.zeros(1, 3, 8, 8, dtype=torch.bool), 50)


@pytest.mark.parametrize("value, hint", [
    (1 + 6e-4, r"small overshoot.*x\.clamp\(0, 1\)"),
    (-6e-4, r"small overshoot.*x\.clamp\(0, 1\)"),
    (1.4, r"small overshoot"),
    (1.6, "divide by 255"),
    (255.0, "divide by 255"),
    (65535.0, "divide by the largest sample value"),
    (-2.1, "normalised"),
])
def test_range_hint_fits_the_overshoot(value, hint):
    x = torch.rand(1, 3, 8, 8)
    x[0, 1, 2, 3] = value
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\], got min .*; .*" + hint) as info:
        fdgpu.jpeg(x, 50)
    if abs(value - 0.5) < 1:
        assert "255" not in str(info.value)


@pytest.mark.parametrize("subsampling", [*fdgpu.SUBSAMPLINGS, "gray"])
def test_validate_false_nan_reads_as_zero_in_both_backends(subsampling):
    gray = subsampling == "gray"
    x = torch.rand(2, 1 if gray else 3, 19, 21)
    bad = x.clone()
    bad[0, 0, 3, 3] = float("nan")
    bad[1, -1, 17, 20] = float("nan")
    bad[1, 0, 0, 0] = float("inf")
    bad[0, -1, 10, 10] = -float("inf")
    clean = bad.nan_to_num(nan=0.0).clamp(0, 1)  # the documented reading of unchecked values
    ss = "4:2:0" if gray else subsampling
    ref = fdgpu.jpeg(clean, 60, subsampling=ss, backend="torch")
    for backend in ("torch", "triton"):
        got = fdgpu.jpeg(bad, 60, subsampling=ss, backend=backend, validate=False)
        assert torch.equal(got, ref), backend
    with pytest.raises(ValueError, match="NaN or Inf"):
        fdgpu.jpeg(bad, 60, subsampling=ss)


def test_validate_false_nan_gradient_is_finite():
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 5, 5] = float("nan")
    x.requires_grad_()
    for backward in ("ste", "soft", "bpda"):
        x.grad = None
        fdgpu.jpeg(x, 50, backward=backward, validate=False, backend="torch").sum().backward()
        g = x.grad.clone()
        g[0, 0, 5, 5] = 0  # bpda passes the incoming gradient through; the point is no NaN spreads
        assert torch.isfinite(g).all(), backward


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_channels_last_keeps_its_memory_format(backend):
    x = torch.rand(2, 3, 17, 24).contiguous(memory_format=torch.channels_last)
    for f in (lambda t: fdgpu.jpeg(t, 50, backend=backend), lambda t: fdgpu.feature_distillation(t, backend=backend),
              lambda t: fdgpu.JPEG(50, backend=backend)(t)):
        y = f(x)
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
        assert torch.equal(y, f(x.contiguous()))
    xg = x.clone().requires_grad_()
    fdgpu.jpeg(xg, 50, backend=backend).sum().backward()
    assert xg.grad.shape == x.shape


def test_bfloat16_output_is_off_the_255_grid_as_documented():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y32 = fdgpu.jpeg(x.bfloat16().float(), 75)
    y = fdgpu.jpeg(x.bfloat16(), 75).float()
    off = (y * 255 - (y32 * 255).round()).abs()
    assert off.max() > 0.1  # bf16 cannot hold k / 255 (float16 can, to < 0.07)
    assert off.max() <= 0.5  # the documented bound: round(255 * y) still gives k
    assert torch.equal((y * 255).round(), (y32 * 255).round())
    y16 = fdgpu.jpeg(x.half(), 75).float()
    assert (y16 * 255 - (fdgpu.jpeg(x.half().float(), 75) * 255).round()).abs().max() < 0.07
    assert "bfloat16 (8 significant bits) cannot hold the 1/255 grid" in fdgpu.functional.__doc__

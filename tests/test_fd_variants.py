"""The two Feature-Distillation variants: the paper's table (YCbCr) and the authors' public code's (per RGB channel).

The official code (github.com/zihaoliu123/Feature-Distillation-DNN-Oriented-JPEG-Compression-Against-Adversarial-
Examples, utils/feature_distillation.py) quantizes each of R, G, B with step 25 on the top-left 4x4 and 30 elsewhere.
"""
import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import tables
from fdgpu.eval import build_defence, parse_defence

from ._helpers import pillow_roundtrip, psnr, to_tensor, to_uint8

BACKWARDS = fdgpu.BACKWARDS


def test_official_table_entries_and_strength():
    t = tables.fd(1, variant="official")
    assert t.shape == (8, 8) and t.dtype == torch.float32
    i, j = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    low = (i < 4) & (j < 4)
    assert int(low.sum()) == 16
    assert torch.equal(t[low], torch.full((16,), 25.0)) and torch.equal(t[~low], torch.full((48,), 30.0))
    assert torch.equal(tables.fd(3, variant="official"), 3 * t)
    assert torch.equal(tables.fd(2), tables.fd(2, variant="paper"))  # the default is unchanged
    with pytest.raises(ValueError, match="variant: expected one of"):
        tables.fd(1, variant="github")


def _channel_roundtrips(img, table):
    qt = [table.int().flatten().tolist()]
    return np.stack([pillow_roundtrip(np.ascontiguousarray(img[..., c]), qtables=qt) for c in range(3)], -1)


@pytest.mark.parametrize("strength", [1, 3])
def test_official_variant_is_per_channel_grayscale_jpeg_as_pillow(strength):
    """Independent oracle: Pillow/libjpeg-turbo coding each RGB channel as a grayscale JPEG with the official table,
    byte for byte (the pipeline computes libjpeg-turbo's integer DCT)."""
    from skimage import data

    img = np.ascontiguousarray(data.chelsea()[:150, :203])  # width not a multiple of 8
    t = tables.fd(strength, variant="official")
    y = fdgpu.feature_distillation(to_tensor(img), strength, variant="official")
    ref = _channel_roundtrips(img, t)
    assert torch.equal(y, to_tensor(ref))  # as a user compares: the decoded uint8 / 255
    ours = to_uint8(y)
    # and it is not YCbCr JPEG with the same table
    ycc = pillow_roundtrip(img, subsampling="4:4:4", qtables=[t.int().flatten().tolist()] * 2)
    assert psnr(ours, ycc) < 45


@pytest.mark.parametrize("backward", BACKWARDS)
def test_rgb_colour_equals_three_grayscale_images_forward_and_backward(backward):
    """``color="rgb"`` is the grayscale pipeline on each channel, forward and every backward mode, with per-image
    tables repeated per channel."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 13, 19, generator=g, dtype=torch.float64)
    tbl = torch.stack([tables.fd(1, variant="official"), tables.fd(2, variant="official")]).double()
    v = torch.randn(2, 3, 13, 19, generator=g, dtype=torch.float64)

    a = x.clone().requires_grad_(True)
    y = fdgpu.requantize(a, tbl, color="rgb", backward=backward)
    (y * v).sum().backward()

    b = x.clone().requires_grad_(True)
    planes = [fdgpu.requantize(b[:, c:c + 1], tbl, backward=backward) for c in range(3)]
    y_ref = torch.cat(planes, dim=1)
    (y_ref * v).sum().backward()
    assert torch.equal(y, y_ref) and torch.equal(a.grad, b.grad)
    if backward != "exact":
        assert a.grad.abs().sum() > 0


def test_rgb_colour_leading_dims_grayscale_and_errors():
    x = torch.rand(2, 2, 3, 16, 16)
    t = tables.fd(1, variant="official")
    y = fdgpu.requantize(x, t, color="rgb")
    assert y.shape == x.shape
    assert torch.equal(y[1, 0], fdgpu.requantize(x[1, 0], t, color="rgb"))
    gray = torch.rand(1, 1, 16, 16)
    assert torch.equal(fdgpu.requantize(gray, t, color="rgb"), fdgpu.requantize(gray, t))
    with pytest.raises(ValueError, match="color: expected one of"):
        fdgpu.requantize(x, t, color="yuv")
    with pytest.raises(ValueError, match="chroma_table: expected None"):
        fdgpu.requantize(x, t, 2 * t, color="rgb")
    with pytest.raises(ValueError, match="chroma_table: expected None"):
        fdgpu.Requantize(t, 2 * t, color="rgb")
    with pytest.raises(ValueError, match="variant: expected one of"):
        fdgpu.feature_distillation(x, 1, variant="rgb")


def test_official_module_and_eval_spec():
    x = torch.rand(2, 3, 24, 24)
    m = fdgpu.FDJpeg(2, variant="official")
    assert "variant='official'" in repr(m) and "color='rgb'" in repr(m)
    assert torch.equal(m(x), fdgpu.feature_distillation(x, 2, variant="official"))
    assert torch.equal(m(x), fdgpu.requantize(x, tables.fd(2, variant="official"), color="rgb"))
    s = parse_defence("fd-official:3")
    assert (s.kind, s.args) == ("fd-official", (3.0,))
    layer = build_defence("fd-official:3", "bpda")
    assert isinstance(layer, fdgpu.FDJpeg) and layer.variant == "official" and layer.backward == "bpda"
    assert torch.equal(layer(x), fdgpu.feature_distillation(x, 3, variant="official"))
    with pytest.raises(ValueError, match="K in"):
        parse_defence("fd-official:0")


def test_rgb_colour_triton_kernels_match_torch():
    """The RGB option needs nothing of the kernels beyond their grayscale path (run through Triton's interpreter
    on CPU)."""
    pytest.importorskip("triton", reason="triton is not installed (pip install 'fdgpu[triton]')")
    from fdgpu import kernels
    if not getattr(kernels, "AVAILABLE", False):
        pytest.skip("fdgpu.kernels unavailable")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.rand(2, 3, 16, 24, device=device)
    t = tables.fd(1, variant="official")
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ya = fdgpu.requantize(a, t, color="rgb", backend="triton", backward="ste")
    yb = fdgpu.requantize(b, t, color="rgb", backend="torch", backward="ste")
    assert torch.equal(ya, yb)
    ya.sum().backward()
    yb.sum().backward()
    assert torch.equal(a.grad, b.grad)

"""fdgpu.to_uint8: the layer's own 8-bit reading of a float image (halves up), against the layer and Pillow."""
import numpy as np
import pytest
import torch

import fdgpu

from ._helpers import pillow_roundtrip


def _half_levels(shape, seed=0):
    """Random images with about a third of the values exactly on a half level k + 0.5 (the values torch.round
    rounds to even), a third on the grid and a third anywhere."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 255, shape, generator=g).double()
    kind = torch.randint(0, 3, shape, generator=g)
    anywhere = torch.rand(shape, generator=g, dtype=torch.float64) * 255
    return torch.where(kind == 0, k + 0.5, torch.where(kind == 1, k, anywhere)) / 255


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["f32", "f64", "f16"])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 13, 21), (1, 1, 17, 9)], ids=["8x8", "13x21", "gray17x9"])
def test_layer_reads_what_to_uint8_gives(dtype, shape):
    x = _half_levels(shape).to(dtype)
    u = fdgpu.to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == x.shape
    for q in (75, 100):
        assert torch.equal(fdgpu.jpeg(x, q), fdgpu.jpeg((u.float() / 255).to(dtype), q)), q
    if dtype != torch.float16:  # float16 cannot hold k + 0.5 over 255 exactly: its half levels move off the half
        rounded = (x * 255).round().to(torch.uint8)
        assert not torch.equal(rounded, u), "the images must contain half levels that torch.round rounds down"


def test_against_pillow_on_half_levels():
    """Oracle: libjpeg-turbo (Pillow) encoding the bytes to_uint8 gives equals fdgpu's JPEG of the float image."""
    x = _half_levels((3, 19, 23), seed=1).float()
    img = np.ascontiguousarray(fdgpu.to_uint8(x).permute(1, 2, 0).numpy())
    ref = torch.from_numpy(pillow_roundtrip(img, 75).copy()).permute(2, 0, 1)
    assert torch.equal(fdgpu.to_uint8(fdgpu.jpeg(x, 75)), ref)  # the output is on the 1/255 grid: no halves
    rounded = np.ascontiguousarray((x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    assert not np.array_equal(pillow_roundtrip(rounded, 75), pillow_roundtrip(img, 75))


def test_values_memory_format_and_formula():
    x = torch.tensor([0.0, 0.5, 1.5, 2.5, 127.5, 254.49, 254.5, 255.0], dtype=torch.float64) / 255
    expect = torch.tensor([int(np.floor(float(v) * 255 + 0.5)) for v in x], dtype=torch.uint8)
    assert torch.equal(fdgpu.to_uint8(x), expect)
    assert fdgpu.to_uint8(x).tolist() == [0, 1, 2, 3, 128, 254, 255, 255]
    cl = torch.rand(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    assert fdgpu.to_uint8(cl).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(fdgpu.to_uint8(torch.tensor([-1.0, 2.0, float("nan")]), validate=False),
                       torch.tensor([0, 255, 0], dtype=torch.uint8))


def test_errors():
    with pytest.raises(TypeError, match="x: expected a floating tensor .* got dtype torch.uint8"):
        fdgpu.to_uint8(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="x: expected a float torch.Tensor"):
        fdgpu.to_uint8(np.zeros(3))
    with pytest.raises(ValueError, match="x: expected finite values"):
        fdgpu.to_uint8(torch.tensor([0.5, float("nan")]))
    with pytest.raises(ValueError, match="x: expected"):
        fdgpu.to_uint8(torch.tensor([0.5, 1.7]))

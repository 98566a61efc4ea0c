import io
import math

import numpy as np
import pytest
import torch

from fdgpu import tables


def pillow_tables(quality):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    q = Image.open(buf).quantization  # natural order (checked against the T.81 base tables at q = 50)
    return np.array(q[0]).reshape(8, 8), np.array(q[1]).reshape(8, 8)


def test_ijg_byte_identical_to_pillow_for_every_quality():
    pytest.importorskip("PIL")
    for q in range(1, 101):
        luma, chroma = tables.ijg(q)
        ref_l, ref_c = pillow_tables(q)
        assert np.array_equal(luma.numpy(), ref_l), f"luma table differs at quality {q}"
        assert np.array_equal(chroma.numpy(), ref_c), f"chroma table differs at quality {q}"


def test_ijg_quality_50_is_the_base_table_and_shapes():
    luma, chroma = tables.ijg(50)
    assert luma.shape == (8, 8) and luma.dtype == torch.float32
    assert torch.equal(luma, torch.tensor(tables.STD_LUMA, dtype=torch.float32))
    assert torch.equal(chroma, torch.tensor(tables.STD_CHROMA, dtype=torch.float32))
    assert torch.equal(tables.ijg(100)[0], torch.ones(8, 8))


def test_ijg_batched_equals_stacked_scalars_and_accepts_floats():
    q = torch.tensor([10.0, 50.0, 75.5, 100.0])
    luma, chroma = tables.ijg(q)
    assert luma.shape == (4, 8, 8) and chroma.shape == (4, 8, 8)
    for i, qi in enumerate(q.tolist()):
        l1, c1 = tables.ijg(qi)
        assert torch.equal(luma[i], l1) and torch.equal(chroma[i], c1)
    # a float quality sits between its integer neighbours
    assert bool((tables.ijg(75)[0] >= tables.ijg(75.5)[0]).all() & (tables.ijg(75.5)[0] >= tables.ijg(76)[0]).all())


@pytest.mark.parametrize("bad, match", [(0, r"\[1, 100\].*got 0"), (101, r"got 101"), (float("nan"), "got nan"),
                                        (-5.0, "got -5")])
def test_ijg_rejects_out_of_range(bad, match):
    with pytest.raises(ValueError, match=match):
        tables.ijg(bad)


def test_ijg_rejects_bad_types():
    with pytest.raises(TypeError, match="quality"):
        tables.ijg("75")
    with pytest.raises(TypeError, match="quality"):
        tables.ijg(True)
    with pytest.raises(ValueError, match="1-D"):
        tables.ijg(torch.full((2, 2), 50.0))


def test_zigzag_order():
    z = tables.zigzag_order()
    assert sorted(z.tolist()) == list(range(64))
    # T.81 Figure A.6: the first ten positions
    assert z[:10].tolist() == [0, 1, 8, 16, 9, 2, 3, 10, 17, 24]
    assert z[-1].item() == 63
    # the first 15 zigzag positions are exactly the i + j <= 4 band
    assert {(k // 8, k % 8) for k in z[:15].tolist()} == {(i, j) for i in range(8) for j in range(8) if i + j <= 4}


@pytest.mark.parametrize("strength", [1.0, 2.0, 3.0, 1.5])
def test_fd_table(strength):
    t = tables.fd(strength)
    assert t.shape == (8, 8) and t.dtype == torch.float32
    flat = t.flatten()[tables.zigzag_order()]
    assert torch.all(flat[:15] == strength) and torch.all(flat[15:] == 40 * strength)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_fd_rejects_bad_strength(bad):
    with pytest.raises(ValueError, match="strength"):
        tables.fd(bad)


def _images_with_known_variances(sigmas, n=64, seed=0):
    """Gray images whose 8x8 blocks have DCT coefficients with standard deviation sigmas[k] at frequency k."""
    from fdgpu.reference.dct import block_idct

    g = torch.Generator().manual_seed(seed)
    coef = torch.randn(n, 64, 2, 2, generator=g, dtype=torch.float64) * sigmas.view(1, 64, 1, 1)
    coef[:, 0] = 0
    img = (block_idct(coef) + 128.0) / 255.0
    return img.unsqueeze(1).clamp(0, 1)


def test_fd_design_picks_the_largest_sigma_frequencies():
    sigmas = torch.full((64,), 0.5, dtype=torch.float64)
    chosen = [1, 9, 17, 40, 63, 5, 28]  # deliberately not the low-frequency band
    sigmas[chosen] = torch.linspace(20, 10, len(chosen), dtype=torch.float64)
    images = _images_with_known_variances(sigmas)
    t = tables.fd_design(images, eps=2.0, n_sensitive=len(chosen) + 1)
    ones = set(torch.nonzero(t.flatten() == 1).flatten().tolist())
    # DC is constant (sigma 0) in these images, so the 8th pick is one of the sigma-0.5 frequencies
    assert set(chosen) <= ones and len(ones) == len(chosen) + 1
    assert torch.all(t.flatten()[[k for k in range(64) if k not in ones]] == math.ceil(16 * 2.0))


def test_fd_design_on_natural_like_images_keeps_low_frequencies():
    # smooth images concentrate variance at low frequencies, so the design recovers (mostly) the FD band
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8, generator=g), size=64, mode="bicubic",
                                        align_corners=False).clamp(0, 1)
    t = tables.fd_design(x, eps=2.5, n_sensitive=15)
    assert (t == 1).sum() == 15 and (t == 40).sum() == 49
    assert t[0, 0] == 1 and t[0, 1] == 1 and t[1, 0] == 1


def test_fd_design_errors():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="eps"):
        tables.fd_design(x, eps=0)
    with pytest.raises(ValueError, match="n_sensitive"):
        tables.fd_design(x, eps=2, n_sensitive=65)
    with pytest.raises(ValueError, match=r"\(N, 3 or 1, H, W\)"):
        tables.fd_design(torch.rand(3, 16, 16), eps=2)
    with pytest.raises(ValueError, match="H, W >= 8"):
        tables.fd_design(torch.rand(1, 3, 4, 16), eps=2)

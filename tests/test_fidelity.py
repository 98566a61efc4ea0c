"""Faithful to libjpeg-turbo: the pipeline against Pillow's save + load (issue 2, section 3)."""
import numpy as np
import pytest
import torch

import fdgpu

from ._helpers import pillow_roundtrip, psnr, to_tensor, to_uint8

pytest.importorskip("PIL")
SUBS = ["4:4:4", "4:2:2", "4:2:0"]


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_natural_images_psnr_bar(natural_images, subsampling):
    """The bar: natural images 0-49, mean PSNR against Pillow >= 48 dB at every quality and >= 50 dB at q75."""
    x = torch.stack([to_tensor(a) for a in natural_images])
    for q in (10, 25, 50, 75, 90, 95):
        y = fdgpu.jpeg(x, q, subsampling=subsampling)
        scores = [psnr(to_uint8(yi), pillow_roundtrip(a, q, subsampling)) for yi, a in zip(y, natural_images)]
        mean = float(np.mean(scores))
        assert mean >= (50.0 if q == 75 else 48.0), f"q{q} {subsampling}: mean PSNR {mean:.2f} dB"


@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (3, 5), (4, 4), (7, 6), (9, 17), (16, 17), (31, 6), (37, 53)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_noise_at_quality_100_matches_pillow_to_a_few_levels(subsampling, hw):
    """Noise at q100 exposes any error in padding, chroma rounding or upsampling at the edges; only the float vs
    integer (ISLOW) DCT remains, which moves a pixel by at most a few levels."""
    rng = np.random.default_rng(hash(hw) % 1000)
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    ours = to_uint8(fdgpu.jpeg(to_tensor(img), 100, subsampling=subsampling)).astype(int)
    ref = pillow_roundtrip(img, 100, subsampling).astype(int)
    diff = np.abs(ours - ref)
    assert diff.max() <= 4 and (diff == 0).mean() >= 0.55, (diff.max(), (diff == 0).mean())


@pytest.mark.parametrize("quality", [20, 75])
def test_grayscale_matches_pillow_L(quality):
    from skimage import data

    img = data.camera()[100:180, 50:163]  # 80 x 113 crop
    ours = to_uint8(fdgpu.jpeg(to_tensor(img), quality))
    assert psnr(ours, pillow_roundtrip(img, quality)) >= 48


@pytest.mark.parametrize("subsampling", SUBS)
def test_sample_photo_every_subsampling(subsampling):
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[::2, ::2][:197, :233])  # odd size
    ours = to_uint8(fdgpu.jpeg(to_tensor(img), 60, subsampling=subsampling))
    assert psnr(ours, pillow_roundtrip(img, 60, subsampling)) >= 48


def test_fd_tables_match_pillow_with_the_same_qtables():
    from skimage import data

    img = np.ascontiguousarray(data.chelsea()[:150, :200])
    for strength in (1, 2, 3):
        t = fdgpu.tables.fd(strength)
        qt = [t.int().flatten().tolist()] * 2
        ref = pillow_roundtrip(img, subsampling="4:2:0", qtables=qt)
        assert psnr(to_uint8(fdgpu.feature_distillation(to_tensor(img), strength)), ref) >= 48

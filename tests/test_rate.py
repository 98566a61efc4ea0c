"""fdgpu.rate: a differentiable estimate of jpeg_size in bits. gradcheck (float64) of its smooth parts with respect to
the image and the tables, the formula's pieces against their definitions, and its agreement with the exact sizes
(Spearman rank correlation) on photos x qualities x FD / random tables."""
import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import size as S

Image = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize("shape, subsampling", [((1, 3, 9, 10), "4:2:0"), ((2, 3, 17, 12), "4:2:2"),
                                                ((1, 1, 11, 9), "4:4:4")], ids=str)
def test_gradcheck_image(shape, subsampling):
    # the runs, ZRL/EOB counts and code tables are piecewise constant (the rounded quotients); random inputs sit away
    # from rounding boundaries, so finite differences see the smooth parts only
    torch.manual_seed(0)
    x = torch.rand(*shape, dtype=torch.float64, requires_grad=True)
    f = lambda x: S.rate(x, 60, subsampling=subsampling, validate=False)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradcheck_tables():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    lt = (torch.rand(2, 8, 8, dtype=torch.float64) * 30 + 2).requires_grad_()
    ct = (torch.rand(8, 8, dtype=torch.float64) * 30 + 2).requires_grad_()
    f = lambda lt, ct: S.rate(x, luma_table=lt, chroma_table=ct)  # noqa: E731
    assert torch.autograd.gradcheck(f, (lt, ct), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_quality_gradient_sign():
    # more quality, smaller steps, more bits
    x = torch.rand(2, 3, 24, 24)
    q = torch.tensor(50.0, requires_grad=True)
    fdgpu.rate(x, q).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad) and q.grad > 0


def test_pieces():
    z = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 3.0, -7.0], dtype=torch.float64)
    assert torch.equal(S.magnitude_bits(torch.tensor([0.0, 1.0, 3.0, -7.0, 255.0])),
                       torch.tensor([0.0, 1.0, 2.0, 3.0, 8.0]))
    nu = S.nonzero_weight(z)
    assert nu[0] == 0 and abs(float(nu[2]) - (1 - np.exp(-1))) < 1e-15 and bool((nu[3:] > 0.99).all())
    # derivatives as documented
    z.requires_grad_()
    (g,) = torch.autograd.grad(S.nonzero_weight(z).sum(), z)
    zd = z.detach()
    assert torch.allclose(g, 64 * zd ** 3 * torch.exp(-(2 * zd) ** 4), rtol=0, atol=1e-14)
    # code lengths interpolate linearly between integer sizes
    lengths = torch.tensor([2.0, 3, 3, 3, 3, 3, 4, 5, 6, 7, 8, 9])
    s = torch.tensor([0.0, 0.5, 5.25, 11.0, 12.0])
    assert torch.equal(S._lerp_lengths(lengths.expand(5, 12), s, 0, 11), torch.tensor([2.0, 2.5, 3.25, 9.0, 9.0]))


def test_close_to_jpeg_size_on_integers():
    # on an image whose quotients are exact integers of sizes 0, 1, 3, 7 (where the smooth category is exact) and
    # large enough that nu is 1, the estimate differs from the exact count only by stuffing and padding
    x = torch.full((1, 1, 8, 16), 128 / 255, dtype=torch.float64)
    bits = float(fdgpu.rate(x, luma_table=torch.ones(8, 8)))
    exact = 8 * int(fdgpu.jpeg_size(x, luma_table=torch.ones(8, 8)))
    assert 0 <= exact - bits < 8  # the last byte's padding


def test_spearman_against_jpeg_size(natural_images):
    stats = pytest.importorskip("scipy.stats")
    imgs = [a[:48, :64] for a in natural_images[:4]]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    rng = np.random.default_rng(5)
    settings = [{"quality": q} for q in (10, 50, 90)] + [{"luma_table": fdgpu.tables.fd(k)} for k in (1, 3)] + \
        [{"luma_table": torch.from_numpy(rng.integers(1, 80, (8, 8))).float()} for _ in range(2)]
    est, exact = [], []
    for kw in settings:
        est += fdgpu.rate(x, **kw).tolist()
        exact += (8 * fdgpu.jpeg_size(x, **kw)).tolist()
    rho = stats.spearmanr(est, exact).statistic
    assert rho >= 0.95, rho


def test_shapes_and_errors():
    assert fdgpu.rate(torch.rand(2, 2, 3, 8, 8), 50).shape == (2, 2)
    assert fdgpu.rate(torch.rand(3, 8, 8)).shape == ()
    assert fdgpu.rate(torch.rand(3, 8, 8, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="expected one of them"):
        fdgpu.rate(torch.rand(1, 3, 8, 8), 50, luma_table=torch.ones(8, 8))
    with pytest.raises(ValueError, match="luma_table: expected finite steps >= 1"):
        fdgpu.rate(torch.rand(1, 3, 8, 8), luma_table=torch.full((8, 8), 0.5))
    with pytest.raises(TypeError, match="optimize"):
        fdgpu.rate(torch.rand(1, 3, 8, 8), optimize="yes")

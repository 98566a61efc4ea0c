"""Tests of fdgpu.baselines: image quilting and TV minimisation as BPDA defences.

Most tests build a small patch database from synthetic images, so they run anywhere; the ones on real data use
the data roots of tests/_paths.py (``$FDGPU_DATA``, ../shared/data, ~/.cache/fdgpu/data) and skip with a reason
when none has CIFAR-10.
"""
import numpy as np
import pytest
import torch

import fdgpu.baselines as B
from fdgpu.baselines.data import load_cifar, synthetic_images
from fdgpu.baselines.quilting import _min_cut
from fdgpu.baselines.tvm import total_variation

from ._paths import data_missing, data_root_with

DATA = data_root_with("cifar10/train10k.npz")
CIFAR_TRAIN = DATA / "cifar10" / "train10k.npz" if DATA else None
CIFAR_TEST = DATA / "cifar10" / "test.npz" if DATA else None
needs_cifar = pytest.mark.skipif(not (DATA and CIFAR_TEST.is_file()), reason=data_missing("cifar10/train10k.npz"))


def images(n, size, seed=1, dtype=torch.float32):
    a = synthetic_images(n, size, seed=seed)
    return torch.from_numpy(a).permute(0, 3, 1, 2).to(dtype) / 255


@pytest.fixture(scope="module")
def db():
    return B.build_database(synthetic_images(40, 32, seed=0), n_patches=3000, seed=0)


@pytest.fixture(params=["quilting", "tvm"])
def defence(request, db):
    if request.param == "quilting":
        return B.make_defence("quilting", database=db, seed=0)
    return B.make_defence("tvm", seed=0)


# --- cardinality / smoke -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 7, 11), (3, 3, 33, 45), (1, 3, 2, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_shape_dtype_device_preserved(defence, shape, dtype):
    x = torch.rand(shape, dtype=dtype)
    y = defence(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_empty_batch(defence):
    x = torch.rand(0, 3, 16, 16)
    assert defence(x).shape == x.shape


def test_tvm_grayscale():
    x = torch.rand(2, 1, 20, 20)
    assert B.make_defence("tvm")(x).shape == x.shape


# --- determinism and BPDA --------------------------------------------------------------------------------------------

def test_deterministic_for_a_seed(db):
    x = images(2, 32)
    for name, kw in (("quilting", {"database": db}), ("tvm", {})):
        a, b = B.make_defence(name, seed=123, **kw), B.make_defence(name, seed=123, **kw)
        ya1, ya2 = a(x), a(x)
        yb1, yb2 = b(x), b(x)
        assert torch.equal(ya1, yb1) and torch.equal(ya2, yb2), name
        assert not torch.equal(ya1, ya2), f"{name}: successive calls should draw new randomness (for EOT)"
        assert torch.equal(a(x, seed=7), b(x, seed=7)), name


def test_bpda_backward_is_identity(defence):
    x = images(2, 16, dtype=torch.float64).requires_grad_()
    y = defence(x)
    g = torch.randn_like(y)
    y.backward(g)
    assert torch.equal(x.grad, g)


# --- quilting feature tests -------------------------------------------------------------------------------------------

def test_min_cut_follows_zero_error_path():
    err = np.ones((6, 3))
    path = [0, 1, 2, 2, 1, 0]
    err[np.arange(6), path] = 0
    assert _min_cut(err).tolist() == path
    # the path may not jump by more than one position per line
    err = np.ones((3, 3))
    err[0, 0], err[1, 2], err[2, 2] = 0, 0, 0
    cut = _min_cut(err)
    assert np.all(np.abs(np.diff(cut)) <= 1)


def test_quilting_output_patches_come_from_database(db):
    """Every output pixel is the pixel at the right offset of one of the (at most 4) chosen database patches that
    cover it; pixels no other patch covers equal the chosen patch exactly; choices are among the k nearest."""
    x = images(3, 23, seed=5).permute(0, 2, 3, 1).numpy()
    k = 10
    out, choice, (hp, wp) = B.quilt(x, db, k=k, rng=np.random.default_rng(0), return_choice=True)
    p, o = db.patch_size, 2
    s = p - o
    patches = db.patches.astype(np.float32) / 255
    n, ny, nx = choice.shape
    assert (ny, nx) == ((hp - p) // s + 1, (wp - p) // s + 1) and hp >= 23 and wp >= 23
    h, w = out.shape[1:3]
    for b in range(n):
        for r in range(h):
            for c in range(w):
                cands = [patches[choice[b, i, j], r - i * s, c - j * s]
                         for i in range(ny) if 0 <= r - i * s < p for j in range(nx) if 0 <= c - j * s < p]
                assert any(np.array_equal(out[b, r, c], v) for v in cands), (b, r, c)
                if len(cands) == 1:
                    np.testing.assert_array_equal(out[b, r, c], cands[0])
    # the chosen patch of each position is among the k nearest (PCA space, brute force)
    xp = np.pad(x, ((0, 0), (0, hp - 23), (0, wp - 23), (0, 0)), mode="edge")
    proj_db = db.project(patches.reshape(len(db), -1))
    for b, i, j in [(0, 0, 0), (1, 3, 5), (2, ny - 1, nx - 1)]:
        q = db.project(xp[b, i * s:i * s + p, j * s:j * s + p].reshape(1, -1))
        d = ((proj_db - q) ** 2).sum(1)
        assert d[choice[b, i, j]] <= np.sort(d)[k - 1] * (1 + 1e-4) + 1e-6


def test_quilting_database_cache_roundtrip(db, tmp_path):
    path = tmp_path / "db.npz"
    imgs = synthetic_images(10, 32, seed=3)
    built = B.build_database(imgs, n_patches=500, seed=1, cache=path)
    assert path.is_file()
    loaded = B.build_database(imgs, n_patches=500, seed=1, cache=path)
    np.testing.assert_array_equal(built.patches, loaded.patches)
    x = images(1, 16)
    assert torch.equal(B.Quilting(built, seed=0)(x), B.Quilting(loaded, seed=0)(x))
    with pytest.raises(ValueError, match="expected 999"):
        B.build_database(imgs, n_patches=999, cache=path)


def test_quilting_database_cache_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    import fdgpu.files
    from fdgpu.files import WriteError

    def full(fd, data):
        os.write(fd, bytes(memoryview(data)[:100]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fdgpu.files, "_write_all", full)
    with pytest.raises(WriteError, match=r"cannot write .*db\.npz: No space left on device"):
        B.build_database(synthetic_images(4, 32, seed=3), n_patches=200, seed=1, cache=tmp_path / "db.npz")
    assert list(tmp_path.iterdir()) == []  # before: a partial db.npz.tmp.npz


@needs_cifar
def test_quilting_on_cifar_keeps_the_image():
    db = B.build_database(load_cifar(CIFAR_TRAIN, 2000), n_patches=20000, seed=0)
    x = torch.from_numpy(load_cifar(CIFAR_TEST, 4)).permute(0, 3, 1, 2).float() / 255
    y = B.Quilting(db, seed=0)(x)
    psnr = -10 * torch.log10(((y - x) ** 2).mean())
    assert psnr > 18, f"quilted CIFAR images should stay recognisable, got PSNR {psnr:.1f} dB"


# --- TVM feature tests ------------------------------------------------------------------------------------------------

def test_tvm_reduces_tv_and_fills_dropped_pixels():
    clean = images(2, 32, seed=9).permute(0, 2, 3, 1).numpy()
    noisy = np.clip(clean + 0.05 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1).astype(np.float32)
    out, mask = B.tvm(noisy, rng=np.random.default_rng(0), return_mask=True)
    assert 0.4 < mask.mean() < 0.6
    assert total_variation(out) < 0.5 * total_variation(noisy)
    dropped = ~mask
    # dropped values are reconstructed from their neighbours: close to the clean image, far from zero-filling
    err = np.abs(out - clean)[dropped].mean()
    assert err < 0.06, err
    assert err < 0.3 * np.abs(clean)[dropped].mean()


def test_tvm_keep_all_is_plain_tv_denoising():
    from skimage.restoration import denoise_tv_chambolle

    x = images(1, 24).permute(0, 2, 3, 1).numpy()
    out = B.tvm(x, keep_prob=1.0, rng=0, n_iter=1)
    ref = denoise_tv_chambolle(x[0], weight=0.03, channel_axis=-1)
    np.testing.assert_allclose(out[0], np.clip(ref, 0, 1), atol=1e-5)


# --- exceptions -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, err, match", [
    (torch.rand(3, 16, 16), ValueError, "expected a 4-D tensor"),
    ((torch.rand(1, 3, 8, 8) * 255).to(torch.uint8), TypeError, r"x.float\(\) / 255"),
    (torch.rand(1, 3, 8, 8) * 2, ValueError, r"expected values in \[0, 1\]"),
    (torch.full((1, 3, 8, 8), float("nan")), ValueError, "NaN"),
    (np.zeros((1, 3, 8, 8), np.float32), TypeError, "expected a torch.Tensor"),
], ids=["3d", "uint8", "range", "nan", "numpy"])
def test_bad_input(defence, x, err, match):
    with pytest.raises(err, match=match):
        defence(x)


def test_bad_arguments(db, monkeypatch):
    with pytest.raises(ValueError, match="expected 3 channels"):
        B.Quilting(db)(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="expected a name in"):
        B.make_defence("median")
    with pytest.raises(ValueError, match="keep_prob"):
        B.make_defence("tvm", keep_prob=0)
    with pytest.raises(ValueError, match="1 <= k <="):
        B.Quilting(db, k=0)
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="FDGPU_DATA"):
        B.make_defence("quilting")


def test_database_from_data_paths(tmp_path, monkeypatch):
    """A CIFAR-style .npz, a folder of photos and a data root from FDGPU_DATA all build a database."""
    from PIL import Image

    imgs = synthetic_images(6, 32, seed=4)
    np.savez(tmp_path / "train.npz", x=imgs, y=np.zeros(6, np.int64))
    db = B.database_from_data(tmp_path / "train.npz", n_patches=200)
    assert len(db) == 200 and db.meta["source"].endswith("train.npz")
    photos = tmp_path / "root" / "natural"
    photos.mkdir(parents=True)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(photos / f"{i:02d}.png")
    monkeypatch.setenv("FDGPU_DATA", str(tmp_path / "root"))
    q = B.make_defence("quilting", source="natural", n_patches=300, seed=1)
    assert len(q.database) == 300 and "natural" in q.database.meta["source"]
    assert q(torch.rand(1, 3, 12, 12)).shape == (1, 3, 12, 12)


def test_quilting_ivf_index():
    db = B.build_database(synthetic_images(20, 32, seed=2), n_patches=4000, index_kind="ivf", nprobe=4)
    y = B.Quilting(db, seed=0)(images(1, 20))
    assert y.shape == (1, 3, 20, 20)
    with pytest.raises(ValueError, match="'flat' or 'ivf'"):
        B.build_database(synthetic_images(2, 16), n_patches=100, index_kind="hnsw")

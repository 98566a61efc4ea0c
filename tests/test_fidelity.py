"""Bit-exact to libjpeg-turbo: the forward equals Pillow's decode of Pillow's encode, and simplejpeg's, converted as a
user converts decoded images (``uint8.to(dtype) / 255``), value for value (``torch.equal``, no tolerance).

Design (every listed case covered, ~10-20 s on 2 quiet cores): natural images 0-99 (../shared/data/natural,
299x299). For each subsampling (4:4:4, 4:2:2, 4:2:0, grayscale) and each quality q in {1, 2, 5, 10, 25, 50, 75,
90, 95, 99, 100} (index i), one batch of 10 images, numbers ``10 i .. 10 i + 9`` (mod 100): the 11 batches of a
subsampling use every image 0-99. Each batch is compared at every size: 300x217 (the image resized, W x H), and
37x53, 5x3, 1x1 crops taken at a different place in each image. Tables from qualities go through Pillow's
``quality=``; FD tables (strength 1, 2, 3), random tables (shared, and one per image as a ``(N, 8, 8)`` tensor)
go through ``qtables=``. Uniform noise at q1 and q100 on odd sizes exercises edge padding, chroma rounding and
the IDCT range limit. simplejpeg (another build of libjpeg-turbo, ``fastdct=False, fastupsample=False``) decodes
Pillow's files to the same bits at every subsampling.
"""

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import reference, tables

from ._helpers import pillow_encode, pillow_roundtrip, to_tensor

Image = pytest.importorskip("PIL.Image")

QUALITIES = [1, 2, 5, 10, 25, 50, 75, 90, 95, 99, 100]
SUBS = ["4:4:4", "4:2:2", "4:2:0", "gray"]
SIZES = [(300, 217), (37, 53), (5, 3), (1, 1)]  # W x H
BATCH = 10


@pytest.fixture(scope="module")
def natural100(data_dir):
    """Natural photos 0..99 (sorted by name), uint8 HWC RGB."""
    files = sorted((data_dir / "natural").glob("*.png"))[:100]
    if len(files) < 100:
        pytest.skip(f"expected >= 100 natural images in {data_dir / 'natural'}, found {len(files)}")
    return [np.asarray(Image.open(f).convert("RGB")).copy() for f in files]


def _views(img: np.ndarray, size, k: int, gray: bool) -> np.ndarray:
    """``img`` at ``size`` (W, H): resized when larger than a crop can be, else cropped at an offset set by k."""
    w, h = size
    im = Image.fromarray(img)
    if gray:
        im = im.convert("L")
    if w > img.shape[1] or h > img.shape[0] or (w, h) == (300, 217):
        return np.asarray(im.resize((w, h), Image.BICUBIC)).copy()
    a = np.asarray(im)
    oy, ox = (37 * k) % (a.shape[0] - h + 1), (53 * k) % (a.shape[1] - w + 1)
    return np.ascontiguousarray(a[oy: oy + h, ox: ox + w])


def _ours(arrays, luma, chroma, sub):
    x = torch.stack([to_tensor(a) for a in arrays])
    return reference.forward(x, luma, chroma, "4:2:0" if sub == "gray" else sub)[0]


def _as_user(levels: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` or ``(N, H, W)`` -> ``(N, C, H, W)`` as a user converts decoded images:
    ``.to(dtype) / 255`` (the values our outputs must equal, bit for bit)."""
    t = levels.to(dtype) / 255
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)


def _pillow(arrays, sub, quality=None, qtables=None):
    outs = []
    for i, a in enumerate(arrays):
        qt = qtables(i) if callable(qtables) else qtables
        outs.append(pillow_roundtrip(a, quality, "4:2:0" if sub == "gray" else sub, qt))
    return torch.from_numpy(np.stack(outs))


def _assert_user_equal(ours: torch.Tensor, levels: torch.Tensor, what: str) -> None:
    """``ours`` equals the decoded ``levels`` converted as a user would; else say how far off (in levels)."""
    ref = _as_user(levels, ours.dtype)
    if not torch.equal(ours, ref):
        d = (ours.double() - ref.double()).abs()
        raise AssertionError(f"{what}: {int((d > 0).sum())} of {d.numel()} values differ, max "
                             f"{float(d.max()) * 255:.3g} levels")


@pytest.mark.parametrize("sub", SUBS)
def test_natural_images_equal_pillow_at_every_quality_and_size(natural100, sub):
    for i, q in enumerate(QUALITIES):
        idx = [(BATCH * i + k) % 100 for k in range(BATCH)]
        luma, chroma = tables.ijg(q)
        for size in SIZES:
            arrays = [_views(natural100[j], size, j, sub == "gray") for j in idx]
            ours, ref = _ours(arrays, luma, chroma, sub), _pillow(arrays, sub, quality=q)
            _assert_user_equal(ours, ref, f"{sub} q{q} {size[0]}x{size[1]}")


@pytest.mark.parametrize("sub", SUBS)
def test_fd_and_random_tables_equal_pillow_qtables(natural100, sub):
    """FD(1x, 2x, 3x) tables, random tables shared by the batch and random per-image ``(N, 8, 8)`` tables, passed
    to Pillow as ``qtables`` (natural order: Pillow's qtables take a flat list in natural order)."""
    g = torch.Generator().manual_seed(SUBS.index(sub))
    cases = [(f"FD {s}x", tables.fd(s), tables.fd(s)) for s in (1, 2, 3)]
    cases.append(("random", torch.randint(1, 256, (8, 8), generator=g).float(),
                  torch.randint(1, 256, (8, 8), generator=g).float()))
    cases.append(("random per image", torch.randint(1, 256, (BATCH, 8, 8), generator=g).float(),
                  torch.randint(1, 256, (BATCH, 8, 8), generator=g).float()))
    for n, (name, lt, ct) in enumerate(cases):
        idx = [(17 * n + 7 * k) % 100 for k in range(BATCH)]

        def qt(i, lt=lt, ct=ct):
            li, ci = (lt[i], ct[i]) if lt.dim() == 3 else (lt, ct)
            return [li.int().flatten().tolist()] if sub == "gray" else [li.int().flatten().tolist(),
                                                                        ci.int().flatten().tolist()]
        for size in [(300, 217), (37, 53)]:
            arrays = [_views(natural100[j], size, j + n, sub == "gray") for j in idx]
            ours, ref = _ours(arrays, lt, ct, sub), _pillow(arrays, sub, qtables=qt)
            _assert_user_equal(ours, ref, f"{sub} {name} {size[0]}x{size[1]}")


@pytest.mark.parametrize("sub", SUBS)
@pytest.mark.parametrize("quality", [1, 100])
def test_noise_equals_pillow(sub, quality):
    """Uniform noise: every edge-padding, chroma-rounding and range-limit case on small odd sizes."""
    rng = np.random.default_rng(quality)
    for hw in [(1, 1), (2, 3), (3, 5), (4, 4), (7, 6), (9, 17), (16, 17), (31, 6), (37, 53)]:
        shape = (BATCH,) + hw + (() if sub == "gray" else (3,))
        arrays = list(rng.integers(0, 256, shape, dtype=np.uint8))
        luma, chroma = tables.ijg(quality)
        ours, ref = _ours(arrays, luma, chroma, sub), _pillow(arrays, sub, quality=quality)
        _assert_user_equal(ours, ref, f"{sub} q{quality} {hw}")


@pytest.mark.parametrize("sub", SUBS)
def test_simplejpeg_decoder_gives_the_same_bits(natural100, sub):
    """A second libjpeg-turbo binding (simplejpeg, its own build of the library), accurate IDCT and fancy upsampling,
    decodes Pillow's files to our values: the equality is libjpeg-turbo's, not Pillow's. (simplejpeg's *encoder*
    cannot be the witness: in simplejpeg 1.9 / libjpeg-turbo 3.1.2, ``fastdct=False`` and ``True`` write identical
    files, which differ from the accurate-DCT encode, i.e. TurboJPEG's compressor default, the fast DCT, is used.)"""
    simplejpeg = pytest.importorskip("simplejpeg")
    for i, q in enumerate([5, 50, 90, 100]):
        luma, chroma = tables.ijg(q)
        for size in [(300, 217), (37, 53), (5, 3)]:
            arrays = [_views(natural100[(25 * i + k) % 100], size, k, sub == "gray") for k in range(5)]
            refs = []
            for a in arrays:
                out = simplejpeg.decode_jpeg(pillow_encode(a, q, "4:2:0" if sub == "gray" else sub),
                                             colorspace="GRAY" if sub == "gray" else "RGB",
                                             fastdct=False, fastupsample=False)
                refs.append(out[..., 0] if sub == "gray" else out)
            ours, ref = _ours(arrays, luma, chroma, sub), torch.from_numpy(np.stack(refs))
            _assert_user_equal(ours, ref, f"simplejpeg {sub} q{q} {size[0]}x{size[1]}")


def test_public_api_equals_pillow_float64_and_batch_shapes(natural100):
    """Through ``fdgpu.jpeg`` / ``fdgpu.feature_distillation``, float32 and float64, with extra batch dims."""
    arrays = [_views(natural100[j], (37, 53), j, False) for j in range(6)]
    x = torch.stack([to_tensor(a) for a in arrays]).view(2, 3, 3, 53, 37)
    ref = _pillow(arrays, "4:2:0", quality=60)
    for dtype in (torch.float32, torch.float64):
        y = fdgpu.jpeg(x.to(dtype), 60).view(6, 3, 53, 37)
        _assert_user_equal(y, ref, str(dtype))
    qt = [tables.fd(2).int().flatten().tolist()] * 2
    ref = _pillow(arrays, "4:2:2", qtables=qt)
    y = fdgpu.feature_distillation(x, 2, subsampling="4:2:2").view(6, 3, 53, 37)
    _assert_user_equal(y, ref, "feature_distillation 4:2:2")


def test_sample_photos_from_skimage_equal_pillow():
    """Two photos outside the shared data (scikit-image's), odd crops, colour and grayscale."""
    data = pytest.importorskip("skimage.data")
    rgb = np.ascontiguousarray(data.astronaut()[::2, ::2][:197, :233])
    gray = np.ascontiguousarray(data.camera()[100:180, 50:163])
    for sub in ("4:4:4", "4:2:2", "4:2:0"):
        ours = fdgpu.jpeg(to_tensor(rgb), 60, subsampling=sub)
        assert torch.equal(ours, to_tensor(pillow_roundtrip(rgb, 60, sub))), sub
    for q in (20, 75):
        assert torch.equal(fdgpu.jpeg(to_tensor(gray), q), to_tensor(pillow_roundtrip(gray, q))), q



def _every_level(channels: int) -> np.ndarray:
    """A 128x128 image of 256 flat 8x8 blocks, block k at level k (grey in colour): at quality 100 (every step 1)
    libjpeg-turbo decodes each block to its level, so the output holds all 256 levels."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16).repeat(8, 0).repeat(8, 1)
    return levels if channels == 1 else np.ascontiguousarray(np.repeat(levels[..., None], 3, -1))


EVERY_LEVEL_CASES = [(dtype, backend, channels)
                     for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
                     for backend in ("auto", "torch-ops", "triton") for channels in (3, 1)]


@pytest.mark.parametrize("dtype,backend,channels", EVERY_LEVEL_CASES,
                         ids=[f"{str(d)[6:]}-{b}-c{c}" for d, b, c in EVERY_LEVEL_CASES])
def test_every_level_equals_levels_over_255_in_every_dtype(dtype, backend, channels):
    """All 256 output levels, per dtype and backend (the C library, the torch ops, the Triton kernels), equal
    ``pillow_uint8.to(dtype) / 255`` exactly: the output is k / 255 correctly rounded, not k * (1 / 255) (one ulp
    off for 126 of the 256 levels in float32)."""
    img = _every_level(channels)
    pil = pillow_roundtrip(img, 100, "4:2:0")
    assert np.array_equal(pil, img)  # the oracle: Pillow keeps every level of this image
    x = to_tensor(img).unsqueeze(0).to(dtype)
    if backend == "torch-ops":
        y = reference.forward(x.to(torch.float64 if dtype == torch.float64 else torch.float32),
                              *tables.ijg(100), "4:2:0")[0].to(dtype)
    else:
        if backend == "triton":  # (the kernels compute in float32 whatever x's dtype)
            pytest.importorskip("triton")
            x = x.cuda() if torch.cuda.is_available() else x  # else TRITON_INTERPRET=1 (conftest) runs them on CPU
        y = fdgpu.jpeg(x, 100, backend=backend).cpu()
    assert y.dtype == dtype
    _assert_user_equal(y, torch.from_numpy(pil.copy()).unsqueeze(0), f"{dtype} {backend}")

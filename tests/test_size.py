"""fdgpu.jpeg_size: equal to len() of the file Pillow (libjpeg-turbo) writes with the same settings, on both
backends (the compiled C coder and torch); the standard Huffman tables against the ones in Pillow's files; errors."""
import io

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu import size as S
from fdgpu.choices import PIL_SUBSAMPLING

Image = pytest.importorskip("PIL.Image")

BACKENDS = ("cpu", "torch")


def pillow_size(img: np.ndarray, quality=None, qtables=None, subsampling="4:2:0", optimize=False) -> int:
    kw = {"optimize": optimize}
    kw.update({"qtables": qtables} if qtables is not None else {"quality": quality})
    if img.ndim == 3:
        kw["subsampling"] = PIL_SUBSAMPLING[subsampling]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", **kw)
    return len(buf.getvalue())


def as_x(imgs) -> torch.Tensor:
    x = torch.from_numpy(np.stack(imgs)).float().div_(255)
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x[:, None]


def as_qtables(t: torch.Tensor):
    return [int(v) for v in t.flatten()]


def random_images(rng, n, shape):
    """Half noise, half smooth (a random walk down the rows): long zero runs (ZRL, EOB) and dense blocks."""
    out = []
    for i in range(n):
        if i % 2:
            out.append(rng.integers(0, 256, shape, dtype=np.uint8))
        else:
            out.append((128 + np.cumsum(rng.integers(-4, 5, shape), axis=0)).clip(0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def c_available():
    from fdgpu.backends import entropy as c_entropy

    if c_entropy.library() is None:
        pytest.skip(f"compiled entropy coder: {c_entropy.status()}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_natural_photos_qualities(backend, natural_images, c_available):
    # a seeded sample of photos 0-49 and qualities 1-100 (the full grid would take minutes); 4:2:0, Pillow's default
    # (the torch coder, ~30x slower on a CPU, gets two crops of 127x161 at three of the qualities)
    rng = np.random.default_rng(21)
    idx = rng.choice(len(natural_images), 6, replace=False)
    qualities = [1, 100] + rng.choice(np.arange(2, 100), 4, replace=False).tolist()
    imgs = [natural_images[i] for i in idx]
    if backend == "torch":
        imgs, qualities = [a[:127, :161] for a in imgs[:2]], qualities[1:4]
    x = as_x(imgs)
    for q in qualities:
        for optimize in (False, True):
            got = fdgpu.jpeg_size(x, q, optimize=optimize, backend=backend).tolist()
            assert got == [pillow_size(a, q, optimize=optimize) for a in imgs], (q, optimize)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("subsampling", list(fdgpu.SUBSAMPLINGS))
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (9, 25), (40, 23), (16, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_odd_sizes_every_subsampling(backend, subsampling, shape, c_available):
    # dummy blocks at the right and bottom of the last MCUs, one-block images, sizes that are whole MCUs
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    imgs = random_images(rng, 4, shape + (3,))
    x = as_x(imgs)
    for q, optimize in ((5, False), (75, True), (97, False)):
        got = fdgpu.jpeg_size(x, q, subsampling=subsampling, optimize=optimize, backend=backend).tolist()
        assert got == [pillow_size(a, q, subsampling=subsampling, optimize=optimize) for a in imgs]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (24, 8)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_grayscale(backend, shape, c_available):
    rng = np.random.default_rng(7)
    imgs = random_images(rng, 4, shape)
    x = as_x(imgs)
    for q, optimize in ((30, False), (90, True)):
        got = fdgpu.jpeg_size(x, q, optimize=optimize, backend=backend).tolist()
        assert got == [pillow_size(a, q, optimize=optimize) for a in imgs]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fd_and_random_tables(backend, natural_images, c_available):
    imgs = [a[:61, :77] for a in natural_images[:4]]  # odd crops keep it fast
    x = as_x(imgs)
    for strength in (1, 2, 3):
        for variant in fdgpu.tables.FD_VARIANTS:
            t = fdgpu.tables.fd(strength, variant=variant)
            got = fdgpu.jpeg_size(x, luma_table=t, backend=backend).tolist()
            assert got == [pillow_size(a, qtables=[as_qtables(t)] * 2) for a in imgs], (strength, variant)
    # per-image random tables, with steps above 255 (written as 16-bit DQT entries) and optimal Huffman tables
    rng = np.random.default_rng(3)
    lt = torch.from_numpy(rng.integers(1, 400, (4, 8, 8))).double()
    ct = torch.from_numpy(rng.integers(1, 120, (4, 8, 8))).double()
    for optimize in (False, True):
        got = fdgpu.jpeg_size(x, luma_table=lt, chroma_table=ct, subsampling="4:2:2", optimize=optimize,
                              backend=backend).tolist()
        want = [pillow_size(a, qtables=[as_qtables(lt[i]), as_qtables(ct[i])], subsampling="4:2:2",
                            optimize=optimize) for i, a in enumerate(imgs)]
        assert got == want, optimize


def test_backends_agree_per_image_quality(c_available):
    rng = np.random.default_rng(11)
    imgs = random_images(rng, 6, (23, 31, 3))
    x = as_x(imgs)
    q = torch.tensor([1, 12, 50, 51, 88, 100])
    a = fdgpu.jpeg_size(x, q, optimize=True, backend="cpu")
    b = fdgpu.jpeg_size(x, q, optimize=True, backend="torch")
    assert torch.equal(a, b)
    assert a.tolist() == [pillow_size(img, int(qi), optimize=True) for img, qi in zip(imgs, q)]


def _dht_segments(data: bytes):
    """{(table id, class): (counts per length, symbols)} of a JPEG file's DHT segments."""
    out, i = {}, 2
    while data[i + 1] != 0xDA:
        length = data[i + 2] * 256 + data[i + 3]
        if data[i + 1] == 0xC4:
            seg = data[i + 4:i + 2 + length]
            out[(seg[0] & 15, seg[0] >> 4)] = (list(seg[1:17]), list(seg[17:]))
        i += 2 + length
    return out


def test_standard_tables_are_pillows():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    seen = _dht_segments(buf.getvalue())
    assert seen == {k: (list(b), list(v)) for k, (b, v) in S._STD.items()}


def test_optimal_table_length_limit():
    # Fibonacci counts give a Huffman tree 30 deep: libjpeg's adjustment brings every code to <= 16 bits, keeps
    # one code per symbol and leaves the all-ones code free (Kraft's sum below 1)
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    freq = [0] * 256
    for s, f in enumerate(fib):
        freq[s] = f
    bits, vals = S.optimal_table(freq)
    assert len(vals) == 30 and sum(bits) == 30 and len(bits) == 16
    assert sum(b * 2.0 ** -(i + 1) for i, b in enumerate(bits)) < 1
    assert bits[15] > 0  # the tree was cut at 16, not left shorter


def test_deep_tables_both_backends(c_available):
    # coefficients with Fibonacci-like symbol counts (magnitude category s in AC position s, in 2**k blocks):
    # optimal tables hit the 16-bit limit; the C coder and the torch one must agree on bytes and symbol counts
    from fdgpu.backends import entropy as c_entropy

    rows = 64
    y = torch.zeros(1, rows, rows, 8, 8, dtype=torch.int16)
    flat = y.view(-1, 64)
    fib = [1, 2]
    while sum(fib) < rows * rows:
        fib.append(fib[-1] + fib[-2])
    start = 0
    for k, f in enumerate(reversed(fib)):
        stop = min(start + f, rows * rows)
        flat[start:stop, 1 + k % 63] = 1 + k // 63 * 3
        start = stop
    for optimize in (False, True):
        a = c_entropy.sizes(y, None, None, rows, rows, 1, 1, optimize)
        b = S._entropy_torch([y], rows, rows, 1, 1, optimize)
        assert torch.equal(a, b), optimize


def test_triton_backend_uses_torch_coder():
    # the Triton kernels do not return the quotients: the torch reference computes them, the torch coder codes them
    pytest.importorskip("triton")
    from fdgpu import backends

    if not backends.REGISTRY["triton"].available():
        pytest.skip(f"triton backend: {backends.REGISTRY['triton'].unavailable()}")
    rng = np.random.default_rng(2)
    imgs = random_images(rng, 2, (13, 21, 3))
    x = as_x(imgs)
    try:
        got = fdgpu.jpeg_size(x, 40, backend="triton").tolist()
    except ValueError as e:  # a CPU tensor without TRITON_INTERPRET=1
        pytest.skip(str(e))
    assert got == [pillow_size(a, 40) for a in imgs]


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_input_is_read_in_place(backend, c_available):
    # channels-last batches (an NHWC array seen as NCHW), crops and column-strided views: the C library reads them
    # through their strides; the sizes are Pillow's of the same pixels
    rng = np.random.default_rng(7)
    imgs = random_images(rng, 3, (37, 90, 3))
    nhwc = torch.from_numpy(np.stack(imgs)).float().div_(255)
    views = {
        "channels-last": (nhwc.permute(0, 3, 1, 2), imgs),
        "crop": (nhwc.permute(0, 3, 1, 2)[:, :, 3:30, 5:71], [a[3:30, 5:71] for a in imgs]),
        "every other column": (as_x(imgs)[..., ::2], [a[:, ::2] for a in imgs]),
        "grayscale column view": (as_x([a[..., 0] for a in imgs])[..., 1::3], [a[:, 1::3, 0] for a in imgs]),
    }
    for name, (x, want_imgs) in views.items():
        assert not x.is_contiguous(), name
        for optimize in (False, True):
            got = fdgpu.jpeg_size(x, 65, optimize=optimize, backend=backend).tolist()
            assert got == [pillow_size(np.ascontiguousarray(a), 65, optimize=optimize) for a in want_imgs], name


def test_shapes_and_devices():
    x = torch.rand(2, 3, 3, 9, 10)
    out = fdgpu.jpeg_size(x, 50)
    assert out.shape == (2, 3) and out.dtype == torch.int64
    assert fdgpu.jpeg_size(torch.rand(3, 9, 10), 50).shape == ()
    assert fdgpu.jpeg_size(torch.rand(0, 3, 9, 10), 50).shape == (0,)
    # no tables and no quality: Pillow's default quality 75
    assert torch.equal(fdgpu.jpeg_size(x), fdgpu.jpeg_size(x, 75))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"quality": 50.5}, ValueError, "quality: expected integer qualities"),
    ({"quality": 0}, ValueError, "quality: expected values in"),
    ({"quality": 50, "luma_table": torch.ones(8, 8)}, ValueError, "expected one of them"),
    ({"luma_table": torch.full((8, 8), 1.5)}, ValueError, "luma_table: expected integer steps"),
    ({"luma_table": torch.full((8, 8), 40000.0)}, ValueError, "luma_table: expected integer steps 1..32767"),
    ({"luma_table": torch.zeros(8, 8)}, ValueError, "luma_table: expected finite steps >= 1"),
    ({"chroma_table": torch.ones(8, 8)}, ValueError, "chroma_table: expected luma_table too"),
    ({"backend": "gpu"}, ValueError, "backend"),
    ({"subsampling": "4:1:1"}, ValueError, "subsampling"),
    ({"optimize": 1}, TypeError, "optimize: expected True or False"),
])
def test_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fdgpu.jpeg_size(torch.rand(1, 3, 8, 8), **kwargs)


def test_value_errors():
    with pytest.raises(ValueError, match="x:"):
        fdgpu.jpeg_size(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(TypeError, match="x:"):
        fdgpu.jpeg_size(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_c_entry_checks_arguments(c_available):
    from fdgpu.backends import entropy as c_entropy

    y = torch.zeros(1, 2, 2, 8, 8, dtype=torch.int16)
    # a luma grid that is not the real blocks rounded up to whole MCUs, and a chroma grid of the wrong size
    with pytest.raises(RuntimeError, match="rejected its arguments"):
        c_entropy.sizes(y, None, None, 1, 1, 1, 1, False)
    c = torch.zeros(1, 2, 2, 8, 8, dtype=torch.int16)
    with pytest.raises(RuntimeError, match="rejected its arguments"):
        c_entropy.sizes(y, c, c, 2, 2, 2, 2, False)
    # a coefficient no 8-bit image gives
    y[0, 0, 0, 0, 1] = 2000
    with pytest.raises(ValueError, match="outside baseline JPEG's range"):
        c_entropy.sizes(y[:, :1, :1], None, None, 1, 1, 1, 1, False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_coefficients_input(backend, c_available):
    # the file holding fdgpu.encode's coefficients is the file of the images they came from
    rng = np.random.default_rng(4)
    for shape in ((17, 33, 3), (9, 8, 3), (13, 21)):
        imgs = random_images(rng, 2, shape)
        x = as_x(imgs)
        for subsampling in fdgpu.SUBSAMPLINGS:
            c = fdgpu.encode(x, 60, subsampling=subsampling)
            for optimize in (False, True):
                got = fdgpu.jpeg_size(c, optimize=optimize, backend=backend)
                assert got.tolist() == [pillow_size(a, 60, subsampling=subsampling, optimize=optimize) for a in imgs]


def test_files_read_back(c_available):
    # a Pillow file's own coefficients and tables (read by jpeglib, an independent reader) give its length
    pytest.importorskip("jpeglib")
    rng = np.random.default_rng(6)
    for shape in ((17, 33, 3), (40, 23, 3), (33, 17)):
        img = random_images(rng, 1, shape)[0]
        for subsampling, q, optimize in (("4:2:0", 20, False), ("4:2:2", 90, True), ("4:4:4", 55, False)):
            buf = io.BytesIO()
            kw = {"subsampling": PIL_SUBSAMPLING[subsampling]} if img.ndim == 3 else {}
            Image.fromarray(img).save(buf, "JPEG", quality=q, optimize=optimize, **kw)
            c = fdgpu.io.read_jpeg(buf.getvalue())
            assert int(fdgpu.jpeg_size(c, optimize=optimize)[0]) == len(buf.getvalue())


def test_coefficients_errors():
    c = fdgpu.encode(torch.rand(1, 3, 8, 8), 50)
    with pytest.raises(ValueError, match="expected none of them with Coefficients"):
        fdgpu.jpeg_size(c, 50)
    with pytest.raises(ValueError, match="color 'ycbcr' or 'gray'"):
        fdgpu.jpeg_size(fdgpu.encode(torch.rand(1, 3, 8, 8), 50, color="rgb"))

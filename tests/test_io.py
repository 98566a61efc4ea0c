"""fdgpu.io: read_jpeg gives a file's own coefficients, and fdgpu.decode of them is Pillow's decoding of the file,
bit for bit, for the files Pillow, simplejpeg and jpeglib's libjpeg builds (libjpeg-turbo, mozjpeg) write;
write_jpeg writes baseline files that read back equal and that Pillow decodes to fdgpu.decode's pixels; every file
fdgpu cannot decode exactly gets an error naming what it is."""
import io

import numpy as np
import pytest
import torch

import fdgpu

pytest.importorskip("jpeglib", reason="jpeglib (the 'jpeg' extra: pip install 'fdgpu[jpeg]') reads and writes "
                                      "JPEG coefficients")
Image = pytest.importorskip("PIL.Image", reason="Pillow is the oracle")

from ._helpers import PIL_SUBSAMPLING  # noqa: E402

SUBS = list(fdgpu.SUBSAMPLINGS)


def _image(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth(shape, seed):
    """A natural-looking image (smooth gradients + noise): many nonzero and many zero AC coefficients."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = [128 + 100 * np.sin(xx / (3 + k) + yy / (5 + 2 * k) + k) for k in range(shape[2] if len(shape) == 3 else 1)]
    a = np.stack(base, -1) + rng.normal(0, 12, (h, w, len(base)))
    a = np.clip(a, 0, 255).astype(np.uint8)
    return a if len(shape) == 3 else a[..., 0]


def _pillow_save(a, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _pillow(data: bytes) -> torch.Tensor:
    """Pillow's decoding of a file as users compare: ``uint8.float() / 255``, (1, C, H, W)."""
    with Image.open(io.BytesIO(data)) as im:
        a = torch.from_numpy(np.asarray(im).copy())
    a = a.unsqueeze(0) if a.dim() == 2 else a.permute(2, 0, 1)
    return (a.float() / 255).unsqueeze(0)


def _assert_decodes_like_pillow(data: bytes):
    c = fdgpu.io.read_jpeg(data)
    assert torch.equal(fdgpu.decode(c), _pillow(data))
    return c


def _sof(data: bytes) -> int:
    i = 2
    while True:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        i += 2 + length


# ---------------------------------------------------------------- files fdgpu decodes exactly
@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(21, 37, 3), (64, 48, 3), (5, 3, 3), (1, 1, 3), (35, 70, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_pillow_files_every_quality_sample(subsampling, shape):
    a = _smooth(shape, sum(shape))
    for q in (1, 7, 23, 50, 75, 90, 100):
        data = _pillow_save(a, quality=q, subsampling=PIL_SUBSAMPLING[subsampling])
        c = _assert_decodes_like_pillow(data)
        assert c.subsampling == subsampling and c.size == shape[:2] and c.color == "ycbcr"
        assert _sof(data) == 0xC0


@pytest.mark.parametrize("shape", [(13, 29), (64, 64), (1, 9)], ids=lambda s: "x".join(map(str, s)))
def test_pillow_grayscale_files(shape):
    a = _smooth(shape, 3)
    for q in (5, 60, 95):
        c = _assert_decodes_like_pillow(_pillow_save(a, quality=q))
        assert c.color == "gray" and len(c.components) == 1


@pytest.mark.parametrize("subsampling", SUBS)
def test_fd_and_random_tables(subsampling):
    a = _image((29, 33, 3), 4)
    rng = np.random.default_rng(5)
    fd = fdgpu.tables.fd(2.0).round().int().flatten().tolist()
    cases = [[fd], [fd, fdgpu.tables.fd(1.0).int().flatten().tolist()],
             [rng.integers(1, 256, 64).tolist(), rng.integers(1, 256, 64).tolist()]]
    for qt in cases:
        c = _assert_decodes_like_pillow(_pillow_save(a, qtables=qt, subsampling=PIL_SUBSAMPLING[subsampling]))
        assert c.tables[0].flatten().tolist() == [float(v) for v in qt[0]]


@pytest.mark.parametrize("option", [{"restart_marker_blocks": 3}, {"restart_marker_rows": 1}, {"optimize": True},
                                    {"progressive": True}, {"progressive": True, "optimize": True}],
                         ids=["restart-blocks", "restart-rows", "optimized", "progressive", "progressive-optimized"])
def test_pillow_coding_options(option):
    for shape, sub in (((45, 61, 3), 2), ((17, 19, 3), 0), ((30, 22), None)):
        a = _smooth(shape, 6)
        kw = dict(option, quality=70)
        if sub is not None:
            kw["subsampling"] = sub
        data = _pillow_save(a, **kw)
        if "progressive" in option:
            assert _sof(data) == 0xC2
        _assert_decodes_like_pillow(data)


@pytest.mark.parametrize("subsampling", ["444", "422", "420", "Gray"])
def test_simplejpeg_files(subsampling):
    simplejpeg = pytest.importorskip("simplejpeg", reason="simplejpeg is a second encoder")
    for shape, q in (((37, 53), 30), ((64, 80), 85)):
        a = _smooth(shape + ((1,) if subsampling == "Gray" else (3,)), 7)
        data = simplejpeg.encode_jpeg(a, quality=q, colorspace="GRAY" if subsampling == "Gray" else "RGB",
                                      colorsubsampling=subsampling)
        _assert_decodes_like_pillow(data)


@pytest.mark.parametrize("version,flags", [("mozjpeg403", []), ("turbo210", ["+ARITH_CODE"]),
                                           ("turbo210", ["+ARITH_CODE", "+PROGRESSIVE_MODE"])],
                         ids=["mozjpeg", "arithmetic", "arithmetic-progressive"])
def test_jpeglib_encoders(version, flags, tmp_path):
    """mozjpeg (trellis quantization: other coefficients than libjpeg-turbo's) and arithmetic coding."""
    import jpeglib

    if version not in jpeglib.version.versions():
        pytest.skip(f"this jpeglib build has no {version}")
    a = _smooth((27, 41, 3), 8)
    path = tmp_path / "a.jpg"
    with jpeglib.version(version):
        jpeglib.from_spatial(a).write_spatial(str(path), qt=60, flags=flags)
    data = path.read_bytes()
    if flags:
        assert _sof(data) in (0xC9, 0xCA)
    _assert_decodes_like_pillow(data)
    assert torch.equal(fdgpu.decode(fdgpu.io.read_jpeg(path)), _pillow(data))  # from a path


def test_natural_photos(data_dir):
    paths = sorted((data_dir / "natural").glob("*.png"))[:3]
    for k, p in enumerate(paths):
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB"))
        for q, sub in ((15, 2), (75, 1), (95, 0)):
            _assert_decodes_like_pillow(_pillow_save(a, quality=q, subsampling=sub))


def test_read_sources(tmp_path):
    data = _pillow_save(_image((9, 10, 3), 9), quality=50)
    (tmp_path / "a.jpg").write_bytes(data)
    by_bytes = fdgpu.io.read_jpeg(data)
    for src in (tmp_path / "a.jpg", str(tmp_path / "a.jpg"), io.BytesIO(data), bytearray(data)):
        c = fdgpu.io.read_jpeg(src)
        assert all(torch.equal(u, v) for u, v in zip(c.components, by_bytes.components))


# ---------------------------------------------------------------- files fdgpu cannot decode exactly
def _patch_sof(data: bytes, marker=None, precision=None, factors=None) -> bytes:
    b = bytearray(data)
    i = 2
    while not (0xC0 <= b[i + 1] <= 0xCF and b[i + 1] not in (0xC4, 0xC8, 0xCC)):
        i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
    if marker is not None:
        b[i + 1] = marker
    if precision is not None:
        b[i + 4] = precision
    if factors is not None:
        for k, (h, v) in enumerate(factors):
            b[i + 11 + 3 * k] = (h << 4) | v
    return bytes(b)


def _rgb_file(data: bytes) -> bytes:
    """A Pillow file made an RGB JPEG: an Adobe marker with transform 0 in place of the JFIF marker, so that libjpeg
    reads the three components as R, G, B (no YCbCr transform)."""
    assert data[2:4] == b"\xff\xe0"
    jfif_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + data[jfif_end:]


def test_rgb_files():
    """An RGB JPEG decodes as three grayscale planes (color='rgb'), as libjpeg does."""
    for shape in ((16, 16, 3), (21, 35, 3)):
        data = _rgb_file(_pillow_save(_smooth(shape, 13), quality=50, subsampling=0))
        c = _assert_decodes_like_pillow(data)
        assert c.color == "rgb"


def test_unsupported_files_are_named():
    data = _pillow_save(_image((16, 16, 3), 10), quality=50)
    cases = [
        (_patch_sof(data, precision=12), "a JPEG with 12-bit samples"),
        (_patch_sof(data, marker=0xC3), "a lossless JPEG"),
        (_patch_sof(data, marker=0xCB), "a arithmetic-coded lossless JPEG"),
        (_patch_sof(data, marker=0xC5), r"a hierarchical \(differential sequential\) JPEG"),
        (_patch_sof(data, factors=[(4, 1), (1, 1), (1, 1)]), "sampling factors Y 4x1, Cb 1x1, Cr 1x1"),
        (_patch_sof(data, factors=[(1, 2), (1, 1), (1, 1)]), "sampling factors Y 1x2"),
        (_patch_sof(data, factors=[(2, 2), (1, 1), (2, 1)]), "Cr 2x1"),
        (b"GIF89a....", "expected a JPEG file"),
        (data[:2] + b"\xff\xd9", "no|found none"),
    ]
    buf = io.BytesIO()
    Image.new("CMYK", (20, 20), (10, 20, 30, 40)).save(buf, "JPEG")
    cases.append((buf.getvalue(), r"a 4-component \(CMYK\) JPEG"))
    cases.append((_patch_sof(_rgb_file(data), factors=[(2, 2), (1, 1), (1, 1)]),
                  "an RGB JPEG .no colour transform. with sampling factors R 2x2, G 1x1, B 1x1"))
    for bad, match in cases:
        with pytest.raises(ValueError, match=match):
            fdgpu.io.read_jpeg(bad)
    for bad in (cases[0][0], cases[-1][0]):  # the message says what is supported
        with pytest.raises(ValueError, match="fdgpu decodes 8-bit grayscale, YCbCr"):
            fdgpu.io.read_jpeg(bad)
    with pytest.raises(TypeError, match="expected a path, bytes or a binary file object"):
        fdgpu.io.read_jpeg(3)
    with pytest.raises(OSError, match="cannot read"):
        fdgpu.io.read_jpeg("/nonexistent/a.jpg")


# ---------------------------------------------------------------- write_jpeg
@pytest.mark.parametrize("subsampling", SUBS)
@pytest.mark.parametrize("shape", [(1, 3, 21, 37), (1, 1, 13, 9), (1, 3, 40, 48)], ids=lambda s: "x".join(map(str, s)))
def test_write_reads_back_and_pillow_decodes_it(subsampling, shape, tmp_path):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    for k, (q, tabs) in enumerate([(30, None), (None, (fdgpu.tables.fd(1.0), fdgpu.tables.fd(3.0))),
                                   (None, (torch.randint(1, 256, (1, 8, 8), generator=g).float(), None))]):
        if tabs is None:
            c = fdgpu.encode(x, q, subsampling=subsampling)
        else:
            c = fdgpu.encode(x, luma_table=tabs[0], chroma_table=tabs[1], subsampling=subsampling)
        path = tmp_path / f"{k}.jpg"
        fdgpu.io.write_jpeg(path, c, optimize=k == 2)
        data = path.read_bytes()
        assert _sof(data) == 0xC0  # baseline
        back = fdgpu.io.read_jpeg(path)
        assert back.size == c.size and back.color == c.color and back.subsampling == c.subsampling
        for u, v in zip(back.components + back.tables, c.components + c.tables):
            assert torch.equal(u, v)
        assert torch.equal(fdgpu.decode(c), _pillow(data))


def test_write_to_file_object_and_atomically(tmp_path):
    c = fdgpu.encode(torch.rand(1, 3, 16, 24), 50)
    buf = io.BytesIO()
    fdgpu.io.write_jpeg(buf, c)
    path = tmp_path / "a.jpg"
    fdgpu.io.write_jpeg(path, c)
    assert path.read_bytes() == buf.getvalue()
    zeros = tuple(torch.zeros_like(t) for t in c.components)  # (a valid image for decode with any steps)
    bad = fdgpu.Coefficients(zeros, (c.tables[0] * 0 + 300,) + c.tables[1:], c.size)
    with pytest.raises(ValueError, match=r"tables\[0\]: expected integer steps in 1..255"):
        fdgpu.io.write_jpeg(path, bad)
    assert path.read_bytes() == buf.getvalue()  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg"]  # no temporary left


def test_write_errors(tmp_path):
    x = torch.rand(2, 3, 16, 16)
    c = fdgpu.encode(x, 50)
    with pytest.raises(ValueError, match=r"expected one image \(B = 1\)"):
        fdgpu.io.write_jpeg(tmp_path / "a.jpg", c)
    with pytest.raises(ValueError, match="got 'rgb'"):
        fdgpu.io.write_jpeg(tmp_path / "a.jpg", fdgpu.encode(x[:1], luma_table=fdgpu.tables.fd(1.0), color="rgb"))
    one = c[0]
    frac = fdgpu.Coefficients(one.components, (one.tables[0] + 0.5,) + one.tables[1:], one.size)
    with pytest.raises(ValueError, match="not integers"):
        fdgpu.io.write_jpeg(tmp_path / "a.jpg", frac)
    big = one.components[0].clone()
    big[0, 0, 0, 0, 1] = 1500  # a valid coefficient for decode with unit steps, beyond baseline Huffman coding
    ones = tuple(torch.ones_like(t) for t in one.tables)
    with pytest.raises(ValueError, match=r"\|AC\| <= 1023"):
        fdgpu.io.write_jpeg(tmp_path / "a.jpg", fdgpu.Coefficients((big,) + one.components[1:], ones, one.size))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fdgpu.io.write_jpeg(tmp_path / "no" / "a.jpg", one)
    with pytest.raises(TypeError, match="expected a path or a binary file object"):
        fdgpu.io.write_jpeg(3, one)
    assert list(tmp_path.iterdir()) == []

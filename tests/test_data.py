"""fdgpu.data: the one reader of images and labels behind eval, the defences, the models and the benchmark.

Every entry point (``load_image_folder``, ``models.imagenet.load_natural``, ``defences.data.load_natural`` /
``load_cifar``, ``bench.BenchData``) must show the same behaviour: EXIF orientation applied, 16-bit images refused,
one strict labels parser, and the uint8 NHWC and float NCHW views of the same bits.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from fdgpu.data import load_image_folder, load_images, read_labels, read_npz, to_float
from fdgpu.defences.data import load_cifar
from fdgpu.defences.data import load_natural as load_natural_uint8
from fdgpu.models.imagenet import load_natural as load_natural_imagenet


def _png16(path: Path, a: np.ndarray) -> None:
    """A 16-bit PNG (RGB or grayscale) written by Pillow's PNG encoder."""
    if a.ndim == 2:
        Image.fromarray(a.astype(np.uint16)).save(path)  # mode I;16
    else:  # Pillow has no 16-bit RGB mode: write the PNG by hand (zlib + CRC, colour type 2, depth 16)
        import struct
        import zlib

        h, w, _ = a.shape
        raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) +
                         chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def photos(tmp_path):
    """Three 13x7 RGB photos a/b/c (PNG), a labels file (1-based labels, extra column, columns reordered)."""
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for name in ("c", "a", "b"):
        arrays[name] = rng.integers(0, 256, (13, 7, 3), dtype=np.uint8)
        Image.fromarray(arrays[name]).save(d / f"{name}.png")
    (d / "images.csv").write_text("TrueLabel,ImageId,Licence\n5,a,cc\n1000,b,cc\n1,c,cc\n")
    return d, arrays


def _loaders(folder, size=None):
    """Every entry point over ``folder``, each as the uint8 (N, H, W, 3) it reads (float views times 255)."""
    size2 = None if size is None else (size, size)
    return {
        "load_image_folder": lambda: (load_image_folder(folder, size=size2)[0] * 255).round().to(torch.uint8)
        .permute(0, 2, 3, 1).numpy(),
        "imagenet.load_natural": lambda: (load_natural_imagenet(folder, size=size or 7, labels_csv=folder / "l.csv")[0]
                                          * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(),
        "defences.load_natural": lambda: load_natural_uint8(folder, 0, None, size=size),
        "load_images": lambda: load_images(folder, size=size2)[0],
    }


def test_views_are_the_stored_bits(photos):
    d, arrays = photos
    want = np.stack([arrays[n] for n in ("a", "b", "c")])  # sorted by name
    u8, y, files = load_images(d, labels_csv=d / "images.csv")
    assert u8.dtype == np.uint8 and np.array_equal(u8, want) and [f.name for f in files] == ["a.png", "b.png", "c.png"]
    assert y.tolist() == [5, 1000, 1]
    x, yy, names = load_image_folder(d, labels_csv=d / "images.csv")
    assert x.shape == (3, 3, 13, 7) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.equal(x, torch.from_numpy(want).permute(0, 3, 1, 2).float() / 255) and torch.equal(x, to_float(u8))
    assert yy.tolist() == [5, 1000, 1] and names == ["a.png", "b.png", "c.png"]
    xs, ys, ns = load_image_folder(d, labels_csv=d / "images.csv", start=1, limit=1)  # fdgpu eval --start/--limit
    assert torch.equal(xs, x[1:2]) and ys.tolist() == [1000] and ns == ["b.png"]
    xi, yi = load_natural_imagenet(d, start=1, limit=2, size=9)
    assert xi.shape == (2, 3, 9, 9) and yi.tolist() == [999, 0]  # TrueLabel - 1
    want9 = np.stack([np.asarray(Image.fromarray(arrays[n]).resize((9, 9), Image.BICUBIC)) for n in ("b", "c")])
    assert torch.equal(xi, torch.from_numpy(want9).permute(0, 3, 1, 2).float() / 255)
    assert np.array_equal(load_natural_uint8(d, 1, 3, size=9), want9)
    assert np.array_equal(load_natural_uint8(d, 0, 2), want[:2])


def test_exif_orientation_is_applied_by_every_loader(tmp_path):
    d = tmp_path / "rot"
    d.mkdir()
    rng = np.random.default_rng(1)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 16 wide, 24 high; displayed rotated by 90 degrees: 24 wide, 16 high
    Image.fromarray(rng.integers(0, 256, (24, 16, 3), dtype=np.uint8)).save(d / "r.jpg", exif=exif, quality=95)
    (d / "l.csv").write_text("ImageId,TrueLabel\nr,3\n")
    with Image.open(d / "r.jpg") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert shown.shape == (16, 24, 3)
    for name, load in _loaders(d).items():
        if name == "imagenet.load_natural":
            continue  # square only: checked resized below
        assert np.array_equal(load(), shown[None]), name
    sq = np.asarray(Image.fromarray(shown).resize((8, 8), Image.BICUBIC))
    for name, load in _loaders(d, size=8).items():
        assert np.array_equal(load(), sq[None]), name


@pytest.mark.parametrize("kind", ["rgb16", "gray16"])
def test_16_bit_images_are_refused_by_every_loader(tmp_path, kind):
    d = tmp_path / kind
    d.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(d / "a.png")
    shape = (6, 5, 3) if kind == "rgb16" else (6, 5)
    _png16(d / "b.png", rng.integers(0, 65536, shape, dtype=np.uint16))
    (d / "l.csv").write_text("ImageId,TrueLabel\na,1\nb,2\n")
    with Image.open(d / "b.png") as im:
        assert im.size == (5, 6)  # the file is a readable PNG; only its depth is refused
    for name, load in _loaders(d, size=5).items():
        with pytest.raises(ValueError, match=r"b\.png: expected a readable 8-bit image, .*got 16-bit") as info:
            load()
        assert ("colour" if kind == "rgb16" else "grayscale") in str(info.value), name


def test_grayscale_becomes_rgb(tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    g = np.random.default_rng(3).integers(0, 256, (5, 9), dtype=np.uint8)
    Image.fromarray(g).save(d / "g.png")
    assert np.array_equal(load_images(d)[0], np.repeat(g[None, :, :, None], 3, axis=3))


@pytest.mark.parametrize("text, match", [
    ("a,5\nb,1000\nc,1\n", "expected a header row naming the columns ImageId,TrueLabel"),  # no header
    ("ImageId,Label\na,5\n", "expected a header row naming the columns ImageId,TrueLabel"),
    ("", "expected a header row"),
    ("ImageId,TrueLabel\na,cat\n", "integer label, got .* on line 2"),
    ("ImageId,TrueLabel\na,5\nb,2.5\n", "integer label, got .* on line 3"),
    ("ImageId,TrueLabel\n,5\n", "integer label, got .* on line 2"),
    ("ImageId,TrueLabel\na,\n", "integer label, got .* on line 2"),
    ("ImageId,TrueLabel\na,5\nb,6\na,5\n", "expected each ImageId once, got 'a' again on line 4"),
])
def test_labels_csv_is_strict_everywhere(photos, text, match):
    d, _ = photos
    csv = d / "l.csv"
    csv.write_text(text)
    for load in (lambda: read_labels(csv), lambda: load_image_folder(d, labels_csv=csv),
                 lambda: load_natural_imagenet(d, size=7, labels_csv=csv), lambda: load_images(d, labels_csv=csv)):
        with pytest.raises(ValueError, match=f"labels_csv: .*{match}"):
            load()


def test_labels_csv_missing_and_imagenet_range(photos, tmp_path):
    d, _ = photos
    with pytest.raises(FileNotFoundError, match="labels_csv: expected a CSV file"):
        load_image_folder(d, labels_csv=tmp_path / "none.csv")
    (d / "images.csv").unlink()
    with pytest.raises(FileNotFoundError, match="labels_csv: expected a CSV file"):
        load_natural_imagenet(d, size=7)  # labels are required for an ImageNet model
    assert load_image_folder(d)[1].tolist() == [-1, -1, -1]  # optional for a folder
    (d / "l.csv").write_text("ImageId,TrueLabel\na,5\nc,6\n")
    assert read_labels(d / "l.csv") == {"a": 5, "c": 6}  # well formed, but b.png has no label in it
    for load in (load_image_folder, lambda p, labels_csv: load_natural_imagenet(p, size=7, labels_csv=labels_csv)):
        with pytest.raises(ValueError, match=r"labels_csv: expected a label for every image, got none for 1 of them "
                                             r"\(b.png\)"):
            load(d, labels_csv=d / "l.csv")
    for bad in (0, 1001):
        (d / "images.csv").write_text(f"ImageId,TrueLabel\na,5\nb,{bad}\nc,1\n")
        with pytest.raises(ValueError, match=f"expected ImageNet labels 1..1000 .*got {bad} for b.png"):
            load_natural_imagenet(d, size=7)


def test_ranges_and_empty_folders(photos, tmp_path):
    d, _ = photos
    with pytest.raises(ValueError, match="start: expected an index below the 3 images"):
        load_natural_imagenet(d, start=3, size=7)
    with pytest.raises(ValueError, match="stop: expected an index above start=2"):
        load_natural_uint8(d, 2, 2)
    with pytest.raises(ValueError, match="limit: expected a number of images >= 1"):
        load_image_folder(d, limit=0)
    assert load_natural_uint8(d, 1, 100).shape == (2, 13, 7, 3)  # the folder ends before stop
    (tmp_path / "empty").mkdir()
    for load in (load_image_folder, load_natural_uint8, lambda p: load_natural_imagenet(p, labels_csv=d / "x.csv")):
        with pytest.raises(FileNotFoundError, match="expected image files"):
            load(tmp_path / "empty")
        with pytest.raises(FileNotFoundError, match="is not a directory"):
            load(tmp_path / "nope")


def test_different_sizes_need_a_size(photos):
    d, arrays = photos
    Image.fromarray(arrays["a"][:5]).save(d / "d.png")
    with pytest.raises(ValueError, match=r"expected images of one size, got 2 sizes .*pass size=\(H, W\)"):
        load_image_folder(d)
    assert load_image_folder(d, size=(4, 6))[0].shape == (4, 3, 4, 6)


def test_npz_views_and_load_cifar(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5])
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "f.npz", x=x.astype(np.float32) / 255, y=y)
    xs, ys = read_npz(tmp_path / "xy.npz", start=1, limit=3)
    assert np.array_equal(xs, x[1:4]) and ys.dtype == np.int64 and ys.tolist() == [1, 4, 1]
    assert np.array_equal(load_cifar(tmp_path / "xy.npz", 2), x[:2])
    assert np.array_equal(load_cifar(tmp_path / "x.npz"), x)  # the defences' databases need no labels
    with pytest.raises(ValueError, match=r"expected 'x' and 'y' in .*got \['x'\]"):
        read_npz(tmp_path / "x.npz")
    with pytest.raises(ValueError, match="expected uint8 images"):
        load_cifar(tmp_path / "f.npz")


def test_bench_data_reads_through_the_same_loader(tmp_path):
    from fdgpu.bench.data import BenchData

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    (tmp_path / "cifar10").mkdir()
    np.savez(tmp_path / "cifar10" / "test.npz", x=x, y=np.zeros(4, np.int64))
    data = BenchData(tmp_path)
    assert np.array_equal(data.images(32, 3), x[:3])
    assert torch.equal(data.batch(32, 3), torch.from_numpy(x[:3]).permute(0, 3, 1, 2).float() / 255)
    want = np.stack([np.asarray(Image.fromarray(a).resize((48, 48), Image.BICUBIC)) for a in x[:2]])
    assert np.array_equal(data.images(48, 2), want)

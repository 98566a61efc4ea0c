"""``fdgpu demo`` and ``fdgpu compress``."""

import numpy as np
import pytest

import fdgpu
from fdgpu.cli import main

from ._helpers import psnr, to_tensor, to_uint8

Image = pytest.importorskip("PIL.Image")


def _photo(h=70, w=90):
    from skimage import data

    return np.ascontiguousarray(data.coffee()[100:100 + h, 200:200 + w])


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "compress", "eval", "bench"):
        assert cmd in out


def test_demo_writes_table_and_figure(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--images", "chelsea", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("JPEG q75", "JPEG q50", "JPEG q20", "FD 1x", "FD 2x", "FD 3x", "PSNR", "SSIM", "ms / image"):
        assert label in out
    png = tmp_path / "demo.png"
    assert png.stat().st_size > 10_000 and Image.open(png).size[0] > 500
    assert (tmp_path / "table.md").read_text().count("|") > 30


def test_demo_rejects_unknown_sample(tmp_path):
    with pytest.raises(ValueError, match="scikit-image sample names"):
        main(["demo", "--out", str(tmp_path), "--images", "no_such_photo"])


def test_compress_png_equals_the_layer(tmp_path):
    img = _photo()
    Image.fromarray(img).save(tmp_path / "a.png")
    assert main(["compress", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--fd", "2"]) == 0
    got = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(got, to_uint8(fdgpu.feature_distillation(to_tensor(img), 2.0)))


@pytest.mark.parametrize("strength", [1, 3])
def test_compress_real_fd_jpeg_decodes_like_the_layer(tmp_path, strength):
    img = _photo(97, 131)
    Image.fromarray(img).save(tmp_path / "a.png")
    assert main(["compress", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--fd", str(strength),
                 "--format", "jpeg"]) == 0
    jpg = Image.open(tmp_path / "o" / "a.jpg")
    q = np.array(jpg.quantization[0]).reshape(8, 8)
    assert np.array_equal(q, fdgpu.tables.fd(strength).numpy().astype(int))
    decoded = np.asarray(jpg.convert("RGB"))
    assert psnr(decoded, to_uint8(fdgpu.feature_distillation(to_tensor(img), float(strength)))) >= 48


def test_compress_quality_jpeg_matches_pillow_quality(tmp_path):
    img = _photo()
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "ref.jpg", quality=60)
    assert main(["compress", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--quality", "60",
                 "--format", "jpeg", "--subsampling", "4:2:0"]) == 0
    assert (tmp_path / "o" / "a.jpg").read_bytes() == (tmp_path / "ref.jpg").read_bytes()


def test_compress_grayscale_and_folders(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_photo()).save(src / "rgb.png")
    Image.fromarray(_photo()[..., 0]).save(src / "sub" / "gray.png")
    assert main(["compress", str(src), "--out", str(tmp_path / "o"), "--quality", "50"]) == 0
    g = Image.open(tmp_path / "o" / "sub" / "gray.png")
    assert g.mode == "L"
    ref = to_uint8(fdgpu.jpeg(to_tensor(_photo()[..., 0]), 50))
    assert np.array_equal(np.asarray(g), ref)


def test_compress_reports_and_skips_bad_files(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo()).save(src / "good.png")
    (src / "corrupt.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(src / "alpha.png")
    out = tmp_path / "o"
    assert main(["compress", str(src), str(tmp_path / "missing.png"), "--out", str(out), "--fd", "1"]) == 1
    err = capsys.readouterr().err
    assert "corrupt.png: skipped" in err and "alpha" in err and "missing.png: no such file" in err
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]  # nothing partial, no temp files


def test_compress_rejects_tables_a_jpeg_cannot_store(tmp_path, capsys):
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    # The same for every image: a usage error up front (exit 2), before the output folder is even created.
    assert main(["compress", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--fd", "1.5",
                 "--format", "jpeg"]) == 2
    assert "--fd 1.5 --format jpeg: a baseline JPEG stores integer steps" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["compress", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--quality", "0"]) == 2


def test_compress_needs_exactly_one_table_choice(tmp_path):
    with pytest.raises(SystemExit):
        main(["compress", "x.png", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["compress", "x.png", "--out", str(tmp_path), "--quality", "50", "--fd", "1"])

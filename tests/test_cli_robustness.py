"""The commands under bad input and bad conditions (issue 14): nothing lost, nothing silently changed.

``fdgpu compress`` runs on a folder of odd files (empty, truncated, a folder named ``.png``, a symlink loop, CMYK, LA,
RGBA, 16-bit, animated, EXIF-rotated, non-ASCII names, ``a.jpg``/``a.png`` name collisions, ``--out`` equal to the
input folder); each test checks the exit status, the messages, that every input's bytes are unchanged (hashes before
and after) and that no temporary or partial file remains. ``fdgpu eval`` and ``fdgpu bench`` get their usage errors
(exit 2, a message naming the argument) before any work. Commands run in-process through ``fdgpu.cli.main``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu.cli import main

from ._helpers import to_tensor, to_uint8

Image = pytest.importorskip("PIL.Image")


# ------------------------------------------------------------------------------------------------ odd files
def _photo(h=20, w=24, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, h * w * 3).reshape(h, w, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _png16(path: Path, a: np.ndarray) -> None:
    """Write a 16-bit PNG by hand (Pillow cannot write 16-bit RGB): ``a`` uint16 HW (gray) or HWC (C = 2, 3, 4)."""
    a = a[..., None] if a.ndim == 2 else a
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


GOOD = ("good.png", "gray.png", "la_opaque.png", "rgba_opaque.png", "palette.gif", "rotated.jpg",
        "ñandú_画像.png", "a.png", "a.jpg", "dir.png/inner.png")
REFUSED = {  # file -> what the message must say
    "zero.png": "cannot identify image file",
    "truncated.png": "truncated",
    "cmyk.jpg": "mode 'CMYK'",
    "la.png": "transparent pixels",
    "rgba.png": "transparent pixels",
    "rgb16.png": "expected 8-bit samples, got 16-bit colour samples",
    "gray16.png": "expected 8-bit samples, got 16-bit grayscale samples",
    "anim.gif": "got 3 frames",
}


def _make_odd_folder(d: Path) -> None:
    d.mkdir(parents=True)
    img = _photo()
    Image.fromarray(img).save(d / "good.png")
    Image.fromarray(img[..., 0]).save(d / "gray.png")
    (d / "zero.png").write_bytes(b"")
    full = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) * 2 // 3])
    (d / "dir.png").mkdir()
    Image.fromarray(_photo(seed=1)).save(d / "dir.png" / "inner.png")
    os.symlink("loop.png", d / "loop.png")  # a symlink to itself: a loop
    Image.fromarray(img).convert("CMYK").save(d / "cmyk.jpg")
    la = np.stack([img[..., 0], np.full(img.shape[:2], 128, np.uint8)], -1)
    Image.fromarray(la, "LA").save(d / "la.png")
    la[..., 1] = 255
    Image.fromarray(la, "LA").save(d / "la_opaque.png")
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(d / "rgba_opaque.png")
    rgba[3, 5, 3] = 0
    Image.fromarray(rgba).save(d / "rgba.png")
    _png16(d / "rgb16.png", img.astype(np.uint16) * 257)
    _png16(d / "gray16.png", img[..., 0].astype(np.uint16) * 257)
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    frames[1].save(d / "palette.gif")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(_photo(20, 40, seed=2)).save(d / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(_photo(seed=3)).save(d / "ñandú_画像.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.jpg")  # black
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(d / "a.png")  # white: both map to a.png


def _hashes(d: Path) -> dict:
    """sha256 of every regular file under ``d`` (symlinks recorded by their target, not followed)."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in files + dirs:
            p = Path(root) / name
            if p.is_symlink():
                out[p] = "link:" + os.readlink(p)
            elif p.is_file():
                out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _no_temporaries(*folders: Path) -> None:
    for d in folders:
        leftovers = [p for p in d.rglob("*") if p.name.startswith(".fdgpu-") or ".tmp" in p.name]
        assert leftovers == [], f"temporary files left behind: {leftovers}"


def _displayed(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with Image.open(path) as im:  # grayscale (with or without alpha) stays grayscale, the rest becomes RGB
        return np.array(ImageOps.exif_transpose(im).convert("L" if im.mode in ("L", "LA") else "RGB"))


@pytest.fixture
def odd(tmp_path):
    d = tmp_path / "in"
    _make_odd_folder(d)
    return d


# ------------------------------------------------------------------------------------------------ compress
def test_compress_odd_folder_reports_refuses_and_keeps_inputs(odd, tmp_path, capsys):
    before = _hashes(odd)
    out = tmp_path / "out"
    assert main(["compress", str(odd), "--out", str(out), "--quality", "50"]) == 1
    captured = capsys.readouterr()
    err = captured.err
    assert _hashes(odd) == before
    _no_temporaries(odd, out)
    for name, why in REFUSED.items():
        line = next((ln for ln in err.splitlines() if f"{odd / name}: skipped" in ln), None)
        assert line is not None and why in line, (name, err)
    assert f"{odd / 'loop.png'}: skipped, a broken symbolic link or a symlink loop" in err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    expected = sorted([str(Path(g).with_suffix(".png")) for g in GOOD if g != "a.jpg"] + ["a.jpg.png"])
    assert written == expected
    n_found = len(GOOD) + len(REFUSED)
    assert f"wrote {len(GOOD)} of {n_found} image(s)" in captured.out
    assert f"; {len(REFUSED) + 1} problem(s)" in captured.out
    # the collision: a.png keeps its name, a.jpg's output is renamed, and the note says exactly that
    assert f"{odd / 'a.jpg'}: written as {out / 'a.jpg.png'}, because {out / 'a.png'} is the output of " \
           f"{odd / 'a.png'}" in err
    for src, dst in (("a.png", "a.png"), ("a.jpg", "a.jpg.png"), ("rotated.jpg", "rotated.png"),
                     ("ñandú_画像.png", "ñandú_画像.png"), ("la_opaque.png", "la_opaque.png"),
                     ("rgba_opaque.png", "rgba_opaque.png"), ("palette.gif", "palette.gif")):
        got = np.asarray(Image.open(out / Path(dst).with_suffix(".png")))
        assert np.array_equal(got, to_uint8(fdgpu.jpeg(to_tensor(_displayed(odd / src)), 50))), src


def test_compress_progress_bar_counts_the_files_written(odd, tmp_path, capsys):
    files = [str(odd / n) for n in ("good.png", "truncated.png", "gray.png")]  # the truncated one fails when read
    assert main(["compress", *files, "--out", str(tmp_path / "out"), "--quality", "75"]) == 1
    bar = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("compress:")]
    assert bar and "| 2/3 " in bar[-1] and "file" in bar[-1], bar  # not 3/3: one failed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png", "gray.png"]


def test_compress_applies_the_exif_orientation(odd, tmp_path):
    out = tmp_path / "out"
    assert main(["compress", str(odd / "rotated.jpg"), "--out", str(out), "--fd", "1", "--format", "jpeg"]) == 0
    with Image.open(odd / "rotated.jpg") as src:
        assert src.size == (40, 20) and src.getexif().get(0x0112) == 6  # stored 40 wide, displayed 20 wide
    with Image.open(out / "rotated.jpg") as res:
        assert res.size == (20, 40) and res.getexif().get(0x0112) in (None, 1)


def test_compress_refuses_16_bit_rgb_and_gray_alike(odd, tmp_path, capsys):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(odd / "rgb16.tif", _photo().astype(np.uint16) * 257, photometric="rgb")
    out = tmp_path / "out"
    files = [str(odd / n) for n in ("rgb16.png", "gray16.png", "rgb16.tif")]
    assert main(["compress", *files, "--out", str(out), "--quality", "90"]) == 1
    err = capsys.readouterr().err
    assert err.count("expected 8-bit samples, got 16-bit") == 3
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compress_out_equal_to_the_input_folder_never_replaces_an_input(tmp_path, capsys, fmt):
    d = tmp_path / "t2"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "a.jpg")
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(d / "a.png")
    before = _hashes(d)
    assert main(["compress", str(d), "--out", str(d), "--quality", "50", "--format", fmt]) == 0
    err = capsys.readouterr().err
    after = _hashes(d)
    assert {p: h for p, h in after.items() if p in before} == before
    ext = ".png" if fmt == "png" else ".jpg"
    assert sorted(p.name for p in after if p not in before) == sorted(["a.jpg" + ext, "a.png" + ext])
    for src in ("a.jpg", "a.png"):
        assert f"{d / src}: written as {d / (src + ext)}, because {d / ('a' + ext)} is an input file" in err
    # each output holds its own input's result: white stays white, black stays black
    assert np.asarray(Image.open(d / ("a.png" + ext))).min() > 200
    assert np.asarray(Image.open(d / ("a.jpg" + ext))).max() < 50
    _no_temporaries(d)


def test_compress_collision_with_an_explicit_file_of_the_other_name(tmp_path, capsys):
    """Explicit files from two folders with the same name: one keeps it, the other is numbered, nothing lost."""
    for sub, v in (("x", 0), ("y", 255)):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(tmp_path / sub / "p.png")
    out = tmp_path / "o"
    assert main(["compress", str(tmp_path / "x" / "p.png"), str(tmp_path / "y" / "p.png"), "--out", str(out),
                 "--quality", "90"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p.png", "p.png.png"]
    assert f"{tmp_path / 'y' / 'p.png'}: written as {out / 'p.png.png'}" in capsys.readouterr().err
    assert np.asarray(Image.open(out / "p.png")).max() < 50 and np.asarray(Image.open(out / "p.png.png")).min() > 200


def test_compress_the_same_file_named_twice_gives_one_output(odd, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", str(odd / "good.png"), str(odd / "good.png"), str(odd / "dir.png"),
                 str(odd / "dir.png" / "inner.png"), "--out", str(out), "--quality", "75"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "inner.png"]
    assert "wrote 2 of 2 image(s)" in capsys.readouterr().out


def test_compress_out_naming_a_file_or_an_uncreatable_folder_is_a_usage_error(odd, tmp_path, capsys):
    before = _hashes(odd)
    target = odd / "good.png"
    assert main(["compress", str(odd), "--out", str(target), "--fd", "1"]) == 2
    assert f"--out: expected a folder, got {str(target)!r} which exists and is not a folder" in capsys.readouterr().err
    assert main(["compress", str(odd), "--out", str(target / "sub"), "--fd", "1"]) == 2
    assert "--out: cannot create the folder" in capsys.readouterr().err
    assert _hashes(odd) == before
    _no_temporaries(odd)


def test_compress_fd_below_one_is_one_usage_error_up_front(odd, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compress", str(odd), "--out", str(out), "--fd", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("fdgpu compress:") == 1 and "--fd: expected a finite number >= 1" in err
    assert not out.exists()


def test_compress_a_missing_input_or_broken_link_given_by_name(tmp_path, capsys):
    os.symlink("nowhere.png", tmp_path / "broken.png")
    assert main(["compress", str(tmp_path / "broken.png"), str(tmp_path / "missing.png"), "--out",
                 str(tmp_path / "o"), "--quality", "75"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'broken.png'}: a broken symbolic link or a symlink loop" in err
    assert f"{tmp_path / 'missing.png'}: no such file or folder" in err


def test_compress_interrupted_mid_write_leaves_nothing_partial(odd, tmp_path, monkeypatch, capsys):
    """A save that dies half way (Ctrl-C) leaves neither a partial output nor a temporary file, and says so."""
    def dying_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half")
        raise KeyboardInterrupt

    out = tmp_path / "out"
    (out).mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out / "good.png")  # an earlier run's output
    earlier = (out / "good.png").read_bytes()
    monkeypatch.setattr(Image.Image, "save", dying_save)
    assert main(["compress", str(odd / "good.png"), str(odd / "gray.png"), "--out", str(out), "--quality", "75"]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "fdgpu compress: interrupted after 0 of 2 image(s); nothing partial was written"
    assert sorted(p.name for p in out.iterdir()) == ["good.png"] and (out / "good.png").read_bytes() == earlier


def _cli(*argv, limit=None, **kw):
    """``fdgpu ARGV`` in a child process (optionally with its files limited to ``limit`` bytes: a write past it is
    refused by the kernel, as on a full disk)."""
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "fdgpu.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=apply if limit else None, **kw)


def test_compress_on_a_full_disk_is_one_line_naming_the_file_and_writes_nothing(tmp_path):
    """The kernel refuses the write past 2 KiB (EFBIG, as ENOSPC on a full disk): Pillow's encoder used to ignore the
    short write, and a truncated image was renamed into place with "wrote 1 of 1"."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo(96, 128, seed=3)).save(src / "big.png")
    out = tmp_path / "out"
    p = _cli("compress", src / "big.png", "--out", out, "--quality", "95", "--format", "jpeg", limit=2048)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 1, stdout + stderr
    assert stderr.strip().splitlines() == [f"fdgpu compress: cannot write {out / 'big.jpg'}: File too large; "
                                           f"nothing partial was written; stopped after 0 of 1 image(s)"]
    assert "wrote" not in stdout and list(out.iterdir()) == []


def test_compress_killed_by_sigterm_says_so_and_leaves_no_temporary(tmp_path):
    import signal
    import time

    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        Image.fromarray(_photo(96, 96, seed=i)).save(src / f"{i:02d}.png")
    out = tmp_path / "out"
    p = _cli("compress", src, "--out", out, "--fd", "1")
    def written():
        return sorted(f for f in out.glob("*.png") if not f.name.startswith(".")) if out.is_dir() else []

    deadline = time.time() + 240
    while time.time() < deadline and not written():
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.startswith("fdgpu")]  # not the progress bar's
    written = written()
    assert p.returncode == 128 + signal.SIGTERM, stderr
    assert lines == [f"fdgpu compress: interrupted after {len(written)} of 40 image(s); nothing partial was written"]
    assert 1 <= len(written) < 40
    _no_temporaries(out)
    for f in written:  # every output that exists is whole
        with Image.open(f) as im:
            im.load()


def test_compress_removes_the_temporaries_a_killed_run_left(tmp_path, capsys):
    import subprocess as sp

    dead = sp.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo()).save(src / "a.png")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / f".fdgpu-{dead.pid}-k3j_x9a2.png", out / "sub" / f".fdgpu-{dead.pid}-00000000.png"]
    live = out / f".fdgpu-{os.getpid()}-abcdefgh.png"  # a run still going: kept
    for f in stale + [live]:
        f.write_bytes(b"\x89PNG partial")
    assert main(["compress", str(src), "--out", str(out), "--quality", "75"]) == 0
    assert not any(f.exists() for f in stale) and live.exists()
    assert sorted(p.name for p in out.iterdir()) == [live.name, "a.png", "sub"]


# ------------------------------------------------------------------------------------------------ bench
def test_bench_out_naming_a_file_or_an_uncreatable_folder_is_a_usage_error(tmp_path, capsys):
    f = tmp_path / "f.txt"
    f.write_text("keep me")
    common = ["bench", "--synthetic", "--sizes", "8", "--batches", "1", "--repeats", "1", "--methods", "fdgpu_fd"]
    assert main(common + ["--out", str(f)]) == 2
    assert "--out: expected a folder" in capsys.readouterr().err
    assert main(common + ["--out", str(f / "sub")]) == 2
    assert "--out: cannot create the folder" in capsys.readouterr().err
    assert f.read_text() == "keep me"


# ------------------------------------------------------------------------------------------------ eval
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 6-image random CIFAR-like .npz, damaged variants, and a random resnet20 state_dict."""
    from fdgpu.models import cifar_resnet

    d = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 3, 4, 9])
    np.savez(d / "good.npz", x=x, y=y)
    raw = (d / "good.npz").read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (d / "notzip.npz").write_bytes(b"this is not a zip archive\n" * 10)
    np.savez(d / "float255.npz", x=x.astype(np.float32), y=y)
    np.savez(d / "label10.npz", x=x, y=np.where(np.arange(6) == 2, 10, y))
    np.savez(d / "label-1.npz", x=x, y=np.where(np.arange(6) == 2, -1, y))
    torch.manual_seed(0)
    torch.save(cifar_resnet(20).state_dict(), d / "r20.pt")
    (d / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    return d


def _eval(tiny, *extra, data="good.npz", weights="r20.pt", plot=False):
    return main(["eval", "--data", str(tiny / data), "--weights", str(tiny / weights), "--device", "cpu",
                 "--quiet", *([] if plot else ["--no-plot"]), *extra])


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "pgdl2:0.5:5:-1"], "--attacks: ALPHA in 'pgdl2:0.5:5:-1': expected a step size > 0, got -1"),
    (["--attacks", "pgd:8:10:0"], "--attacks: ALPHA in 'pgd:8:10:0': expected a step size > 0, got 0"),
    (["--attacks", "pgd:8:0"], "--attacks: STEPS in 'pgd:8:0': expected an integer >= 1, got 0"),
    (["--attacks", "pgd:8:-2"], "--attacks: STEPS in 'pgd:8:-2': expected an integer >= 1, got -2"),
    (["--attacks", "fgsm:8/0"], "--attacks: EPS in 'fgsm:8/0': expected a number, got '8/0' (a division by zero)"),
    (["--attacks", "eot:8:5:0"], "--attacks: SAMPLES in 'eot:8:5:0': expected an integer >= 1, got 0"),
    (["--defences", "fd:inf"], "--defences: K in 'fd:inf': expected a finite number"),
    (["--limit", "-5"], "--limit: expected a number of images >= 1, got -5"),
    (["--limit", "0"], "--limit: expected a number of images >= 1, got 0"),
    (["--start", "-3"], "--start: expected an image index >= 0, got -3"),
    (["--batch-size", "0"], "--batch-size: expected a number of images >= 1, got 0"),
    (["--device", "foo"], "--device: expected cpu, cuda or cuda:N, got 'foo'"),
    (["--device", "cuda:99"], "--device cuda:99: "),  # CUDA unavailable, or no GPU 99
])
def test_eval_usage_errors_before_any_work(tiny, capsys, extra, message):
    # --data names a file that does not exist: the usage error must come before anything is loaded
    assert _eval(tiny, *extra, data="does-not-exist.npz") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("data, extra, message", [
    ("good.npz", ["--start", "100"], "--start: expected an index below the 6 images of"),
    ("truncated.npz", [], "which cannot be read (BadZipFile"),
    ("notzip.npz", [], "which is not a zip archive"),
    ("float255.npz", [], "expected float values in [0, 1], got float32 values from 0 to 255; divide by 255"),
    ("label-1.npz", [], "expected class indices >= 0, got values from -1 to 9"),
    ("label10.npz", [], "labels: expected class indices in [0, 9] for this 10-class model, got 0 to 10"),
])
def test_eval_bad_data_is_a_message_not_a_traceback(tiny, capsys, data, extra, message):
    assert _eval(tiny, *extra, data=data) == 2
    assert message in capsys.readouterr().err


def test_eval_garbage_weights_is_a_message(tiny, capsys):
    assert _eval(tiny, weights="garbage.pt") == 2
    err = capsys.readouterr().err
    assert "--weights: expected state_dict file(s) saved with torch.save" in err and "garbage.pt" in err
    assert "weights_only` set to `False`" not in err  # no advice to unpickle an untrusted file


def test_eval_messages_are_one_line_naming_the_option(tiny, tmp_path, capsys):
    torch.save({"foo": torch.zeros(3)}, tmp_path / "notstate.pt")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(_photo(32, 32)).save(tmp_path / "imgs" / "a.png")
    cases = [
        (dict(weights=tmp_path / "notstate.pt"), [],
         f"--weights: expected a state_dict of a CIFAR ResNet-20, got {str(tmp_path / 'notstate.pt')!r} which does "
         f"not fit: 97 of its 116 tensors missing (e.g. 'conv1.weight'), 1 unexpected (e.g. 'foo'); check that the "
         f"depth (resnet20) matches the file"),
        ({}, ["--device", "meta"], "--device meta: expected cpu, cuda or cuda:N, got 'meta', which is not a compute "
                                   "device (its tensors have shapes but no values); use --device cpu or cuda"),
        (dict(data=tmp_path / "imgs"), ["--labels-csv", str(tmp_path / "missing.csv")],
         f"--labels-csv: expected a CSV file with columns ImageId,TrueLabel, got {str(tmp_path / 'missing.csv')!r} "
         f"which does not exist"),
    ]
    for kw, extra, message in cases:
        assert _eval(tiny, *extra, **kw) == 2, message
        assert capsys.readouterr().err == f"fdgpu eval: {message}\n"


@pytest.mark.parametrize("option, value, message", [
    ("--quality", "0", "--quality: expected values in [1, 100] (libjpeg's range), got 0"),
    ("--quality", "101", "--quality: expected values in [1, 100] (libjpeg's range), got 101"),
    ("--fd", "0", "--fd: expected a finite number >= 1 (1, 2, 3 are the paper's FD 1x/2x/3x), got 0: "),
    ("--fd", "0.5", "--fd: expected a finite number >= 1 (1, 2, 3 are the paper's FD 1x/2x/3x), got 0.5: "),
])
def test_compress_table_errors_name_the_option(odd, tmp_path, capsys, option, value, message):
    assert main(["compress", str(odd / "good.png"), "--out", str(tmp_path / "out"), option, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fdgpu compress: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("defence, message", [
    ("tables:{garbage}", "tables: expected a torch.save-d (8, 8) table or dict file, got"),
    ("tvm:foo=1", "'tvm:foo=1': expected options of fdgpu.baselines.make_defence('tvm', ...), got ['foo']"),
])
def test_eval_bad_defence_files_and_options_are_messages(tiny, capsys, defence, message):
    assert _eval(tiny, "--limit", "1", "--defences", defence.format(garbage=tiny / "garbage.pt")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_out_in_a_new_folder_is_created_and_written_whole(tiny, tmp_path, capsys):
    out = tmp_path / "new" / "dir" / "r.json"
    assert _eval(tiny, "--limit", "2", "--out", str(out)) == 0
    res = json.loads(out.read_text())
    assert res["meta"]["n"] == 2 and res["results"][0]["n"] == 2
    assert out.with_suffix(".md").read_text().startswith("| defence")
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.json", "r.md"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_eval_results_written_whole_when_the_plot_fails(tiny, tmp_path, monkeypatch, capsys):
    import fdgpu.eval.report as report

    def broken_plot(rows, path, title=""):
        path.write(b"partial")
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "plot", broken_plot)
    out = tmp_path / "r.json"
    assert _eval(tiny, "--limit", "1", "--out", str(out), plot=True) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"fdgpu eval: wrote {out} and {out.with_suffix('.md')}, but the plot could not be drawn (RuntimeError: plot "
        f"failed); --no-plot skips it")
    assert json.loads(out.read_text())["meta"]["n"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]


def test_eval_out_on_a_full_disk_is_one_line_and_writes_none_of_its_files(tiny, tmp_path, monkeypatch, capsys):
    import errno

    import fdgpu.files

    calls = []
    real = fdgpu.files._write_all

    def full_at_the_plot(fd, data):  # the JSON and the table fit, the plot does not
        calls.append(len(data))
        if len(calls) == 3:
            os.write(fd, bytes(memoryview(data)[:100]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(fdgpu.files, "_write_all", full_at_the_plot)
    out = tmp_path / "r.json"
    assert _eval(tiny, "--limit", "1", "--attacks", "fgsm:8", "--out", str(out), plot=True) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"fdgpu eval: --out: cannot write {out.with_suffix('.png')}: No space left on device; nothing partial was "
        f"written (nor the other 2 file(s); the table is printed above); free some space or choose another --out"]
    assert "| none |" in captured.out and len(calls) == 3
    assert list(tmp_path.iterdir()) == []


def test_eval_and_data_remove_the_temporaries_a_killed_run_left(tiny, tmp_path, capsys):
    import subprocess as sp

    dead = sp.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".fdgpu-{dead.pid}-abcdefgh.json"
    stale.write_bytes(b"{ partial")
    assert _eval(tiny, "--limit", "1", "--out", str(tmp_path / "r.json")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]
    models = tmp_path / "models"
    models.mkdir()
    stale = models / f".fdgpu-{dead.pid}-abcdefgh.th"
    stale.write_bytes(b"partial download")
    assert main(["models", "fetch", "resnet20", "--root", str(models), "--url", (tmp_path / "nope.th").as_uri(),
                 "--quiet"]) == 1
    assert not stale.exists()


def test_eval_interrupted_by_sigterm_says_how_far_it_got(tiny, tmp_path, monkeypatch, capsys):
    """A real SIGTERM to this process in the middle of the evaluation: one line, exit 143, no file."""
    import signal

    import fdgpu.eval.core as core

    real = core.evaluate

    def evaluate(*args, on_step, **kwargs):
        def step(done, total):
            on_step(done, total)
            if done == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, on_step=step, **kwargs)

    monkeypatch.setattr(core, "evaluate", evaluate)
    out = tmp_path / "r.json"
    rc = _eval(tiny, "--limit", "4", "--batch-size", "2", "--defences", "none", "jpeg:50", "--out", str(out))
    assert rc == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip().splitlines() == [
        "fdgpu eval: interrupted after 2 of 4 steps (batch x defence/attack/view); nothing partial was written"]
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_eval_out_that_cannot_be_written_fails_up_front(tiny, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # --data does not exist: the --out error must come first, before any data, model or attack
    assert _eval(tiny, "--out", str(blocker / "r.json"), data="does-not-exist.npz") == 2
    assert "--out: expected a file in a folder" in capsys.readouterr().err
    assert _eval(tiny, "--out", str(tmp_path), data="does-not-exist.npz") == 2
    assert "--out: expected a file name for the results JSON, got the folder" in capsys.readouterr().err
    assert blocker.read_text() == "x"


# ------------------------------------------------------------------------------------------------ load_npz
@pytest.mark.parametrize("x, y, kw, message", [
    (np.full((2, 4, 4, 3), 255.0, np.float32), [0, 1], {}, "expected float values in [0, 1], got float32 values "
                                                           "from 255 to 255; divide by 255"),
    (np.full((2, 4, 4, 3), np.nan), [0, 1], {}, "got NaN or infinite values"),
    (np.zeros((2, 4, 4, 3), np.int64), [0, 1], {}, "expected uint8 samples (0..255) or float in [0, 1], got dtype "
                                                  "int64"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0.5, 1.0], {}, "expected integer class indices, got dtype float64 with "
                                                       "fractional or non-finite values"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 1, 2], {}, "expected labels of shape (2,), one per image, got (3,)"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, -1], {}, "expected class indices >= 0, got values from -1 to 0"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 10], {"num_classes": 10}, "expected class indices in [0, 9], got values "
                                                                     "from 0 to 10"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 1], {"start": 2}, "start: expected an index below the 2 images"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 1], {"start": -1}, "start: expected an image index >= 0, got -1"),
    (np.zeros((2, 4, 4, 3), np.uint8), [0, 1], {"limit": 0}, "limit: expected a number of images >= 1"),
])
def test_load_npz_checks_what_it_loads(tmp_path, x, y, kw, message):
    from fdgpu.data import load_npz

    np.savez(tmp_path / "d.npz", x=x, y=np.asarray(y))
    with pytest.raises(ValueError) as info:
        load_npz(tmp_path / "d.npz", **kw)
    assert message in str(info.value)


def test_load_npz_accepts_floats_in_range_and_slices(tmp_path):
    from fdgpu.data import load_npz

    x = np.random.default_rng(0).random((5, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    xs, ys = load_npz(tmp_path / "d.npz", start=1, limit=3, num_classes=10)
    assert torch.equal(xs, torch.from_numpy(x[1:4]).permute(0, 3, 1, 2)) and ys.tolist() == [1, 2, 3]
    np.save(tmp_path / "single.npy", x)
    with pytest.raises(ValueError, match="which is a single .npy array"):
        load_npz(tmp_path / "single.npy")


# ------------------------------------------------------------------------------------------------ image folders
def _multipage_tiff(path: Path) -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def test_load_image_folder_applies_orientation_and_refuses_what_it_would_change(odd, tmp_path):
    """eval's image folders read images as compress does: as displayed, and never reduced or flattened silently."""
    import shutil

    from fdgpu.data import load_image_folder

    d = tmp_path / "imgs"
    d.mkdir()
    shutil.copy(odd / "rotated.jpg", d / "r.jpg")
    (d / "sub.png").mkdir()  # a folder with an image suffix is not an image
    x, y, names = load_image_folder(d)
    assert names == ["r.jpg"] and x.shape == (1, 3, 40, 20)  # displayed 20 wide, 40 high
    assert torch.equal(x[0], to_tensor(_displayed(odd / "rotated.jpg")))
    _multipage_tiff(odd / "anim.tif")
    for bad, why in (("anim.tif", "got 3 frames"), ("rgb16.png", "got 16-bit colour samples"),
                     ("rgba.png", "transparent pixels"), ("cmyk.jpg", "mode 'CMYK'"), ("zero.png", "cannot identify")):
        shutil.copy(odd / bad, d / bad)
        with pytest.raises(ValueError, match="expected a readable 8-bit image") as info:
            load_image_folder(d)
        assert bad in str(info.value) and why in str(info.value)
        (d / bad).unlink()
    (d / "labels.csv").write_text("ImageId,TrueLabel\nr,cat\n")
    with pytest.raises(ValueError, match="labels_csv: expected columns ImageId,TrueLabel with an integer label"):
        load_image_folder(d, labels_csv=d / "labels.csv")


def test_eval_on_an_image_folder_with_an_animated_gif_is_a_message(tiny, odd, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    _multipage_tiff(d / "anim.tif")
    assert main(["eval", "--data", str(d), "--weights", str(tiny / "r20.pt"), "--quiet", "--no-plot"]) == 2
    assert "anim.tif: expected a readable 8-bit image, got ValueError: expected a single image, got 3 frames" in \
        capsys.readouterr().err

"""``fdgpu demo`` and ``fdgpu compress``; what every command tells a new user (extras, help texts, progress)."""
import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fdgpu
from fdgpu.cli import build_parser, main

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


def test_demo_writes_table_and_figure(tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    titles = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (titles.append(fig._suptitle.get_text()),
                                                                  save(fig, *a, **k))[1])
    assert main(["demo", "--out", str(tmp_path), "--images", "chelsea", "--repeats", "2"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    for label in ("JPEG q75", "JPEG q50", "JPEG q20", "FD 1x", "FD 2x", "FD 3x", "FD-official 1x", "PSNR", "SSIM",
                  "ms / image, median of 2", "min-max", "several-fold on a busy CPU", "centre crops of 128 px"):
        assert label in out
    assert captured.err.startswith("fdgpu demo: JPEG q75/q50/q20 and FD 1x/2x/3x on 1 photo(s), 2 timed run(s)")
    assert titles == ["centre crops (up to 128 x 128 pixels, enlarged without smoothing) of each photo"]
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


# ------------------------------------------------------------------------------------------- a new user's path
def _extras():
    import tomllib

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["optional-dependencies"]


def test_demo_extra_is_small():
    extras = _extras()
    assert extras["demo"] == ["scikit-image>=0.22", "matplotlib"]
    for heavy in ("triton", "pytest", "faiss", "hypothesis", "kornia"):
        assert not any(dep.startswith(heavy) for dep in extras["demo"] + extras["compress"])


def test_tools_and_all_extras_are_the_unions():
    # written out in pyproject.toml (static metadata), so a new extra's packages must be added to them by hand
    extras = _extras()
    assert sorted(extras["tools"]) == sorted(set(extras["demo"] + extras["compress"] + extras["eval"]))
    others = [dep for name, deps in extras.items() if name != "all" for dep in deps]
    assert sorted(extras["all"]) == sorted(set(others))


def test_ci_installs_every_package_a_test_can_skip_without():
    """A fresh clone's `bash .ci/run` (the [test] extra, then torchattacks) installs every optional package the
    tests import or skip without, so that only absent data makes a test skip."""
    import re

    repo = Path(__file__).resolve().parents[1]
    pip_name = {"PIL": "pillow", "skimage": "scikit-image", "faiss": "faiss-cpu", "scipy": "scipy"}
    core = {"numpy", "torch", "tqdm", "fdgpu"}  # the package itself (e.g. importorskip("fdgpu.kernels"))
    ci = (repo / ".ci" / "run").read_text()
    extras = re.search(r'pip install -q -e "\.\[([\w,]+)\]"', ci).group(1).split(",")
    assert "test" in extras
    test_extra = {re.split(r"[<>=\[]", dep)[0].lower() for name in extras for dep in _extras()[name]}
    installed = test_extra | set(re.findall(r"pip install -q --no-deps ([\w-]+)==", ci))
    used = set()
    for f in (repo / "tests").glob("*.py"):
        text = f.read_text()
        used |= {m.split(".")[0] for m in re.findall(r"importorskip\(\s*[\"']([\w.]+)[\"']", text)}
        if "imagenet_available" in text:  # tests that skip without the imagenet extra
            used |= set(_extras()["imagenet"])
    needed = {pip_name.get(m, m).lower().split(">")[0] for m in used} - core
    assert {"simplejpeg", "torchattacks", "efficientnet-lite-pytorch"} <= needed  # the scan finds them
    assert sorted(needed - installed) == []


@pytest.mark.parametrize("argv, module, extra", [
    (["demo", "--images", "chelsea"], "skimage", "demo"),
    (["demo", "--images", "chelsea"], "matplotlib", "demo"),
    (["compress", "a.png", "--quality", "50"], "PIL", "compress"),
    (["bench", "--synthetic"], "matplotlib", "bench"),
    (["bench", "--synthetic", "--methods", "fdgpu_fd", "quilting"], "faiss", "bench"),
    (["eval", "--defences", "tvm"], "skimage", "eval"),
])
def test_commands_check_their_extra_up_front(argv, module, extra, tmp_path, monkeypatch, capsys):
    for name in list(sys.modules):  # a plain `pip install .`: the module cannot be imported
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"pip install 'fdgpu[{extra}]'" in err and err.startswith(f"fdgpu {argv[0]}: needs ") and "\n" not in err
    assert not out.exists()  # nothing started


def test_missing_packages_are_named_in_a_sentence(tmp_path, monkeypatch, capsys):
    for module in ("kornia", "faiss"):
        for name in list(sys.modules):
            if name == module or name.startswith(module + "."):
                monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["bench", "--synthetic", "--methods", "kornia", "quilting", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == ("fdgpu bench: needs kornia and faiss-cpu, which are not installed; install them "
                                       "with: pip install 'fdgpu[bench]' (or pip install kornia faiss-cpu)\n")


def test_every_option_has_help_and_defaults_are_stated():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.option_strings and action.help != argparse.SUPPRESS:
                assert action.help, (name, action.option_strings)
    for name, flag in (("demo", "--repeats"), ("bench", "--quality"), ("bench", "--seed"),
                       ("compress", "--subsampling")):
        action = next(a for a in sub.choices[name]._actions if flag in a.option_strings)
        assert "default" in action.help, (name, flag)
        text = sub.choices[name].format_help()
        assert str(action.default) in text, (name, flag)


def test_compress_outputs_get_the_umask_mode(tmp_path):
    Image.fromarray(_photo(16, 16)).save(tmp_path / "a.png")
    for mask, fmt in ((0o022, "png"), (0o027, "jpeg")):
        old = os.umask(mask)
        try:
            out = tmp_path / f"o{mask:o}"
            assert main(["compress", str(tmp_path / "a.png"), "--out", str(out), "--quality", "50",
                         "--format", fmt]) == 0
        finally:
            os.umask(old)
        (f,) = out.iterdir()
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0600


def test_compress_skips_its_output_folder_inside_an_input_folder(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_photo(16, 24)).save(src / "a.png")
    for _ in range(2):  # the second run must not re-ingest in/out/a.png
        assert main(["compress", str(src), "--out", str(src / "out"), "--fd", "1"]) == 0
        assert "wrote 1 of 1 image(s)" in capsys.readouterr().out
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == ["a.png", "out", "out/a.png"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a torch without CUDA")
def test_eval_device_cuda_without_cuda_is_a_message(tmp_path, capsys):
    assert main(["eval", "--device", "cuda", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fdgpu eval: --device cuda: expected a CUDA device, got none: ")
    assert "use --device cpu" in err and "\n" not in err and not (tmp_path / "r.json").exists()
    assert main(["eval", "--device", "gpu"]) == 2
    assert "--device: expected cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err


def test_eval_with_no_arguments_says_what_it_does(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    assert main(["eval"]) == 2  # no data anywhere: the message names the command that gets it
    err = capsys.readouterr().err
    assert "measures clean accuracy only; e.g. --defences none jpeg:75 fd:1" in err
    assert "`fdgpu data cifar10`" in err

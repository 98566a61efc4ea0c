"""``fdgpu data cifar10`` and ``fdgpu models fetch``: served by a local HTTP server on 127.0.0.1 from archives and
checkpoints these tests make themselves (no machine here reaches the internet), including a truncated transfer, a
bad checksum, no server at all and payloads that must never be unpickled."""
import hashlib
import http.server
import io
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fdgpu import download
from fdgpu.cli import main
from fdgpu.data import load_npz
from fdgpu.models import cifar_resnet

REPO = Path(__file__).resolve().parents[1]


class _Evil:
    """Unpickling this would run a shell command: the loaders must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo unpickled-code-ran",))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        truncate = self.path.startswith("/truncated/")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3] if truncate else body)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server():
    """(base URL, dict path -> bytes) of a threaded HTTP server on 127.0.0.1."""
    files = {}
    handler = type("Handler", (_Handler,), {"files": files})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    httpd.server_close()


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    # the official batches are Python 2 pickles: bytes keys, a list of labels, a (N, 3072) uint8 array in CHW order
    blob = pickle.dumps({b"batch_label": b"testing batch", b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, protocol=2)
    return blob, data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), np.array(labels, dtype=np.int64)


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


@pytest.fixture(scope="module")
def cifar(server):
    base, files = server
    test_blob, xt, yt = _batch(20, 1)
    train_blob, xr, yr = _batch(30, 2)
    archive = _tar({"test_batch": test_blob, "data_batch_1": train_blob, "batches.meta": b"meta"})
    files["/cifar-10-python.tar.gz"] = archive
    files["/truncated/cifar-10-python.tar.gz"] = archive
    return {"url": base + "/cifar-10-python.tar.gz", "md5": hashlib.md5(archive).hexdigest(), "archive": archive,
            "test": (xt, yt), "train": (xr, yr), "base": base}


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_data_cifar10_downloads_checks_and_converts(cifar, tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "cifar10", "--root", str(root), "--url", cifar["url"], "--md5", cifar["md5"],
                 "--quiet"]) == 0
    assert "--data-root" in capsys.readouterr().out
    assert _leftovers(root) == ["cifar10", "test.npz", "train10k.npz"]  # no archive, no temporary file
    for name, (x, y) in (("test.npz", cifar["test"]), ("train10k.npz", cifar["train"])):
        with np.load(root / "cifar10" / name) as f:
            assert f["x"].dtype == np.uint8 and np.array_equal(f["x"], x) and np.array_equal(f["y"], y)
    xt, yt = load_npz("test", root=root, start=3, limit=5)  # what fdgpu eval reads
    assert torch.equal(xt, torch.from_numpy(cifar["test"][0][3:8]).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(yt, torch.from_numpy(cifar["test"][1][3:8]))
    assert oct((root / "cifar10" / "test.npz").stat().st_mode & 0o777) == oct(0o666 & ~_process_umask())


def test_data_default_root_is_fdgpu_data_then_the_cache(cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    assert main(["data", "cifar10", "--url", cifar["url"], "--md5", cifar["md5"], "--quiet", "--keep-archive"]) == 0
    cache = tmp_path / "home" / ".cache" / "fdgpu" / "data" / "cifar10"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar-10-python.tar.gz", "test.npz", "train10k.npz"]
    assert load_npz("test")[0].shape == (20, 3, 32, 32)  # found with no root and no FDGPU_DATA
    monkeypatch.setenv("FDGPU_DATA", str(tmp_path / "env"))
    assert main(["data", "cifar10", "--url", cifar["url"], "--md5", cifar["md5"], "--quiet"]) == 0
    assert (tmp_path / "env" / "cifar10" / "test.npz").is_file()


def test_data_says_when_the_counts_differ_from_the_published_set(cifar, tmp_path, capsys):
    assert main(["data", "cifar10", "--root", str(tmp_path), "--url", cifar["url"], "--md5", cifar["md5"],
                 "--quiet"]) == 0
    assert capsys.readouterr().err == (
        "fdgpu data: note: the files hold test.npz 20, train10k.npz 30 images, where the published CIFAR-10 has "
        "10,000 in test_batch and 10,000 in data_batch_1: this archive is not the official one\n")
    full = [tmp_path / "full" / n for n in ("test.npz", "train10k.npz")]
    (tmp_path / "full").mkdir()
    for f in full:
        np.savez(f, x=np.zeros((1, 32, 32, 3), np.uint8), y=np.zeros(10000, np.int64))
    assert download.cifar10_count_note(full) == ""


def test_data_archive_missing_a_batch_writes_nothing(tmp_path, capsys):
    local = tmp_path / "c.tar.gz"
    local.write_bytes(_tar({"test_batch": _batch(5, 1)[0]}))
    root = tmp_path / "d"
    assert main(["data", "cifar10", "--root", str(root), "--url", local.as_uri(), "--md5",
                 hashlib.md5(local.read_bytes()).hexdigest(), "--quiet"]) == 1
    assert "expected cifar-10-batches-py/data_batch_1 in the archive, got no such file; nothing was written" in \
        capsys.readouterr().err
    # no test.npz without its train10k.npz; the verified download stays for the next run
    assert _leftovers(root) == ["cifar-10-python.tar.gz", "cifar10"]


def test_data_refuses_an_oversized_member_before_reading_it(tmp_path):
    """A small archive that unpacks to a huge member (a 'zip bomb'): refused from its header, never read."""
    import tracemalloc

    size = download.CIFAR10_MEMBER_CAP + 8 * 2 ** 20
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = size

        class Zeros(io.RawIOBase):
            left = size

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros()))
    assert archive.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"expected cifar-10-batches-py/test_batch of at most 33,554,432 bytes .*"
                                             r"got 41,943,040 bytes; this is not the CIFAR-10 archive"):
            download.convert_cifar10(archive, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20, peak  # reading the member would take 40 MiB
    assert not (tmp_path / "out").exists()


def test_data_download_on_a_full_disk_is_one_line_and_leaves_nothing(cifar, tmp_path):
    """The kernel refuses writes past 64 KiB in a child process (as a full disk would) while the archive streams in."""
    def limit():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    local = tmp_path / "c.tar.gz"
    local.write_bytes(cifar["archive"])
    assert len(cifar["archive"]) > 65536
    root = tmp_path / "d"
    r = subprocess.run([sys.executable, "-m", "fdgpu.cli", "data", "cifar10", "--root", str(root), "--url",
                        local.as_uri(), "--md5", cifar["md5"], "--quiet"], capture_output=True, text=True,
                       preexec_fn=limit, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)
    assert r.returncode == 1
    assert r.stderr == (f"fdgpu data: cannot write {root / 'cifar10' / 'cifar-10-python.tar.gz'}: File too large; "
                        f"nothing partial was written\n")
    assert _leftovers(root) == ["cifar10"]


def test_data_bad_checksum_leaves_nothing(cifar, tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "cifar10", "--root", str(root), "--url", cifar["url"], "--md5", "0" * 32, "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("fdgpu data: ") and "md5 mismatch, expected " + "0" * 32 in err and "\n" not in err
    assert _leftovers(root) == ["cifar10"]
    # the default is the md5 the dataset page publishes, which this test archive does not have
    assert main(["data", "cifar10", "--root", str(root), "--url", cifar["url"], "--quiet"]) == 1
    assert f"expected {download.CIFAR10_MD5}" in capsys.readouterr().err
    assert download.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


def test_data_truncated_download_leaves_nothing(cifar, tmp_path, capsys):
    root = tmp_path / "data"
    url = cifar["base"] + "/truncated/cifar-10-python.tar.gz"
    assert main(["data", "cifar10", "--root", str(root), "--url", url, "--md5", cifar["md5"], "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert f"the transfer stopped after {len(cifar['archive']) // 3} of {len(cifar['archive'])} bytes" in err
    assert "\n" not in err and _leftovers(root) == ["cifar10"]


def test_offline_and_missing_file_are_one_line_errors(cifar, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on: what an offline machine sees
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data"
    assert main(["data", "cifar10", "--root", str(root), "--url", f"http://127.0.0.1:{port}/c.tar.gz",
                 "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "could not reach 127.0.0.1" in err and "are you offline?" in err and "\n" not in err
    assert main(["data", "cifar10", "--root", str(root), "--url", cifar["base"] + "/nope.tar.gz", "--quiet"]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert _leftovers(root) == ["cifar10"]


def test_data_file_url_and_bad_md5_argument(cifar, tmp_path, capsys):
    local = tmp_path / "c.tar.gz"
    local.write_bytes(cifar["archive"])
    assert main(["data", "cifar10", "--root", str(tmp_path / "d"), "--url", local.as_uri(), "--md5", cifar["md5"],
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["data", "cifar10", "--root", str(tmp_path / "e"), "--md5", "xyz", "--quiet"]) == 2  # usage error
    assert capsys.readouterr().err == "fdgpu data: --md5: expected 32 hex digits, got 'xyz'\n"
    assert main(["models", "fetch", "resnet20", "--root", str(tmp_path / "m"), "--sha256", "123", "--quiet"]) == 2
    assert capsys.readouterr().err == "fdgpu models: --sha256: expected 64 hex digits, got '123'\n"
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()  # refused before any work


def test_cifar_batches_are_never_unpickled_beyond_arrays(server, tmp_path, capsys):
    base, files = server

    archive = _tar({"test_batch": pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2),
                    "data_batch_1": _batch(3, 0)[0]})
    files["/evil.tar.gz"] = archive
    assert main(["data", "cifar10", "--root", str(tmp_path), "--url", base + "/evil.tar.gz",
                 "--md5", hashlib.md5(archive).hexdigest(), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "expected a pickled CIFAR-10 batch" in err and "only numpy arrays" in err
    assert not (tmp_path / "cifar10" / "test.npz").exists()


def test_eval_reads_an_extracted_batches_folder(cifar, tmp_path, capsys):
    with tarfile.open(fileobj=io.BytesIO(cifar["archive"])) as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "cifar-10-batches-py"
    x, y = load_npz(folder, limit=7)
    assert torch.equal(x, torch.from_numpy(cifar["test"][0][:7]).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(y, torch.from_numpy(cifar["test"][1][:7]))
    x1, _ = load_npz(folder / "data_batch_1")
    assert torch.equal(x1, torch.from_numpy(cifar["train"][0]).permute(0, 3, 1, 2).float() / 255)
    # torchvision's layout: <root>/cifar-10-batches-py; "test" / "train10k" resolve into it
    assert torch.equal(load_npz("train10k", root=tmp_path)[1], torch.from_numpy(cifar["train"][1]))
    weights = tmp_path / "w.pt"
    torch.save(cifar_resnet(20).state_dict(), weights)
    assert main(["eval", "--data", str(folder), "--weights", str(weights), "--limit", "6", "--quiet",
                 "--device", "cpu"]) == 0
    assert "(6 images" in capsys.readouterr().out


def _checkpoint(seed=0):
    torch.manual_seed(seed)
    net = cifar_resnet(20)
    state = {"module." + k: v for k, v in net.state_dict().items()}  # the published files' DataParallel keys
    buf = io.BytesIO()
    torch.save({"best_prec1": 91.5, "state_dict": state}, buf)
    return buf.getvalue(), net.state_dict()


def test_models_fetch_checks_sha256_and_converts(server, tmp_path, capsys):
    base, files = server
    blob, state = _checkpoint()
    files["/r20.th"] = files["/truncated/r20.th"] = blob
    sha = hashlib.sha256(blob).hexdigest()
    root = tmp_path / "models"
    assert main(["models", "fetch", "resnet20", "--root", str(root), "--url", base + "/r20.th", "--sha256", sha,
                 "--quiet"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["resnet20-12fca82f.th", "resnet20-cifar10.pt"]
    converted = torch.load(root / "resnet20-cifar10.pt", weights_only=True)
    assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)
    net = cifar_resnet(20, weights=download.pretrained("resnet20", root=root))
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    # a mirror given without --sha256 is held to the published hash, which this file does not have
    root2 = tmp_path / "m2"
    assert main(["models", "fetch", "resnet20", "--root", str(root2), "--url", base + "/r20.th", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert f"sha256 mismatch, expected {download.RESNETS['resnet20'][1]}" in err and "\n" not in err
    assert list(root2.iterdir()) == []
    assert main(["models", "fetch", "resnet20", "--root", str(root2), "--url", base + "/truncated/r20.th",
                 "--sha256", sha, "--quiet"]) == 1
    assert "the transfer stopped after" in capsys.readouterr().err and list(root2.iterdir()) == []


def test_models_fetch_default_root_and_published_addresses(server, tmp_path, monkeypatch, capsys):
    base, files = server
    blob, _ = _checkpoint(1)
    files["/r32.th"] = blob
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FDGPU_MODELS", raising=False)
    with pytest.raises(FileNotFoundError, match="fdgpu models fetch resnet32$"):
        download.pretrained("resnet32")
    assert main(["models", "fetch", "resnet32", "--url", base + "/r32.th", "--sha256",
                 hashlib.sha256(blob).hexdigest(), "--quiet"]) == 0
    assert download.pretrained("resnet32") == tmp_path / ".cache" / "fdgpu" / "models" / "resnet32-cifar10.pt"
    assert main(["models", "fetch", "resnet99"]) == 2
    assert main(["models", "fetch", "resnet20", "resnet32", "--url", base + "/r32.th"]) == 2
    err = capsys.readouterr().err
    assert "expected names among resnet20, resnet32, resnet44, resnet56, got resnet99" in err
    assert "expected one NAME, got 2" in err
    # the published files: akamaster/pytorch_resnet_cifar10's pretrained_models at a fixed commit, hash in the name
    for name, (file, sha) in download.RESNETS.items():
        assert file == f"{name}-{sha[:8]}.th" and len(sha) == 64
        assert download.RESNET_URL.format(file=file).startswith(
            "https://github.com/akamaster/pytorch_resnet_cifar10/raw/")


def test_models_fetch_never_unpickles_code(server, tmp_path, capsys):
    base, files = server

    buf = io.BytesIO()
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "extra": _Evil()}, buf)
    blob = buf.getvalue()
    files["/evil.th"] = blob
    assert main(["models", "fetch", "resnet20", "--root", str(tmp_path), "--url", base + "/evil.th", "--sha256",
                 hashlib.sha256(blob).hexdigest(), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UnpicklingError: not a file of tensors" in err and "it was not loaded" in err
    assert "weights_only` set to `False`" not in err and "weights_only=False" not in err  # never that advice
    assert not (tmp_path / "resnet20-cifar10.pt").exists()


def test_missing_data_and_weights_name_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FDGPU_DATA", raising=False)
    monkeypatch.delenv("FDGPU_MODELS", raising=False)
    assert main(["eval", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "`fdgpu data cifar10`" in err and "--data-root" in err and "root=..." not in err
    (tmp_path / "d" / "cifar10").mkdir(parents=True)
    np.savez(tmp_path / "d" / "cifar10" / "test.npz", x=np.zeros((2, 32, 32, 3), np.uint8), y=np.zeros(2, np.int64))
    assert main(["eval", "--data-root", str(tmp_path / "d"), "--quiet"]) == 2
    assert "fdgpu models fetch resnet20" in capsys.readouterr().err
    assert main(["eval", "--data", "train10k", "--data-root", str(tmp_path / "d"), "--quiet"]) == 2
    assert f"`fdgpu data cifar10 --root {tmp_path / 'd'}` downloads it" in capsys.readouterr().err


def test_example_says_how_to_get_weights(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FDGPU_DATA", "FDGPU_MODELS")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(REPO / "examples" / "attack_fdjpeg.py")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "KeyError" not in r.stderr
    assert "download them with: fdgpu models fetch resnet20" in r.stderr


def test_batch_folder_labels_checked_like_npz(tmp_path):
    # the cifar-10-batches-py path of load_npz applies the same label check as the .npz path (issue 14, item 4)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    blob, x, y = _batch(6, 0)
    (folder / "test_batch").write_bytes(blob)
    assert torch.equal(load_npz(folder, num_classes=10)[1], torch.from_numpy(y))
    with pytest.raises(ValueError, match=r"y in .*test_batch.*\[0, 4\]"):
        load_npz(folder, num_classes=5)


def _process_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask

"""fdgpu.files: every output whole or absent, on a full disk too; SIGTERM handled as Ctrl-C; stale temporary files
of killed runs removed. The full disk is a real one where the test can make it without privileges: a file-size limit
(``RLIMIT_FSIZE``) in a child process makes the kernel refuse the write past it (``EFBIG``), as a full file system
refuses it (``ENOSPC``), which is simulated in-process by a write that stops half way."""
import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fdgpu import files
from fdgpu.files import WriteError, clean_stale, write_file, write_files, write_stream

REPO = Path(__file__).resolve().parents[1]


def _listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def full_disk(monkeypatch):
    """Every write through fdgpu.files stops after 10 bytes with ENOSPC, as on a full file system."""
    def short_then_full(fd, data):
        os.write(fd, bytes(memoryview(data)[:10]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_write_all", short_then_full)


def test_write_file_writes_whole_with_the_plain_mode(tmp_path):
    assert write_file(tmp_path / "a.bin", lambda fh: fh.write(b"x" * 100_000)) is True
    assert (tmp_path / "a.bin").read_bytes() == b"x" * 100_000 and _listing(tmp_path) == ["a.bin"]
    mask = files.umask()
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o666 & ~mask
    assert write_file(tmp_path / "b.bin", lambda fh: False) is False and _listing(tmp_path) == ["a.bin"]


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real = os.write
    monkeypatch.setattr(files.os, "write", lambda fd, data: real(fd, bytes(memoryview(data)[:7])))
    data = bytes(range(256)) * 40
    write_file(tmp_path / "a.bin", lambda fh: fh.write(data))
    monkeypatch.undo()
    assert (tmp_path / "a.bin").read_bytes() == data


def test_a_full_disk_is_an_error_naming_the_file_and_leaves_nothing(tmp_path, full_disk):
    (tmp_path / "old.png").write_bytes(b"an earlier run's output")
    with pytest.raises(WriteError, match=r"cannot write .*old\.png: No space left on device; nothing partial") as e:
        write_file(tmp_path / "old.png", lambda fh: fh.write(b"y" * 1000))
    assert e.value.errno == errno.ENOSPC and e.value.target == tmp_path / "old.png"
    assert _listing(tmp_path) == ["old.png"] and (tmp_path / "old.png").read_bytes() == b"an earlier run's output"


def test_write_files_all_or_nothing(tmp_path, monkeypatch):
    calls = []
    real = files._write_all

    def second_fails(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data)

    monkeypatch.setattr(files, "_write_all", second_fails)
    with pytest.raises(WriteError, match="b.md"):
        write_files([(tmp_path / "a.json", lambda fh: fh.write(b"{}")), (tmp_path / "b.md", lambda fh: fh.write(b"|"))])
    assert _listing(tmp_path) == []

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):  # an encoder's error: nothing was written either
        write_files([(tmp_path / "a.json", lambda fh: fh.write(b"{}")), (tmp_path / "c.png", broken)])
    assert _listing(tmp_path) == []


def test_write_stream_full_disk_and_interrupt(tmp_path):
    def chunks(fh):
        for _ in range(4):
            fh.write(b"z" * 65536)

    assert write_stream(tmp_path / "ok.bin", chunks) and (tmp_path / "ok.bin").stat().st_size == 4 * 65536

    def interrupted(fh):
        fh.write(b"z" * 65536)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_stream(tmp_path / "int.bin", interrupted)
    assert _listing(tmp_path) == ["ok.bin"]


def _limited(limit: int):
    """preexec_fn: files of this process may not grow past ``limit`` bytes (the kernel refuses the write: EFBIG)."""
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_real_refused_write_in_a_child_process(tmp_path):
    """(write_stream's: tests/test_download.py, a download refused the same way.)"""
    code = ("import importlib.util, sys\n"  # fdgpu/files.py alone (standard library only): no torch to import
            "spec = importlib.util.spec_from_file_location('files', sys.argv[2])\n"
            "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
            "try:\n"
            "    files.write_file(sys.argv[1], lambda fh: fh.write(b'q' * 100000))\n"
            "except files.WriteError as exc:\n"
            "    print(exc); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.bin"), files.__file__], capture_output=True,
                       text=True, cwd=REPO, preexec_fn=_limited(4096), timeout=120,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith(f"cannot write {tmp_path / 'big.bin'}: File too large; nothing partial was written")
    assert _listing(tmp_path) == []


def test_clean_stale_removes_only_dead_processes_temporaries(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".fdgpu-{dead.pid}-abcd_123.png", tmp_path / "sub" / f".fdgpu-{dead.pid}-zz99zz99.jpg"]
    live = tmp_path / f".fdgpu-{os.getpid()}-abcdefgh.png"
    other = [tmp_path / ".fdgpu-notapid.png", tmp_path / "keep.png"]
    for p in stale + [live] + other:
        p.write_bytes(b"partial")
    assert clean_stale(tmp_path) == [stale[0]]
    assert sorted(clean_stale(tmp_path, recursive=True)) == [stale[1]]
    assert live.exists() and all(p.exists() for p in other)


def test_terminate_as_interrupt_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as e:
        with files.terminate_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes of the main thread
                pass
    assert files.exit_status(e.value) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    assert files.exit_status(KeyboardInterrupt()) == 130


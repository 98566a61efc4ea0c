"""Writing files the way every command of fdgpu does: whole or not at all, with the mode a plain ``open`` gives, in
an ``--out`` checked before any work (:func:`prepare_out`); and a one-line account of a file ``torch.load`` refused
(:func:`load_error`).

Every output is encoded in memory first (:func:`write_file`, :func:`write_files`; a download streams into its
temporary file instead, :func:`write_stream`), written to a temporary file ``.fdgpu-<pid>-XXXXXXXX<suffix>`` beside
its target through a write that checks every byte, flushed to the disk (``fsync``) and only then renamed into place.
A full disk, a quota or a read-only folder is a :class:`WriteError` naming the file, and no partial file remains
under any name. A run that was killed outright (SIGKILL, a power cut) can leave such a temporary file; the next run
of a command that writes into that folder removes those of processes that no longer run (:func:`clean_stale`).
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import signal
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]
TEMP_PREFIX = ".fdgpu-"
# what writing to a file can fail with (the rest is the caller's own error, passed through)
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM}
_TEMP_NAME = re.compile(r"^\.fdgpu-(\d+)-[a-z0-9_]{8}")  # mkstemp's 8 random characters follow our prefix


class WriteError(OSError):
    """An output could not be written (a full disk, a quota, a read-only or vanished folder). The message names the
    file, says why in one line, and that nothing partial was left; ``errno`` is the system's."""

    def __init__(self, target, exc: OSError):
        why = exc.strerror or str(exc) or type(exc).__name__
        super().__init__(exc.errno, f"cannot write {os.fspath(target)}: {why}; nothing partial was written")
        self.target = Path(target)

    def __str__(self) -> str:
        return str(self.strerror)


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) during a command: raised like KeyboardInterrupt, with the signal's number, so that the
    command stops the same way for both and exits with ``128 + signum``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM stops the command the way Ctrl-C does (an :class:`Interrupted` is raised where
    the main thread is, the temporary files of unfinished outputs are removed on the way out). The previous handler
    is restored after. Off the main thread (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)  # None: set from C


def exit_status(exc: KeyboardInterrupt) -> int:
    """The shell's exit status for a command stopped by ``exc``: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def umask() -> int:
    """The process's umask (``os.umask`` can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_all(fd: int, data) -> None:
    """``os.write`` until every byte is written: a short write is retried, a write of 0 bytes is a full disk."""
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the file system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_for(target: Path) -> Tuple[int, str]:
    return tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=target.suffix, dir=target.parent)


def _discard(tmp: Optional[str]) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _commit(pairs: Sequence[Tuple[str, Path]]) -> None:
    """Rename each finished temporary file onto its target (the mode a plain ``open`` gives), then sync the folders."""
    mode = 0o666 & ~umask()
    for tmp, target in pairs:
        os.chmod(tmp, mode)
    for tmp, target in pairs:
        os.replace(tmp, target)
    for folder in dict.fromkeys(target.parent for _, target in pairs):
        _fsync_folder(folder)


def write_files(outputs: Iterable[Tuple[PathLike, Callable[[BinaryIO], object]]]) -> List[Path]:
    """Write several files together: each ``write(fh)`` fills an in-memory binary buffer ``fh`` for its target;
    when every one is encoded and written to its temporary file and synced, all are renamed into place.

    A ``write`` that returns False has nothing to write: its target is left alone. Returns the targets written.
    On any error (and on KeyboardInterrupt) every temporary file is removed and no target is touched.

    Raises:
        WriteError: a temporary file could not be created or written (the error names the target).
    """
    encoded = []
    for target, write in outputs:
        buf = io.BytesIO()
        if write(buf) is not False:
            encoded.append((Path(target), buf.getbuffer()))
    done: List[Tuple[str, Path]] = []
    tmp = None
    try:
        for target, data in encoded:
            try:
                fd, tmp = _temp_for(target)
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise WriteError(target, exc) from None
            done.append((tmp, target))
            tmp = None
        _commit(done)
    except BaseException:
        _discard(tmp)
        for t, _ in done:
            _discard(t)
        raise
    return [target for _, target in done]


def write_file(target: PathLike, write: Callable[[BinaryIO], object]) -> bool:
    """Write one file whole or not at all: ``write(fh)`` fills an in-memory binary buffer (``Image.save(fh,
    format=...)``, ``torch.save(obj, fh)``, ``fh.write(text.encode())``), which is then written and renamed into
    place as :func:`write_files` does. Returns whether ``target`` was written (False when ``write`` returns False).

    Example:
        >>> import os, tempfile
        >>> folder = tempfile.mkdtemp()
        >>> write_file(os.path.join(folder, "a.txt"), lambda fh: fh.write(b"hello\\n"))
        True
        >>> os.listdir(folder)
        ['a.txt']
    """
    return bool(write_files([(target, write)]))


def write_stream(target: PathLike, write: Callable[[BinaryIO], object]) -> bool:
    """Like :func:`write_file` for data too large to hold in memory (a download): ``write(fh)`` writes into the
    temporary file itself, an ordinary buffered file whose every write raises on a full disk. Returns whether
    ``target`` was written (False when ``write`` returns False)."""
    target = Path(target)
    tmp = None
    try:
        try:
            fd, tmp = _temp_for(target)
        except OSError as exc:
            raise WriteError(target, exc) from None
        try:
            with open(fd, "wb") as fh:
                if write(fh) is False:
                    _discard(tmp)
                    return False
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if isinstance(exc, WriteError) or exc.errno not in _DISK_ERRORS:
                raise
            raise WriteError(target, exc) from None
        _commit([(tmp, target)])
        return True
    except BaseException:
        _discard(tmp)
        raise


def clean_stale(folder: PathLike, recursive: bool = False) -> List[Path]:
    """Remove the temporary files ``.fdgpu-<pid>-*`` that a killed run of a process no longer running left in
    ``folder`` (and its subfolders with ``recursive``); those of running processes are kept. Returns the removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in (folder.rglob(f"{TEMP_PREFIX}*") if recursive else folder.glob(f"{TEMP_PREFIX}*")):
        m = _TEMP_NAME.match(path.name)
        if m is None or not path.is_file() or path.is_symlink() or _running(int(m.group(1))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a number no process can have: kept, to be safe)
    return True


def prepare_out(out: Path, file: Optional[str] = None) -> str:
    """Check (and create, if needed) the place a command writes to, before any work; a usage error or ''.

    ``file=None``: ``out`` is the output folder (``fdgpu compress``, ``fdgpu bench``). Otherwise ``out`` is a file
    and ``file`` says what it holds (``fdgpu eval``: "the results JSON"); its folder is checked and created. The
    messages name ``--out``: the option every command that writes takes. The folder's stale temporary files (of
    runs that were killed, :func:`clean_stale`) are removed.
    """
    out = Path(out)
    if file is None:
        folder = out
        if os.path.lexists(out) and not out.is_dir():
            return f"--out: expected a folder, got {str(out)!r} which exists and is not a folder; choose another --out"
    else:
        folder = out.parent
        if out.is_dir():
            return f"--out: expected a file name for {file}, got the folder {str(out)!r}"
        if os.path.lexists(folder) and not folder.is_dir():
            return f"--out: expected a file in a folder, got {str(out)!r} whose parent is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out: cannot create the folder {str(folder)!r} ({exc.strerror or exc}); choose another --out"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--out: cannot write in the folder {str(folder)!r} (permission denied); choose another --out"
    clean_stale(folder)  # what a killed earlier run left there
    return ""


def load_error(exc: BaseException) -> str:
    """A one-line account of why ``torch.load(..., weights_only=True)`` failed on a file."""
    text = str(exc)
    first = (text.strip().splitlines() or [""])[0][:160]
    if "weights only load failed" in text.lower():  # torch's text advises weights_only=False: never repeated here
        found = re.search(r"GLOBAL ([\w.]+)", text)
        first = "not a file of tensors that torch.load(..., weights_only=True) can read" + (
            f" (it asks for {found.group(1)}, which a file of tensors never needs)" if found else "")
    return f"{type(exc).__name__}: {first}"

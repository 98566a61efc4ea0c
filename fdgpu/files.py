"""Writing files the way every command of fdgpu does: whole or not at all, with the mode a plain ``open`` gives, in
an ``--out`` checked before any work (:func:`prepare_out`); and a one-line account of a file ``torch.load`` refused
(:func:`load_error`)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Optional


def umask() -> int:
    """The process's umask (``os.umask`` can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(target: Path, write: Callable[[str], object]) -> bool:
    """Run ``write(tmp)`` on a temporary file beside ``target``, then rename it into place.

    The temporary file is ``.fdgpu-*`` with ``target``'s suffix (savers that pick the format from the name, such as
    matplotlib's, see the real one) in ``target``'s folder (so the rename is atomic), and gets the mode a plain
    ``open`` would give (``mkstemp`` creates 0600). On any error it is removed and ``target`` is untouched; when
    ``write`` returns False (nothing to write) it is removed too. Returns whether ``target`` was written.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=".fdgpu-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        if write(tmp) is False:
            os.unlink(tmp)
            return False
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, target)
        return True
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def prepare_out(out: Path, file: Optional[str] = None) -> str:
    """Check (and create, if needed) the place a command writes to, before any work; a usage error or ''.

    ``file=None``: ``out`` is the output folder (``fdgpu compress``, ``fdgpu bench``). Otherwise ``out`` is a file
    and ``file`` says what it holds (``fdgpu eval``: "the results JSON"); its folder is checked and created. The
    messages name ``--out``: the option every command that writes takes.
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
    return ""


def load_error(exc: BaseException) -> str:
    """A one-line account of why ``torch.load(..., weights_only=True)`` failed on a file."""
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    if "weights only load failed" in first.lower():  # torch's text goes on to advise weights_only=False
        first = "not a file of tensors that torch.load(..., weights_only=True) can read"
    return f"{type(exc).__name__}: {first}"

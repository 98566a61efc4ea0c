"""Writing files the way every command of fdgpu does: whole or not at all, with the mode a plain ``open`` gives."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


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

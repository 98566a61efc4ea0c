"""Getting the data and weights the evaluation needs: ``fdgpu data cifar10`` and ``fdgpu models fetch``.

Everything lands under a root folder: ``--root``, else ``$FDGPU_DATA`` (data) / ``$FDGPU_MODELS`` (weights), else
``~/.cache/fdgpu/data`` and ``~/.cache/fdgpu/models``. ``fdgpu eval``, :func:`fdgpu.data.load_npz` and
:func:`pretrained` look in the same places, so after the two commands nothing needs to be passed.

Downloads are streamed to a temporary file beside the target (with a progress bar), checked against the published
checksum, and only then renamed into place: an interrupted or corrupt download never leaves a file under the
target's name. Checkpoints are read with ``torch.load(..., weights_only=True)`` only.

- CIFAR-10: the official ``cifar-10-python.tar.gz`` (md5 ``c58f30108f718f92721af3b95e74349a``, as the dataset page
  publishes it), converted to ``<root>/cifar10/test.npz`` (the 10,000 test images) and ``train10k.npz`` (training
  images 0-9999, ``data_batch_1``): ``x`` uint8 ``(N, 32, 32, 3)`` HWC RGB, ``y`` int64 ``(N,)``.
- Pretrained CIFAR ResNets 20/32/44/56 of akamaster/pytorch_resnet_cifar10 (BSD-2-Clause), checked by sha256 and
  converted to plain state_dicts ``<root>/resnet{depth}-cifar10.pt`` (the DataParallel ``module.`` prefix removed).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import os
import pickle
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

from .files import clean_stale, load_error, write_file, write_files, write_stream

PathLike = Union[str, os.PathLike]

CACHE = Path("~/.cache/fdgpu")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = ((f"{CIFAR10_FOLDER}/test_batch", "test.npz"), (f"{CIFAR10_FOLDER}/data_batch_1", "train10k.npz"))
CIFAR10_COUNTS = {"test.npz": 10000, "train10k.npz": 10000}  # images in the published test_batch, data_batch_1
# Largest archive member read: each official batch file is about 31 MB (31,035,704 bytes for data_batch_1: 10,000
# images of 3,072 bytes and their labels, pickled); anything larger is not a CIFAR-10 batch.
CIFAR10_MEMBER_CAP = 32 * 2 ** 20
# The commit of akamaster/pytorch_resnet_cifar10 whose pretrained_models/ these hashes were taken from.
RESNET_COMMIT = "d5489e8995e81e91ce6b1d69dcc98ad579b0b153"
RESNET_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/" + RESNET_COMMIT + "/pretrained_models/{file}"
RESNETS = {  # name: (published file, its sha256; the file name carries the first 8 hex digits, torch.hub style)
    "resnet20": ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
    "resnet32": ("resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850"),
    "resnet44": ("resnet44-014dd654.th", "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4"),
    "resnet56": ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367"),
}
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download or a checksum failed; the message is one line saying what to do."""


# --- where things live -----------------------------------------------------------------------------------------------

def data_dir(root: Optional[PathLike] = None) -> Path:
    """``root``, else ``$FDGPU_DATA``, else ``~/.cache/fdgpu/data`` (which may not exist yet)."""
    return Path(root or os.environ.get("FDGPU_DATA") or CACHE / "data").expanduser()


def models_dir(root: Optional[PathLike] = None) -> Path:
    """``root``, else ``$FDGPU_MODELS``, else ``~/.cache/fdgpu/models`` (which may not exist yet)."""
    return Path(root or os.environ.get("FDGPU_MODELS") or CACHE / "models").expanduser()


def pretrained(name: str = "resnet20", root: Optional[PathLike] = None) -> Path:
    """Path of the converted weights ``<models root>/<name>-cifar10.pt``.

    Raises:
        FileNotFoundError: naming the command that downloads them, when the file is not there.

    Examples:
        >>> from fdgpu.models import cifar_resnet
        >>> net = cifar_resnet(20, weights=pretrained("resnet20"))  # doctest: +SKIP
    """
    if name not in RESNETS:
        raise ValueError(f"name: expected one of {', '.join(RESNETS)}, got {name!r}")
    path = models_dir(root) / f"{name}-cifar10.pt"
    if not path.is_file():
        where = "" if root is None else f" --root {path.parent}"
        raise FileNotFoundError(f"expected pretrained weights {str(path)!r}, got no such file; download them with: "
                                f"fdgpu models fetch {name}{where}")
    return path


# --- downloading -----------------------------------------------------------------------------------------------------

def _progress(total: Optional[int], desc: str, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience; the download does not depend on it
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled,
                file=sys.stderr, leave=False)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def download(url: str, target: PathLike, *, md5: Optional[str] = None, sha256: Optional[str] = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` through a temporary file in the same folder, checking ``md5`` / ``sha256``.

    The temporary file is renamed to ``target`` only when every byte arrived and the checksum matches; on any error
    it is removed and ``target`` is untouched. ``file://`` URLs work too (for a file downloaded by hand).

    Raises:
        DownloadError: offline or unreachable, an HTTP error, a truncated transfer, or a checksum mismatch.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    algo, expected = ("sha256", sha256) if sha256 else ("md5", md5) if md5 else (None, None)
    digest = hashlib.new(algo) if algo else None

    def fetch(out) -> None:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (the user's own URL, http/https/file)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check --url") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if urllib.parse.urlsplit(url).scheme == "file":
                raise DownloadError(f"{url}: {reason}; check --url") from None
            raise DownloadError(f"could not reach {_host(url)} ({reason}): are you offline? Download {url} "
                                f"on a connected machine and pass --url file:///path/to/it") from None
        with resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress(total, target.name, progress)
            got = 0
            try:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except http.client.IncompleteRead as exc:
                        got += len(exc.partial)
                        raise DownloadError(f"{url}: the transfer stopped after {got} of {total} bytes; run "
                                            f"the command again") from None
                    except OSError as exc:
                        raise DownloadError(f"{url}: the transfer failed after {got} bytes ({exc}); run the "
                                            f"command again") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and got != total:
                raise DownloadError(f"{url}: the transfer stopped after {got} of {total} bytes; run the "
                                    f"command again")
        if digest is not None and expected is not None and digest.hexdigest() != expected.lower():
            raise DownloadError(f"{url}: {algo} mismatch, expected {expected.lower()}, got {digest.hexdigest()} "
                                f"({got} bytes); the file is corrupt or not the published one, and was deleted")

    write_stream(target, fetch)
    return target


def _file_hash(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_hex(name: str, value: Optional[str], length: int) -> None:
    if value is not None and (len(value) != length or any(c not in "0123456789abcdefABCDEF" for c in value)):
        raise DownloadError(f"{name}: expected {length} hex digits, got {value!r}")


# --- CIFAR-10 --------------------------------------------------------------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Reads CIFAR-10's pickled batches without running arbitrary code: only numpy arrays are reconstructed."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"a CIFAR-10 batch holds only numpy arrays, lists and bytes, got "
                                         f"{module}.{name}")
        return super().find_class(module, name)


def read_batch(data: bytes, where: str = "batch"):
    """One pickled CIFAR-10 batch -> ``x`` uint8 ``(N, 32, 32, 3)`` HWC and ``y`` int64 ``(N,)``."""
    import numpy as np

    try:
        d = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise ValueError(f"{where}: expected a pickled CIFAR-10 batch, got unreadable data ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a dict with b'data' and b'labels', got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{where}: expected keys 'data' and 'labels', got {sorted(map(str, d))}")
    x = np.asarray(d["data"])
    y = np.asarray(d["labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: expected data uint8 (N, 3072) and N labels, got {x.dtype} {x.shape} and "
                         f"{y.shape[0]} labels")
    return np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), y


def convert_cifar10(archive: PathLike, out: PathLike) -> list:
    """Read ``test_batch`` and ``data_batch_1`` from the official archive into ``out/test.npz``, ``train10k.npz``.

    Both files appear together or neither does (an archive missing one batch writes nothing). A member larger than
    a CIFAR-10 batch (:data:`CIFAR10_MEMBER_CAP`) is refused before it is read, so a small archive that unpacks to
    a huge member cannot fill the memory. Returns the two paths; :func:`cifar10_count_note` says whether they hold
    the published numbers of images.
    """
    import numpy as np

    out = Path(out)
    batches = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member, name in CIFAR10_BATCHES:
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise ValueError(f"{archive}: expected {member} in the archive, got no such file; nothing was "
                                     f"written") from None
                if not info.isfile():
                    raise ValueError(f"{archive}: expected {member} to be a file, got another kind of entry")
                if info.size > CIFAR10_MEMBER_CAP:
                    raise ValueError(f"{archive}: expected {member} of at most {CIFAR10_MEMBER_CAP:,} bytes (a "
                                     f"CIFAR-10 batch of 10,000 images is about 31 MB), got {info.size:,} bytes; "
                                     f"this is not the CIFAR-10 archive, and nothing was written")
                member_file = tar.extractfile(info)
                if member_file is None:
                    raise ValueError(f"{archive}: expected {member} to be a file in the archive; this is not the "
                                     f"CIFAR-10 archive, and nothing was written")
                data = member_file.read(CIFAR10_MEMBER_CAP + 1)
                x, y = read_batch(data, member)
                del data
                batches.append((out / name, x, y))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive}: expected a gzip'd tar archive, got an unreadable file ({exc})") from None
    out.mkdir(parents=True, exist_ok=True)
    def saver(x: np.ndarray, y: np.ndarray) -> Callable[[BinaryIO], None]:
        return lambda fh: np.savez_compressed(fh, x=x, y=y)
    return write_files([(path, saver(x, y)) for path, x, y in batches])


def cifar10_count_note(written: list) -> str:
    """'' when the converted files hold the published numbers of images (10,000 each); otherwise a note saying
    how many they hold, for an archive that is not the official one."""
    import numpy as np

    counts = {}
    for path in written:
        with np.load(path) as f:
            counts[Path(path).name] = int(f["y"].shape[0])
    if all(counts.get(name) == CIFAR10_COUNTS[name] for _, name in CIFAR10_BATCHES):
        return ""
    held = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    return (f"note: the files hold {held} images, where the published CIFAR-10 has "
            f"{CIFAR10_COUNTS['test.npz']:,} in test_batch and {CIFAR10_COUNTS['train10k.npz']:,} in data_batch_1: "
            f"this archive is not the official one")


def fetch_cifar10(root: Optional[PathLike] = None, url: str = CIFAR10_URL, md5: Optional[str] = CIFAR10_MD5,
                  progress: bool = True, keep_archive: bool = False) -> list:
    """Download (unless a verified archive is already there) and convert CIFAR-10 under ``data_dir(root)``."""
    _check_hex("--md5", md5, 32)
    folder = data_dir(root) / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale(folder)  # what a killed earlier download left there
    archive = folder / "cifar-10-python.tar.gz"
    if not (archive.is_file() and md5 and _file_hash(archive, "md5") == md5.lower()):
        download(url, archive, md5=md5, progress=progress)
    written = convert_cifar10(archive, folder)
    if not keep_archive:
        archive.unlink()
    return written


# --- pretrained ResNets ----------------------------------------------------------------------------------------------

def convert_checkpoint(path: PathLike, target: PathLike) -> Path:
    """A published checkpoint (``{'state_dict': {'module.conv1.weight': ...}, ...}``) -> a plain state_dict file."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # load_error: one line, without torch's advice to load it with weights_only=False
        raise ValueError(f"{path}: {load_error(exc)}; it was not loaded") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (under 'state_dict'), got {type(ckpt).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v.detach().cpu().contiguous()
             for k, v in state.items()}
    target = Path(target)
    write_file(target, lambda fh: torch.save(state, fh))
    return target


def fetch_model(name: str, root: Optional[PathLike] = None, url: Optional[str] = None,
                sha256: Optional[str] = None, progress: bool = True) -> Path:
    """Download (unless verified already) and convert one pretrained ResNet; returns ``<root>/<name>-cifar10.pt``."""
    if name not in RESNETS:
        raise ValueError(f"expected one of {', '.join(RESNETS)}, got {name!r}")
    file, published = RESNETS[name]
    sha256 = sha256 or published  # a mirror (--url) of the published file has the published hash
    _check_hex("--sha256", sha256, 64)
    folder = models_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale(folder)  # what a killed earlier download left there
    raw = folder / file
    if not (raw.is_file() and sha256 and _file_hash(raw, "sha256") == sha256.lower()):
        download(url or RESNET_URL.format(file=file), raw, sha256=sha256, progress=progress)
    return convert_checkpoint(raw, folder / f"{name}-cifar10.pt")


# --- command line ----------------------------------------------------------------------------------------------------

def add_data_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    c = sub.add_parser("cifar10", help="the official CIFAR-10 python archive -> cifar10/test.npz, train10k.npz",
                       description="Download the official CIFAR-10 python archive (170 MB, md5-checked) and convert "
                                   "the test set and training images 0-9999 to <root>/cifar10/test.npz and "
                                   "train10k.npz, the layout fdgpu eval reads.")
    c.add_argument("--root", default=None,
                   help="data folder, used later as --data-root (default: $FDGPU_DATA, else ~/.cache/fdgpu/data)")
    c.add_argument("--url", default=CIFAR10_URL, help="archive address, e.g. a mirror or file:///path "
                                                      "(default: %(default)s)")
    c.add_argument("--md5", default=CIFAR10_MD5, help="expected md5 of the archive (default: %(default)s, as the "
                                                      "dataset page publishes it)")
    c.add_argument("--keep-archive", action="store_true", help="keep cifar-10-python.tar.gz after converting")
    c.add_argument("--quiet", action="store_true", help="no progress bar")


def run_data(args) -> int:
    try:
        _check_hex("--md5", args.md5, 32)
    except DownloadError as exc:  # a usage error, before any download
        print(f"fdgpu data: {exc}", file=sys.stderr)
        return 2
    try:
        written = fetch_cifar10(args.root, args.url, args.md5, progress=not args.quiet,
                                keep_archive=args.keep_archive)
    except (DownloadError, ValueError, OSError) as exc:
        print(f"fdgpu data: {exc}", file=sys.stderr)
        return 1
    root = data_dir(args.root)
    print("wrote " + ", ".join(str(p) for p in written))
    note = cifar10_count_note(written)
    if note:
        print(f"fdgpu data: {note}", file=sys.stderr)
    default = not args.root and not os.environ.get("FDGPU_DATA")
    print("fdgpu eval finds them " + ("by default" if default else f"with --data-root {root} (or FDGPU_DATA={root})"))
    return 0


def add_models_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download the pretrained CIFAR-10 ResNets (sha256-checked)",
                       description="Download the pretrained CIFAR-10 ResNets of akamaster/pytorch_resnet_cifar10 "
                                   "(BSD-2-Clause), check their sha256 and convert them to <root>/<name>-cifar10.pt.")
    f.add_argument("names", nargs="*", metavar="NAME", default=[],
                   help=f"any of {', '.join(RESNETS)} (default: all four)")
    f.add_argument("--root", default=None, help="weights folder (default: $FDGPU_MODELS, else ~/.cache/fdgpu/models)")
    f.add_argument("--url", default=None, help="address of the checkpoint instead of the published one, e.g. a "
                                               "mirror or file:///path (one NAME only)")
    f.add_argument("--sha256", default=None, help="expected sha256 of the file (one NAME only; default: the "
                                                  "published file's hash, also for a mirror given by --url)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")


def run_models(args) -> int:
    names = list(dict.fromkeys(args.names)) or list(RESNETS)
    unknown = [n for n in names if n not in RESNETS]
    if unknown:
        print(f"fdgpu models: expected names among {', '.join(RESNETS)}, got {', '.join(unknown)}", file=sys.stderr)
        return 2
    if (args.url or args.sha256) and len(names) != 1:
        print(f"fdgpu models: --url and --sha256 describe one checkpoint, expected one NAME, got {len(names)}",
              file=sys.stderr)
        return 2
    try:
        _check_hex("--sha256", args.sha256, 64)
    except DownloadError as exc:  # a usage error, before any download
        print(f"fdgpu models: {exc}", file=sys.stderr)
        return 2
    try:
        for name in names:
            path = fetch_model(name, args.root, args.url, args.sha256, progress=not args.quiet)
            print(f"wrote {path}")
    except (DownloadError, ValueError, OSError) as exc:
        print(f"fdgpu models: {exc}", file=sys.stderr)
        return 1
    default = not args.root and not os.environ.get("FDGPU_MODELS")
    root = models_dir(args.root)
    print("fdgpu eval finds them " + ("by default" if default else f"with FDGPU_MODELS={root} (or --weights PATH)"))
    return 0

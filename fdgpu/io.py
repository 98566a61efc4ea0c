"""JPEG files in and out of the coefficient domain, through jpeglib (libjpeg-turbo's coefficient API; the ``jpeg``
extra: ``pip install 'fdgpu[jpeg]'``).

* :func:`read_jpeg` gives a file's own quantized coefficients, tables, sampling factors and size as
  :class:`fdgpu.Coefficients`; :func:`fdgpu.decode` of them is Pillow's decoding of the file, bit for bit.
* :func:`write_jpeg` writes coefficients as a baseline JPEG holding exactly those integers and tables: reading the
  file back gives them again, and Pillow decodes it to :func:`fdgpu.decode` of them.

Files fdgpu decodes: 8-bit samples; baseline, extended sequential, progressive, Huffman or arithmetic coded (any
restart interval, standard or optimized Huffman tables); grayscale, YCbCr with luma sampling factors 1x1, 2x1 or
2x2 and chroma 1x1 (4:4:4, 4:2:2, 4:2:0), or RGB without colour transform (an Adobe marker with transform 0, or
component ids 'R', 'G', 'B'; ``color="rgb"``) sampled alike. Anything else (CMYK/YCCK, 12-bit or 16-bit samples,
lossless or hierarchical coding, other sampling factors) raises a ValueError that names what the file is.

Examples:
    >>> import io, torch, fdgpu
    >>> buf = io.BytesIO()
    >>> c = fdgpu.encode(torch.rand(1, 3, 20, 30), 80)
    >>> fdgpu.io.write_jpeg(buf, c)
    >>> back = fdgpu.io.read_jpeg(buf.getvalue())
    >>> all(torch.equal(a, b) for a, b in zip(back.components, c.components))
    True
"""
from __future__ import annotations

import contextlib
import io as _io
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from .choices import FACTORS
from .coefficients import Coefficients, block_grid, check_coefficients

SUPPORTED = ("fdgpu decodes 8-bit grayscale, YCbCr (4:4:4, 4:2:2 or 4:2:0 sampling) or RGB JPEGs (baseline, "
             "extended, progressive; Huffman or arithmetic coded)")
_SOF_NAMES = {
    0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
    0xC5: "hierarchical (differential sequential)", 0xC6: "hierarchical (differential progressive)",
    0xC7: "hierarchical (differential lossless)", 0xC9: "arithmetic-coded extended sequential",
    0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless",
    0xCD: "arithmetic-coded hierarchical (differential sequential)",
    0xCE: "arithmetic-coded hierarchical (differential progressive)",
    0xCF: "arithmetic-coded hierarchical (differential lossless)",
}
_DECODABLE_SOF = (0xC0, 0xC1, 0xC2, 0xC9, 0xCA)
#: luma (h, v) sampling factors -> subsampling name (chroma 1x1)
_SAMPLINGS = {factors: name for name, factors in FACTORS.items()}
# Baseline Huffman coding of 8-bit data: DC values and their differences in 11 bits, AC values in 10 bits.
DC_RANGE = (-1024, 1023)
AC_MAX = 1023


def _jpeglib():
    try:
        import jpeglib
    except ImportError:
        raise ImportError("fdgpu.io needs jpeglib (libjpeg-turbo's coefficient API): pip install 'fdgpu[jpeg]'") \
            from None
    return jpeglib


@contextlib.contextmanager
def _turbo(jpeglib):
    """jpeglib's newest bundled libjpeg-turbo (its default, IJG 6b, has no arithmetic coding)."""
    turbo = sorted((v for v in jpeglib.version.versions() if v.startswith("turbo")), key=lambda v: int(v[5:]))
    if not turbo:
        yield
        return
    with jpeglib.version(turbo[-1]):
        yield


def _frame(data: bytes, name: str) -> dict:
    """The frame header (SOFn) and the colour markers of a JPEG stream, read from its markers up to the first scan:
    ``{"sof", "precision", "height", "width", "components": [(id, h, v, table)], "adobe": transform or None}``."""
    if data[:2] != b"\xff\xd8":
        raise ValueError(f"{name}: expected a JPEG file (starting with the bytes FF D8), got {data[:4].hex(' ')}")
    out: Dict[str, Any] = {"sof": None, "adobe": None, "jfif": False}
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"{name}: expected a JPEG marker at byte {i}, got {data[i]:#04x}: the file is damaged")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        seg = data[i + 4:i + 2 + length]
        if marker in _SOF_NAMES and out["sof"] is None and len(seg) >= 6:
            ncomp = seg[5]
            comps = [(seg[6 + 3 * k], seg[7 + 3 * k] >> 4, seg[7 + 3 * k] & 15, seg[8 + 3 * k])
                     for k in range(ncomp) if 8 + 3 * k < len(seg)]
            out.update(sof=marker, precision=seg[0], height=int.from_bytes(seg[1:3], "big"),
                       width=int.from_bytes(seg[3:5], "big"), components=comps)
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            out["adobe"] = seg[11]
        elif marker == 0xE0 and seg[:5] == b"JFIF\x00":
            out["jfif"] = True
        elif marker == 0xDA:  # start of scan: the frame is known
            break
        i += 2 + length
    if out["sof"] is None:
        raise ValueError(f"{name}: expected a JPEG frame header (SOF marker) before the first scan, found none: "
                         f"the file is damaged or not a JPEG image")
    return out


def _color_space(f: dict) -> str:
    """libjpeg-turbo's reading of a 3-component frame's colour space (jdapimin.c, default_decompress_parms): JFIF
    means YCbCr; else an Adobe marker's transform (0: RGB, else YCbCr); else the component ids ('R', 'G', 'B': RGB)."""
    if f["jfif"]:
        return "ycbcr"
    if f["adobe"] is not None:
        return "rgb" if f["adobe"] == 0 else "ycbcr"
    ids = tuple(c[0] for c in f["components"])
    return "rgb" if ids == (82, 71, 66) else "ycbcr"


def _check_frame(f: dict, name: str) -> None:
    kind = _SOF_NAMES[f["sof"]]
    if f["sof"] not in _DECODABLE_SOF:
        raise ValueError(f"{name}: a {kind} JPEG (SOF marker FF {f['sof']:02X}); {SUPPORTED}")
    if f["precision"] != 8:
        raise ValueError(f"{name}: a JPEG with {f['precision']}-bit samples ({kind}); {SUPPORTED}")
    comps = f["components"]
    if len(comps) == 4:
        what = "YCCK" if f["adobe"] == 2 else "CMYK"
        raise ValueError(f"{name}: a 4-component ({what}) JPEG; {SUPPORTED}")
    if len(comps) not in (1, 3):
        raise ValueError(f"{name}: a JPEG with {len(comps)} components; {SUPPORTED}")
    if f["height"] == 0:
        raise ValueError(f"{name}: a JPEG whose height is set by a DNL marker after the first scan; {SUPPORTED}")
    if len(comps) == 3:
        factors = [(h, v) for _, h, v, _ in comps]
        if _color_space(f) == "rgb" and len(set(factors)) != 1:
            text = ", ".join(f"{n} {h}x{v}" for n, (h, v) in zip("RGB", factors))
            raise ValueError(f"{name}: an RGB JPEG (no colour transform) with sampling factors {text}; fdgpu "
                             f"decodes RGB JPEGs whose three components are sampled alike; {SUPPORTED}")
        if _color_space(f) == "ycbcr" and (factors[1:] != [(1, 1), (1, 1)] or factors[0] not in _SAMPLINGS):
            text = ", ".join(f"{n} {h}x{v}" for n, (h, v) in zip(("Y", "Cb", "Cr"), factors))
            raise ValueError(f"{name}: a JPEG with sampling factors {text} (horizontal x vertical); {SUPPORTED} "
                             f"(Y 1x1, 2x1 or 2x2 and Cb, Cr 1x1)")


def _read_bytes(source) -> tuple:
    """(bytes, a name for messages, a path jpeglib can open or None)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "data", None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return path.read_bytes(), str(path), str(path)
        except OSError as exc:
            raise OSError(f"read_jpeg: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("read_jpeg: expected a file object opened in binary mode ('rb'), got one that reads "
                            f"{type(data).__name__}")
        return bytes(data), getattr(source, "name", "file"), None
    raise TypeError(f"read_jpeg: expected a path, bytes or a binary file object, got {type(source).__name__}")


def read_jpeg(source: Union[str, os.PathLike, bytes, "_io.BufferedIOBase"]) -> Coefficients:
    """A JPEG file's quantized DCT coefficients, quantization tables, sampling factors and size.

    Args:
        source: a path, the file's bytes, or a binary file object.

    Returns:
        :class:`fdgpu.Coefficients` with B = 1: components float32 ``(1, block rows, block columns, 8, 8)``
        (libjpeg's ``height_in_blocks`` x ``width_in_blocks`` per component, natural order), tables float32
        ``(1, 8, 8)`` per component, ``color`` "ycbcr" or "gray". ``fdgpu.decode`` of it equals Pillow's decoding
        of the file.

    Raises:
        ValueError: for a file fdgpu cannot decode exactly (see the module's docstring), naming what it is.
        ImportError: without jpeglib (``pip install 'fdgpu[jpeg]'``).
    """
    jpeglib = _jpeglib()
    data, name, path = _read_bytes(source)
    frame = _frame(data, name)
    _check_frame(frame, name)
    with contextlib.ExitStack() as stack:
        if path is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="fdgpu-"))
            path = os.path.join(tmp, "in.jpg")
            Path(path).write_bytes(data)
        stack.enter_context(_turbo(jpeglib))
        d = jpeglib.read_dct(path)
        d.load()
        arrays = [d.Y] + ([d.Cb, d.Cr] if d.has_chrominance else [])
        qts = [np.asarray(d.get_component_qt(k)) for k in range(len(arrays))]
    h, w = int(d.height), int(d.width)
    if len(arrays) == 1:
        color, subsampling = "gray", "4:4:4"
    elif _color_space(frame) == "rgb":  # three planes without colour conversion, as libjpeg decodes them
        color, subsampling = "rgb", "4:4:4"
    else:
        color, subsampling = "ycbcr", _SAMPLINGS[tuple(frame["components"][0][1:3])]
    comps, tabs = [], []
    for k, (a, q) in enumerate(zip(arrays, qts)):
        grid = block_grid((h, w), subsampling, k)
        if tuple(a.shape[:2]) != grid:  # (a file jpeglib lays out otherwise than libjpeg's height/width_in_blocks)
            raise ValueError(f"{name}: component {k} has {a.shape[0]}x{a.shape[1]} blocks, expected {grid[0]}x"
                             f"{grid[1]} for a {h}x{w} image; {SUPPORTED}")
        comps.append(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).unsqueeze(0))
        tabs.append(torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32)).reshape(1, 8, 8))
    return Coefficients(tuple(comps), tuple(tabs), (h, w), subsampling, color)


def _check_writable(c: Coefficients) -> None:
    if c.batch_size != 1:
        raise ValueError(f"coefficients: expected one image (B = 1) for one file, got B = {c.batch_size}; write "
                         f"each with coefficients[i]")
    if c.color == "rgb":
        raise ValueError("coefficients: expected color 'ycbcr' or 'gray', got 'rgb' (three grayscale planes): a "
                         "JFIF file holds YCbCr or grayscale; encode with color='ycbcr'")
    stats = []
    for t in c.tables:
        t = t.detach()
        stats.append(torch.stack([t.min(), t.max(), (t - t.round()).abs().max()]).double())
    for comp in c.components:
        r = comp.detach().double()
        stats.append(torch.stack([r[..., 0, 0].min(), r[..., 0, 0].max(),
                                  r.flatten(-2)[..., 1:].abs().max() if r.numel() else r.new_zeros(())]))
    values = torch.stack([s.cpu() for s in stats]).tolist()  # one host sync
    k = len(c.tables)
    for i, (lo, hi, frac) in enumerate(values[:k]):
        if frac != 0 or lo < 1 or hi > 255:
            raise ValueError(f"coefficients.tables[{i}]: expected integer steps in 1..255 (a baseline JPEG's "
                             f"8-bit tables), got min {lo:g}, max {hi:g}" + (", not integers" if frac else ""))
    for i, (lo, hi, ac) in enumerate(values[k:]):
        if lo < DC_RANGE[0] or hi > DC_RANGE[1] or ac > AC_MAX:
            raise ValueError(f"coefficients.components[{i}]: expected DC values in {DC_RANGE[0]}..{DC_RANGE[1]} "
                             f"and |AC| <= {AC_MAX} (baseline Huffman coding of 8-bit data), got DC {lo:g}..{hi:g}, "
                             f"max |AC| {ac:g}")


def write_jpeg(target, coefficients: Coefficients, *, optimize: bool = False) -> None:
    """Write one image's coefficients as a baseline JPEG file (JFIF, sequential, Huffman coded).

    The file holds exactly ``coefficients``' integers and tables: :func:`read_jpeg` gives them back, and Pillow
    decodes it to ``fdgpu.decode(coefficients)``. A path is written whole or not at all (a temporary file beside
    it, flushed to disk, then renamed into place: :func:`fdgpu.files.write_file`).

    Args:
        target: a path, or a binary file object (written at its position).
        coefficients: :class:`fdgpu.Coefficients` of one image (B = 1), color "ycbcr" or "gray", integer tables
            in 1..255, DC values in -1024..1023 and AC values in -1023..1023 (what 8-bit baseline coding holds;
            :func:`fdgpu.encode` of an image with such tables always is).
        optimize: per-image optimal Huffman tables (smaller file, same coefficients) instead of the standard ones.
    """
    from .files import write_file

    jpeglib = _jpeglib()
    if not isinstance(optimize, bool):
        raise TypeError(f"optimize: expected True or False, got {type(optimize).__name__}")
    if not hasattr(target, "write"):
        if not isinstance(target, (str, os.PathLike)):
            raise TypeError(f"write_jpeg: expected a path or a binary file object, got {type(target).__name__}")
        if not Path(target).parent.is_dir():
            raise FileNotFoundError(f"write_jpeg: the folder {str(Path(target).parent)!r} does not exist; create "
                                    f"it first")
    check_coefficients(coefficients)
    _check_writable(coefficients)
    c = coefficients
    arrays = [t.detach()[0].cpu().to(torch.int16).numpy() for t in c.components]
    tabs = [t.detach()[0].cpu().to(torch.int64).numpy() for t in c.tables]
    qt: list = []
    numbers: list = []
    for t in tabs:  # one table per distinct set of steps
        for j, u in enumerate(qt):
            if np.array_equal(u, t):
                numbers.append(j)
                break
        else:
            numbers.append(len(qt))
            qt.append(t)
    hs, vs = FACTORS[c.subsampling] if c.color == "ycbcr" else (1, 1)
    samp = np.array([[vs, hs]] + [[1, 1]] * (len(arrays) - 1))  # jpeglib's order: vertical, horizontal
    from jpeglib.dct_jpeg import DCTJPEG

    with tempfile.TemporaryDirectory(prefix="fdgpu-") as tmp:  # jpeglib writes to a path
        path = os.path.join(tmp, "out.jpg")
        with _turbo(jpeglib):
            space = jpeglib.Colorspace["JCS_GRAYSCALE" if len(arrays) == 1 else "JCS_YCbCr"]
            j = DCTJPEG(path=None, content=None, height=c.size[0], width=c.size[1],
                        block_dims=np.array([a.shape[:2] for a in arrays]), samp_factor=samp,
                        jpeg_color_space=space, num_scans=1, quant_tbl_no=np.array(numbers), markers=None,
                        huffmans=None, Y=arrays[0], Cb=arrays[1] if len(arrays) == 3 else None,
                        Cr=arrays[2] if len(arrays) == 3 else None, K=None,
                        qt=np.stack(qt).astype(np.uint16), progressive_mode=None)
            j.write_dct(path, flags=["+OPTIMIZE_CODING"] if optimize else ["-OPTIMIZE_CODING"])
        data = Path(path).read_bytes()
    if hasattr(target, "write"):
        target.write(data)
        return
    write_file(target, lambda fh: fh.write(data))


__all__ = ["read_jpeg", "write_jpeg"]

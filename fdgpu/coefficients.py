"""The coefficient domain: :func:`encode` turns images into the quantized DCT coefficients a JPEG file holds
(:class:`Coefficients`), :func:`decode` turns coefficients into images. ``decode(encode(x))`` is
:func:`fdgpu.requantize` / :func:`fdgpu.jpeg` bit for bit: the round trip of the torch reference is built from the
same two stage functions (:func:`fdgpu.reference.jpeg.encode`, :func:`fdgpu.reference.jpeg.decode`).

Layout (libjpeg's, as jpeglib and ``jpeg_read_coefficients`` give it): per component a tensor
``(B, block rows, block columns, 8, 8)``, coefficient ``(u, v)`` of a block at ``[..., u, v]`` (natural order, u the
vertical frequency), the integers ``round(DCT / step)`` that the entropy coder writes. The block grid is the
component's own, ``ceil(ceil(H / vs) / 8) x ceil(ceil(W / hs) / 8)`` for chroma subsampled by ``hs x vs`` and
``ceil(H / 8) x ceil(W / 8)`` for luma (libjpeg's ``height_in_blocks`` x ``width_in_blocks``; the MCU padding
beyond it is not part of the image). Values are float tensors holding integers, so that they carry gradients;
:meth:`Coefficients.to_int16` gives the integer view a file stores.

Gradients (``backward=``): ``"ste"`` and ``"soft"`` as in :mod:`fdgpu.autograd`. :func:`decode` is the exact
derivative of its real-valued pipeline (dequantization ``r Q``, orthonormal inverse DCT, upsampling, colour, the 1/255
scale) with every rounding and clamp straight-through, in both modes (it has no coefficient rounding); its table
gradient is ``sum r dL/dc``. :func:`encode`'s rounding ``r = round(c / Q)`` has derivative 1 (``ste``) or
``3 (z - round z)**2`` (``soft``, ``z = c / Q``): ``dr/dc = w / Q`` and ``dr/dQ = -w z / Q``, so that the composition
has the round trip's gradients (``dc'/dQ = round z - z`` for ``ste``). ``"exact"`` gives zero (every output of
either half is a rounding). ``"bpda"`` (the identity) has no meaning for a map between pixels and coefficients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch
import torch.nn.functional as F

from . import ops
from ._checks import (FLOAT64_MAX, as_number, check_choice, check_input, check_quality, check_values, device_form,
                      minmax, table_error)
from .choices import BACKENDS, COLORS, FACTORS, SUBSAMPLINGS

#: ``backward=`` of :func:`encode` and :func:`decode`
HALF_BACKWARDS = ops.HALF_MODES
#: the largest dequantized coefficient ``|r Q|`` :func:`decode` accepts: the range of libjpeg's 8-bit samples
#: (``|DCT| <= 1024``) plus the quantizer's rounding, where the inverse DCT is exact (fdgpu.reference.dct.idct_islow)
MAX_DEQUANTIZED = 2048


@dataclass(frozen=True)
class Coefficients:
    """Quantized DCT coefficients of a batch of JPEG images.

    Attributes:
        components: per component (Y, or Y, Cb, Cr; R, G, B for ``color="rgb"``) a float tensor
            ``(B, block rows, block columns, 8, 8)`` holding integers, natural order (see the module's docstring).
        tables: per component the ``(B, 8, 8)`` quantization steps (natural order).
        size: ``(H, W)``, the image size in pixels.
        subsampling: the chroma subsampling, one of ``fdgpu.SUBSAMPLINGS`` ("4:4:4" for grayscale and rgb).
        color: "ycbcr" (3 components, JFIF colour), "gray" (1 component) or "rgb" (3 full-size components decoded
            as grayscale planes, no colour conversion: :func:`fdgpu.requantize`'s ``color="rgb"``).

    Examples:
        >>> import torch, fdgpu
        >>> c = fdgpu.encode(torch.rand(2, 3, 20, 30), 75)
        >>> [tuple(t.shape) for t in c.components]
        [(2, 3, 4, 8, 8), (2, 2, 2, 8, 8), (2, 2, 2, 8, 8)]
        >>> c.sampling_factors
        ((2, 2), (1, 1), (1, 1))
    """
    components: Tuple[torch.Tensor, ...]
    tables: Tuple[torch.Tensor, ...]
    size: Tuple[int, int]
    subsampling: str = "4:2:0"
    color: str = "ycbcr"

    @property
    def batch_size(self) -> int:
        return self.components[0].shape[0]

    @property
    def channels(self) -> int:
        """Channels of the decoded image: 1 for "gray", else 3."""
        return 1 if self.color == "gray" else 3

    @property
    def sampling_factors(self) -> Tuple[Tuple[int, int], ...]:
        """Per component libjpeg's ``(h_samp_factor, v_samp_factor)``: ``(hs, vs)`` for luma, ``(1, 1)`` for
        chroma (all ``(1, 1)`` for gray and rgb)."""
        if self.color != "ycbcr":
            return ((1, 1),) * len(self.components)
        return (FACTORS[self.subsampling], (1, 1), (1, 1))

    def block_grid(self, k: int) -> Tuple[int, int]:
        """``(block rows, block columns)`` of component ``k``: libjpeg's height_in_blocks, width_in_blocks."""
        return block_grid(self.size, self.subsampling if self.color == "ycbcr" else "4:4:4", k)

    def to_int16(self) -> Tuple[torch.Tensor, ...]:
        """The components as int16 tensors (the values a file stores; gradients do not pass)."""
        return tuple(c.detach().to(torch.int16) for c in self.components)

    def __getitem__(self, index) -> "Coefficients":
        """Images ``index`` (an int keeps the batch dim: ``c[0]`` has B = 1; a slice or index tensor selects)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Coefficients(tuple(c[index] for c in self.components), tuple(t[index] for t in self.tables),
                            self.size, self.subsampling, self.color)

    def to(self, *args, **kwargs) -> "Coefficients":
        """``Tensor.to`` applied to every component and table."""
        return Coefficients(tuple(c.to(*args, **kwargs) for c in self.components),
                            tuple(t.to(*args, **kwargs) for t in self.tables), self.size, self.subsampling,
                            self.color)


def _flatten(c: Coefficients):
    return list(c.components) + list(c.tables), (len(c.components), c.size, c.subsampling, c.color)


def _unflatten(values, context):
    k, size, subsampling, color = context
    values = list(values)
    return Coefficients(tuple(values[:k]), tuple(values[k:]), size, subsampling, color)


try:  # a pytree node, so that torch.utils._pytree / torch.compile / export see the tensors inside
    from torch.utils import _pytree

    _pytree.register_pytree_node(Coefficients, _flatten, _unflatten, serialized_type_name="fdgpu.Coefficients")
except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover (older torch)
    pass


# ---------------------------------------------------------------- layout: reference planes <-> libjpeg blocks
def block_grid(size: Tuple[int, int], subsampling: str, k: int) -> Tuple[int, int]:
    """``(block rows, block columns)`` of component ``k`` (0 = luma) of an image of ``size`` (H, W)."""
    h, w = size
    if k > 0:
        hs, vs = FACTORS[subsampling]
        h, w = -(-h // vs), -(-w // hs)
    return -(-h // 8), -(-w // 8)


def _check_backward(backward: str) -> None:
    if backward == "bpda":
        raise ValueError("backward: expected 'ste', 'soft' or 'exact', got 'bpda': the identity backward has no "
                         "meaning for a map between pixels and coefficients; use 'ste' (or fdgpu.jpeg's "
                         "backward='bpda' for the round trip)")
    check_choice("backward", backward, HALF_BACKWARDS)


def _planes_to_blocks(p: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``(N, Hp, Wp)`` plane (coefficient (u, v) of block (i, j) at [8i + u, 8j + v]) -> ``(N, rows, cols, 8, 8)``."""
    n, hp, wp = p.shape
    return p.reshape(n, hp // 8, 8, wp // 8, 8).permute(0, 1, 3, 2, 4)[:, :rows, :cols]


def _blocks_to_plane(b: torch.Tensor, hb: int, wb: int) -> torch.Tensor:
    """``(N, rows, cols, 8, 8)`` -> the ``(N, 8 hb, 8 wb)`` plane, zero blocks on the padding."""
    n, rows, cols = b.shape[:3]
    b = F.pad(b, (0, 0, 0, 0, 0, wb - cols, 0, hb - rows))
    return b.permute(0, 1, 3, 2, 4).reshape(n, 8 * hb, 8 * wb)


def _backend(backend: str, x: torch.Tensor) -> str:
    """The backend the halves run on, resolved as for the round trip (:func:`fdgpu.backends.resolve`)."""
    check_choice("backend", backend, BACKENDS)
    from . import backends
    return backends.resolve(backend, x.device)


def _table(name: str, t, n: int, device, dtype) -> torch.Tensor:
    from ._checks import check_table

    t = check_table(name, t, n).to(device=device, dtype=dtype)
    return (t.expand(n, 8, 8) if t.dim() == 2 else t).contiguous()


def encode(x: torch.Tensor, quality=None, *, luma_table=None, chroma_table=None, subsampling: str = "4:2:0",
           color: str = "ycbcr", backward: str = "ste", backend: str = "auto",
           validate: bool = True) -> Coefficients:
    """The JPEG encoder up to the entropy coder: the quantized DCT coefficients libjpeg-turbo (Pillow) computes.

    Args:
        x: ``(B, C, H, W)`` (or ``(..., C, H, W)``, flattened to B) float in [0, 1], C = 3 (RGB) or 1 (gray).
        quality: IJG quality in [1, 100] (a number or a ``(B,)`` tensor, differentiable) for libjpeg's scaled
            tables; or None with ``luma_table`` given (None and no tables: 75, Pillow's default).
        luma_table, chroma_table: ``(8, 8)`` or ``(B, 8, 8)`` steps >= 1 (natural order) instead of ``quality``;
            ``chroma_table`` defaults to ``luma_table``.
        subsampling: one of ``fdgpu.SUBSAMPLINGS`` (ignored for grayscale and ``color="rgb"``).
        color: "ycbcr" (JPEG) or "rgb" (each channel a grayscale plane with ``luma_table``, as in
            :func:`fdgpu.requantize`).
        backward: "ste", "soft" or "exact" (see the module's docstring).
        backend: as for the round trip: "auto" ("cpu" for CPU tensors when the C library is available, "triton"
            for CUDA tensors when Triton is, else "torch"), "cpu" (the C library's ``fdgpu_encode``, built from
            the round trip's own stage functions; steps that are not integers in 1..32768 and saved quotients use
            the torch reference's ops, as the round trip's "cpu" backend does), "triton" (``_jpeg_encode_kernel``,
            from the forward kernels' stage functions, float32: float64 inputs give float32 components) or
            "torch" (the reference, any device); the same bits on each.
        validate: check values (one host sync), as in :func:`fdgpu.requantize`.

    Returns:
        :class:`Coefficients` with components in x's dtype (float32 for float16/bfloat16), on x's device.

    Examples:
        >>> import torch, fdgpu
        >>> x = torch.rand(1, 3, 17, 23)
        >>> torch.equal(fdgpu.decode(fdgpu.encode(x, 50)), fdgpu.jpeg(x, 50))
        True
    """
    from .functional import _ijg_cached
    from . import tables as _tables

    check_input(x)
    check_choice("subsampling", subsampling, SUBSAMPLINGS)
    check_choice("color", color, COLORS)
    _check_backward(backward)
    impl = _backend(backend, x)
    *lead, ch, h, w = x.shape
    n = math.prod(lead)
    dtype = torch.float64 if x.dtype == torch.float64 and impl != "triton" else torch.float32
    extra: List[tuple] = []
    if quality is not None and (luma_table is not None or chroma_table is not None):
        raise ValueError("quality: expected either quality or luma_table/chroma_table, got both; pass one")
    if luma_table is None:
        if chroma_table is not None:
            raise ValueError("chroma_table: expected luma_table as well (chroma_table alone is ambiguous), got "
                             "only chroma_table")
        quality = 75 if quality is None else quality
        if not isinstance(quality, torch.Tensor):
            quality = as_number(quality)
        if isinstance(quality, (int, float)) and not isinstance(quality, bool):
            check_quality(quality)
            lt, ct = _ijg_cached(float(quality), x.device, dtype)
        else:
            q = check_quality(quality, validate=False)
            if q.dim() == 1 and q.shape[0] != n:
                raise ValueError(f"quality: expected one quality per image of the flattened batch ({n}), "
                                 f"got {q.shape[0]}")
            lt, ct = _tables._ijg(q.to(x.device), dtype)
            if validate:
                from ._checks import quality_error, quality_stats
                extra.append((q, quality_stats, quality_error))
        lt, ct = _table("luma_table", lt, n, x.device, dtype), _table("chroma_table", ct, n, x.device, dtype)
    else:
        lt = _table("luma_table", luma_table, n, x.device, dtype)
        ct = lt if chroma_table is None else _table("chroma_table", chroma_table, n, x.device, dtype)
        if validate:
            extra.append((lt, minmax, table_error("luma_table")))
            if chroma_table is not None:
                extra.append((ct, minmax, table_error("chroma_table")))
    if validate:
        from ._checks import x_error
        check_values([(x, minmax, x_error)] + extra)
    xf = x.reshape(n, ch, h, w).to(dtype).contiguous()
    if color == "rgb" and ch == 3:
        if chroma_table is not None and chroma_table is not luma_table:
            raise ValueError("chroma_table: expected None with color='rgb', where every RGB channel uses "
                             "luma_table; pass one table as luma_table")
        g = encode(xf.reshape(n * 3, 1, h, w), luma_table=lt.repeat_interleave(3, dim=0), backward=backward,
                   backend=impl, validate=False)
        comps = tuple(g.components[0].view(n, 3, *g.components[0].shape[1:]).unbind(1))
        return Coefficients(comps, (lt, lt, lt), (h, w), "4:4:4", "rgb")
    grad = torch.is_grad_enabled() and (x.requires_grad or lt.requires_grad or ct.requires_grad)
    save = grad and (backward == "soft" or lt.requires_grad or ct.requires_grad)
    qy, qc, _, _ = ops.encode(xf, lt, ct, subsampling, impl, backward, save)
    if ch == 1:
        return Coefficients((_planes_to_blocks(qy[:, 0], *block_grid((h, w), "4:4:4", 0)),), (lt,), (h, w),
                            "4:4:4", "gray")
    comps = (_planes_to_blocks(qy[:, 0], *block_grid((h, w), subsampling, 0)),
             _planes_to_blocks(qc[:, 0], *block_grid((h, w), subsampling, 1)),
             _planes_to_blocks(qc[:, 1], *block_grid((h, w), subsampling, 2)))
    return Coefficients(comps, (lt, ct, ct), (h, w), subsampling, "ycbcr")


def _coef_stats(pair):
    r, q = pair

    def stats(_):
        rd = r.detach().to(torch.float64)
        frac = (rd - rd.round()).abs().amax() if rd.numel() else rd.new_zeros(())
        deq = (rd * q.detach().to(torch.float64).view(-1, 1, 1, 8, 8)).abs().amax()
        nan = torch.isnan(rd).any()
        return torch.where(nan, torch.nan, torch.stack([frac, deq]))
    return stats


def _coef_error(name: str):
    @device_form([(0, 0), (-FLOAT64_MAX, MAX_DEQUANTIZED)],
                 f"{name}: expected finite integer coefficients (quantized DCT values) with |coefficient x step| <= "
                 f"{MAX_DEQUANTIZED} (the range of 8-bit samples), got a non-integer, a larger one, NaN or Inf")
    def error(frac: float, deq: float):
        if not (math.isfinite(frac) and math.isfinite(deq)):
            return ValueError(f"{name}: expected finite integer coefficients, got NaN or Inf")
        if frac != 0:
            return ValueError(f"{name}: expected integer coefficients (quantized DCT values), got a value "
                              f"{frac:g} away from an integer; round them (a file holds integers)")
        if deq > MAX_DEQUANTIZED:
            return ValueError(f"{name}: expected dequantized coefficients |coefficient x step| <= "
                              f"{MAX_DEQUANTIZED} (the range of 8-bit samples), got {deq:g}")
        return None
    return error


def check_coefficients(c: Coefficients, validate: bool = True) -> None:
    """Type, shape (no sync) and (``validate``) value checks of :class:`Coefficients`, naming what is wrong."""
    if not isinstance(c, Coefficients):
        raise TypeError(f"coefficients: expected fdgpu.Coefficients (from fdgpu.encode or fdgpu.io.read_jpeg), "
                        f"got {type(c).__name__}")
    check_choice("coefficients.color", c.color, ("ycbcr", "gray", "rgb"))
    check_choice("coefficients.subsampling", c.subsampling, SUBSAMPLINGS)
    k = 1 if c.color == "gray" else 3
    if len(c.components) != k or len(c.tables) != k:
        raise ValueError(f"coefficients: expected {k} components and {k} tables for color={c.color!r}, got "
                         f"{len(c.components)} and {len(c.tables)}")
    h, w = c.size
    if not (isinstance(h, int) and isinstance(w, int) and h >= 1 and w >= 1):
        raise ValueError(f"coefficients.size: expected (H, W) positive ints, got {c.size!r}")
    n = c.components[0].shape[0] if c.components[0].dim() else -1
    for i, (comp, table) in enumerate(zip(c.components, c.tables)):
        if not isinstance(comp, torch.Tensor) or not isinstance(table, torch.Tensor):
            raise TypeError(f"coefficients.components[{i}]: expected tensors, got {type(comp).__name__}")
        want = (n, *c.block_grid(i), 8, 8)
        if tuple(comp.shape) != want:
            raise ValueError(f"coefficients.components[{i}]: expected shape {want} for an image of {h}x{w} "
                             f"({c.color}, {c.subsampling}), got {tuple(comp.shape)}")
        if tuple(table.shape) != (n, 8, 8):
            raise ValueError(f"coefficients.tables[{i}]: expected shape ({n}, 8, 8), got {tuple(table.shape)}")
        if comp.is_complex() or table.is_complex() or comp.dtype == torch.bool:
            raise TypeError(f"coefficients.components[{i}]: expected real values, got dtype {comp.dtype}")
        if comp.device != c.components[0].device or table.device != comp.device:
            raise ValueError(f"coefficients: expected every tensor on one device, got {comp.device} and "
                             f"{table.device}")
    if validate:
        checks = []
        for i, (comp, table) in enumerate(zip(c.components, c.tables)):
            checks.append((table, minmax, table_error(f"coefficients.tables[{i}]")))
            checks.append((comp, _coef_stats((comp, table)), _coef_error(f"coefficients.components[{i}]")))
        check_values(checks)


def decode(coefficients: Coefficients, *, backward: str = "ste", backend: str = "auto",
           validate: bool = True) -> torch.Tensor:
    """The JPEG decoder after the entropy decoder: dequantization, libjpeg-turbo's integer inverse DCT, fancy chroma
    upsampling and colour conversion, as Pillow decodes a file.

    Args:
        coefficients: :class:`Coefficients` (from :func:`encode` or :func:`fdgpu.io.read_jpeg`); integer
            components of any real dtype (integer dtypes are read as float32).
        backward: "ste", "soft" (the same for this half) or "exact" (see the module's docstring).
        backend: "auto", "cpu" (the C library's ``fdgpu_decode``), "triton" (``_jpeg_decode_kernel`` and the
            forward's upsampling kernel) or "torch", as in :func:`encode`.
        validate: check that the components are integers with ``|r Q| <= 2048`` and the tables are >= 1 (one host
            sync); shape checks always run.

    Returns:
        ``(B, C, H, W)`` images in [0, 1] on the 1/255 grid (C = 1 for gray, else 3), in the components' float
        dtype, on their device.

    Examples:
        >>> import torch, fdgpu
        >>> c = fdgpu.encode(torch.rand(2, 1, 9, 9), 90)
        >>> fdgpu.decode(c).shape
        torch.Size([2, 1, 9, 9])
    """
    check_coefficients(coefficients, validate)
    _check_backward(backward)
    c = coefficients
    impl = _backend(backend, c.components[0])
    comps = [t if t.is_floating_point() and t.dtype in (torch.float32, torch.float64) else t.float()
             for t in c.components]
    dtype = torch.float64 if comps[0].dtype == torch.float64 else torch.float32
    comps = [t.to(dtype) for t in comps]
    tabs = [t.to(device=comps[0].device, dtype=dtype) for t in c.tables]
    h, w = c.size
    n = c.batch_size
    if c.color == "rgb":
        stacked = torch.stack(comps, dim=1).flatten(0, 1)
        tab = torch.stack(tabs, dim=1).flatten(0, 1)
        y = decode(Coefficients((stacked,), (tab,), (h, w), "4:4:4", "gray"), backward=backward, backend=impl,
                   validate=False)
        return y.view(n, 3, h, w)
    ch = 1 if c.color == "gray" else 3
    (_, _, hp, wp), sc = ops.plane_shapes(n, ch, h, w, c.subsampling)
    qy = _blocks_to_plane(comps[0], hp // 8, wp // 8).unsqueeze(1)
    if ch == 1:
        qc = qy.new_empty((0,))
        return ops.decode(qy, qc, tabs[0], tabs[0], tabs[0], c.subsampling, h, w, impl, backward)
    qc = torch.stack([_blocks_to_plane(t, sc[2] // 8, sc[3] // 8) for t in comps[1:]], dim=1)
    return ops.decode(qy, qc, tabs[0], tabs[1], tabs[2], c.subsampling, h, w, impl, backward)


__all__ = ["Coefficients", "encode", "decode", "check_coefficients", "block_grid", "HALF_BACKWARDS"]

"""JPEG file sizes: :func:`jpeg_size`, the exact size of the file Pillow writes, and :func:`rate`, a differentiable
estimate of it.

Both start from the quantized DCT coefficients that fdgpu's forward computes bit for bit as libjpeg-turbo does.
:func:`jpeg_size` adds what libjpeg-turbo writes around them (the markers, the Huffman codes, byte stuffing) and equals
``len()`` of Pillow's file; :func:`rate` replaces the integer parts of the same count (rounding, magnitude
categories, the nonzero test, run lengths) by smooth functions so that it has a gradient with respect to the image,
the tables and the quality.
"""
from __future__ import annotations

import functools
import heapq
import math
from typing import List, Tuple, Union

import torch
import torch.nn.functional as F

from . import tables as _tables
from ._checks import as_number, check_choice, check_input, check_quality, check_table, check_values, minmax, x_error
from .choices import BACKENDS, FACTORS, SUBSAMPLINGS

Number = Union[int, float]


# libjpeg's largest quantization step (jcparam.c jpeg_add_quant_table clamps to 32767); above 255 a table is written
# with 16-bit entries.
MAX_STEP = 32767

# natural-order index of each zigzag position
ZIGZAG = _tables.zigzag_order()

# ITU-T T.81 Annex K.3, libjpeg's default Huffman tables: code counts per length 1..16, then the symbols in code order
_STD = {  # (table 0 luma / 1 chroma, class 0 DC / 1 AC): (counts per length, symbols)
    (0, 0): (bytes.fromhex("00010501010101010100000000000000"), bytes.fromhex(
        "000102030405060708090a0b"
    )),
    (0, 1): (bytes.fromhex("0002010303020403050504040000017d"), bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a"
        "3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a929394"
        "95969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8"
        "e9eaf1f2f3f4f5f6f7f8f9fa"
    )),
    (1, 0): (bytes.fromhex("00030101010101010101010000000000"), bytes.fromhex(
        "000102030405060708090a0b"
    )),
    (1, 1): (bytes.fromhex("00020102040403040705040400010277"), bytes.fromhex(
        "000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a262728"
        "292a35363738393a434445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a92"
        "939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7"
        "e8e9eaf2f3f4f5f6f7f8f9fa"
    )),
}


def _canonical(bits, vals) -> Tuple[List[int], List[int]]:
    """Codes and lengths per symbol (256 each; length 0: no code) of a table given by its counts per length and its
    symbols in code order: the canonical codes of T.81 Annex C."""
    code, size = [0] * 256, [0] * 256
    c, p = 0, 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            code[vals[p]], size[vals[p]] = c, length
            c, p = c + 1, p + 1
        c <<= 1
    return code, size


def optimal_table(freq) -> Tuple[List[int], List[int]]:
    """libjpeg's optimal Huffman table (jchuff.c ``jpeg_gen_optimal_table``) for the counts of symbols 0..255:
    returns ``(bits, vals)``, the code counts per length 1..16 and the symbols in code order.

    Huffman's construction over the used symbols plus a reserved symbol 256 of count 1 (so that no code is all 1
    bits), merging the two least frequent nodes (ties: the larger symbol first), then the code lengths limited to 16
    as libjpeg does (a pair at the longest length moves up, a shorter code moves down), and the reserved code removed
    from the longest length. Symbols are sorted by their unlimited length, then by value."""
    f = [int(v) for v in freq[:256]] + [1]
    heap = [(f[i], -i) for i in range(257) if f[i]]
    heapq.heapify(heap)
    members = {-k: [-k] for _, k in heap}
    codesize = [0] * 257
    while len(heap) > 1:
        f1, k1 = heapq.heappop(heap)
        f2, k2 = heapq.heappop(heap)
        for m in members[-k1]:
            codesize[m] += 1
        for m in members[-k2]:
            codesize[m] += 1
        members[-k1] += members.pop(-k2)
        heapq.heappush(heap, (f1 + f2, k1))
    count = [0] * 33
    for s in range(257):
        if codesize[s]:
            count[min(codesize[s], 32)] += 1
    i = 32
    while i > 16:
        while count[i] > 0:
            j = i - 2
            while count[j] == 0:
                j -= 1
            count[i] -= 2
            count[i - 1] += 1
            count[j + 1] += 2
            count[j] -= 1
        i -= 1
    while count[i] == 0:
        i -= 1
    count[i] -= 1
    vals = sorted((s for s in range(256) if codesize[s]), key=lambda s: (codesize[s], s))
    return count[1:17], vals


def _std_codes(device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(2, 2, 256)`` int64 codes and lengths of the standard tables, indexed [table, class, symbol]."""
    code = torch.zeros(2, 2, 256, dtype=torch.int64)
    size = torch.zeros(2, 2, 256, dtype=torch.int64)
    for (t, k), (bits, vals) in _STD.items():
        c, s = _canonical(bits, vals)
        code[t, k], size[t, k] = torch.tensor(c), torch.tensor(s)
    return code.to(device), size.to(device)


def _nbits(v: torch.Tensor) -> torch.Tensor:
    """Magnitude category: bits of ``|v|`` (0 for 0), for integers ``|v| < 2**24``."""
    return torch.frexp(v.abs().to(torch.float32))[1].to(torch.int64)


def _with_dummies(y: torch.Tensor, real_rows: int, real_cols: int, hs: int) -> torch.Tensor:
    """The encoder's dummy blocks (jccoefct.c) on a grid ``(N, R, C, 64)`` padded to whole MCUs: blocks right of
    ``real_cols`` get zero AC and the DC of the last real block of their row; blocks below ``real_rows`` zero AC and
    the DC of the last block of the row above within their MCU. A gather (differentiable for float grids)."""
    rows, cols = y.shape[1:3]
    if (rows, cols) == (real_rows, real_cols):
        return y
    dev = y.device
    r = torch.arange(rows, device=dev)[:, None]
    c = torch.arange(cols, device=dev)[None, :]
    below = r >= real_rows
    src_r = torch.where(below, real_rows - 1, r).expand(rows, cols)
    src_c = torch.where(below, c // hs * hs + hs - 1, c).clamp(max=real_cols - 1).expand(rows, cols)
    real = (~below & (c < real_cols))[..., None] | (torch.arange(64, device=dev) == 0)
    return y[:, src_r, src_c] * real.to(y.dtype)


def _scan_order(comps, real_rows: int, real_cols: int, hs: int, vs: int):
    """Blocks ``(N, L, 64)`` in the order the scan codes them, with each block's component ``(L,)`` and table
    ``(L,)``: raster order for one component, else per MCU the ``vs x hs`` luma blocks row by row, Cb, Cr."""
    y = _with_dummies(comps[0], real_rows, real_cols, hs)
    n, rows, cols, _ = y.shape
    dev = y.device
    if len(comps) == 1:
        blocks = y.reshape(n, rows * cols, 64)
        zeros = torch.zeros(rows * cols, dtype=torch.int64, device=dev)
        return blocks, zeros, zeros
    m = (rows // vs) * (cols // hs)
    yb = y.reshape(n, rows // vs, vs, cols // hs, hs, 64).permute(0, 1, 3, 2, 4, 5).reshape(n, m, vs * hs, 64)
    blocks = torch.cat([yb, comps[1].reshape(n, m, 1, 64), comps[2].reshape(n, m, 1, 64)], 2).reshape(n, -1, 64)
    comp = torch.tensor([0] * (vs * hs) + [1, 2], device=dev).repeat(m)
    return blocks, comp, (comp > 0).long()


def _symbols(blocks: torch.Tensor, comp: torch.Tensor):
    """Per block: DC category and difference, AC (run, size) symbols, ZRL counts and EOB flags, with the AC values.

    Returns ``dc_s, dc_v`` ``(N, L)``, ``sym, zrl, ac_s, ac_v`` ``(N, L, 63)`` (zero where the coefficient is
    zero) and ``eob`` ``(N, L)`` bool."""
    dc = blocks[..., 0]
    diff = torch.empty_like(dc)
    for c in range(int(comp.max()) + 1):
        m = comp == c
        d = dc[:, m]
        diff[:, m] = d - F.pad(d, (1, 0))[:, :-1]
    ac = blocks[..., ZIGZAG[1:].to(blocks.device)]
    nz = ac != 0
    pos = torch.arange(1, 64, device=blocks.device)
    last = torch.cummax(torch.where(nz, pos, 0), dim=-1).values
    prev = F.pad(last, (1, 0))[..., :-1]
    run = torch.where(nz, pos - prev - 1, 0)
    ac_s = _nbits(ac)
    sym = torch.where(nz, (run % 16) * 16 + ac_s, 0)
    zrl = torch.where(nz, run // 16, 0)
    eob = last[..., -1] < 63
    return _nbits(diff), diff, sym, zrl, ac_s, ac, nz, eob


def _extra(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    # the s extra bits of a value: v itself when positive, v - 1 (one's complement) when negative
    return torch.where(v < 0, v - 1, v) & ((1 << s) - 1)


def _frequencies(n: int, table: torch.Tensor, dc_s, sym, zrl, nz, eob) -> torch.Tensor:
    """Symbol counts ``(N, 2, 2, 256)`` [image, table, DC/AC, symbol], as jchuff.c's gathering pass counts them."""
    dev = dc_s.device
    img = torch.arange(n, device=dev)[:, None]
    t = table[None, :]
    freq = torch.zeros(n * 4 * 256, dtype=torch.int64, device=dev)
    base = (img * 2 + t) * 2 * 256  # (N, L): where image i's counts for block l's table start
    freq.index_add_(0, (base + dc_s).flatten(), torch.ones_like(dc_s).flatten())
    ka = base[..., None] + 256 + sym
    freq.index_add_(0, ka[nz], torch.ones_like(ka[nz]))
    freq.index_add_(0, (base + 256 + 0xF0).flatten(), zrl.sum(-1).flatten())
    freq.index_add_(0, (base + 256).flatten(), eob.long().flatten())
    return freq.view(n, 2, 2, 256)


def _bitstream_bytes(lens: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """Bytes of each image's packed codes ``(N, S)`` (lengths, values, in order) with stuffing and 1-bit padding."""
    n = lens.shape[0]
    dev = lens.device
    total = lens.sum(1)
    padded = (total + 7) // 8 * 8
    base = torch.cumsum(padded, 0) - padded
    keep = lens > 0
    ln, v = lens[keep], vals[keep]
    start = (base[:, None] + torch.cumsum(lens, 1) - lens)[keep]
    chunk = torch.repeat_interleave(torch.arange(ln.numel(), device=dev), ln)
    off = torch.arange(chunk.numel(), device=dev) - (torch.cumsum(ln, 0) - ln)[chunk]
    bits = torch.ones(int(padded.sum()), dtype=torch.uint8, device=dev)
    bits[start[chunk] + off] = ((v[chunk] >> (ln[chunk] - 1 - off)) & 1).to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=dev)
    byte = (bits.view(-1, 8).to(torch.int32) * weights).sum(1)
    owner = torch.repeat_interleave(torch.arange(n, device=dev), padded // 8)
    ff = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, owner, (byte == 255).long())
    return padded // 8 + ff


def _entropy_torch(comps, real_rows: int, real_cols: int, hs: int, vs: int, optimize: bool) -> torch.Tensor:
    """``(N, 5)`` int64: the entropy-coded segment's bytes and (``optimize``) the symbol count of the optimal DC
    luma, AC luma, DC chroma and AC chroma tables. ``comps``: coefficient grids ``(N, R, C, 8, 8)`` (integers, or
    quotients rounded here), natural order, padded to whole MCUs (the C path's ``fdgpu_jpeg_entropy`` computes the
    same)."""
    from .reference.quantize import round_half_away

    comps = [(c.long() if not c.is_floating_point() else round_half_away(c).long()).flatten(3) for c in comps]
    blocks, comp, table = _scan_order(comps, real_rows, real_cols, hs, vs)
    n, dev = blocks.shape[0], blocks.device
    dc_s, diff, sym, zrl, ac_s, ac, nz, eob = _symbols(blocks, comp)
    if int(dc_s.max()) > 11 or int(ac_s.max()) > 10:
        raise ValueError("x: a quantized coefficient is outside baseline JPEG's range (DC difference above 11 bits "
                         "or AC above 10 bits), which no 8-bit image gives; check the tables")
    out = torch.zeros(n, 5, dtype=torch.int64)
    if optimize:
        freq = _frequencies(n, table, dc_s, sym, zrl, nz, eob).cpu()
        code = torch.zeros(n, 2, 2, 256, dtype=torch.int64)
        size = torch.zeros(n, 2, 2, 256, dtype=torch.int64)
        for i in range(n):
            for t in range(2 if len(comps) == 3 else 1):
                for k in range(2):
                    bits, vals = optimal_table(freq[i, t, k].tolist())
                    c, s = _canonical(bits, vals)
                    code[i, t, k], size[i, t, k] = torch.tensor(c), torch.tensor(s)
                    out[i, 1 + 2 * t + k] = len(vals)
        code, size = code.to(dev), size.to(dev)
    else:
        std_code, std_size = _std_codes(dev)
        code, size = std_code.expand(n, 2, 2, 256), std_size.expand(n, 2, 2, 256)
    img = torch.arange(n, device=dev)[:, None]
    t = table[None, :].expand(n, -1)
    # DC: code then the difference's extra bits
    dc_len = size[img, t, 0, dc_s] + dc_s
    dc_val = (code[img, t, 0, dc_s] << dc_s) | _extra(diff, dc_s)
    # AC: for each nonzero coefficient its ZRLs (one chunk: at most 3 codes of up to 16 bits), then code + extra
    i3, t3 = img[..., None], t[..., None]
    zl = size[i3, t3, 1, 0xF0]
    zc = code[i3, t3, 1, 0xF0]
    zrl_len = zrl * zl
    zrl_val = torch.zeros_like(zrl)
    for r in range(1, 4):
        zrl_val = torch.where(zrl >= r, (zrl_val << zl) | zc, zrl_val)
    main_len = torch.where(nz, size[i3, t3, 1, sym] + ac_s, 0)
    main_val = torch.where(nz, (code[i3, t3, 1, sym] << ac_s) | _extra(ac, ac_s), 0)
    eob_len = torch.where(eob, size[img, t, 1, 0], 0)
    eob_val = torch.where(eob, code[img, t, 1, 0], 0)
    seg_lens = torch.cat([dc_len[..., None], torch.stack([zrl_len, main_len], -1).flatten(-2), eob_len[..., None]], -1)
    seg_vals = torch.cat([dc_val[..., None], torch.stack([zrl_val, main_val], -1).flatten(-2), eob_val[..., None]], -1)
    out[:, 0] = _bitstream_bytes(seg_lens.reshape(n, -1), seg_vals.reshape(n, -1)).cpu()
    return out


def header_bytes(channels: int, wide, dht):
    """Bytes of everything Pillow writes besides the entropy-coded segment: SOI (2), APP0 JFIF (18), one DQT per
    table (69, or 133 with 16-bit entries when a step exceeds 255), SOF (10 + 3 per component), the DHT segments
    (``dht`` bytes), SOS (8 + 2 per component) and EOI (2). ``wide`` (luma, chroma) and ``dht`` are Python numbers
    or int64 tensors of one value per image (then so is the result)."""
    dqt = 69 + 64 * wide[0] + ((69 + 64 * wide[1]) if channels == 3 else 0)
    return 2 + 18 + dqt + 10 + 3 * channels + dht + 8 + 2 * channels + 2


def dht_bytes(channels: int, counts=None):
    """Bytes of the DHT segments: 21 + the number of symbols per table (4 tables in colour, 2 in grayscale);
    ``counts`` None gives the standard tables' (12 DC and 162 AC symbols each); a list of counts, or an int64
    tensor ``(N, >= k)`` of them (then one size per image)."""
    k = 4 if channels == 3 else 2
    if isinstance(counts, torch.Tensor):
        return 21 * k + counts[:, :k].sum(1)
    counts = counts[:k] if counts is not None else [12, 162, 12, 162][:k]
    return sum(21 + c for c in counts)


def _file_bytes(ent: torch.Tensor, channels: int, tables, n: int, optimize: bool) -> torch.Tensor:
    """``(N,)`` int64 file sizes from the coder's ``(N, 5)`` (segment bytes, optimal tables' symbol counts) and the
    (luma, chroma) tables (``(8, 8)`` or ``(N, 8, 8)``, any device)."""
    wide = [int(bool((t.detach() > 255).any())) if t.dim() == 2  # one flag for a shared table, else one per image
            else (t.detach().reshape(-1, 64) > 255).any(1).cpu().long() for t in tables]
    ent = ent.cpu()
    dht = dht_bytes(channels, ent[:, 1:] if optimize else None)
    return (ent[:, 0] + header_bytes(channels, (wide[0], wide[1]), dht)).expand(n)


@functools.lru_cache(maxsize=128)
def _quality_tables(quality: Union[int, float], integer: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`_resolve_tables` of one Python quality on the CPU, computed once per quality (about 60 us a call
    otherwise: a fixed cost of every :func:`jpeg_size` call). The same checks and errors; never modified in place."""
    q = check_quality(quality)
    if integer and bool((q != q.round()).any()):
        raise ValueError("quality: expected integer qualities (a JPEG file is written at an integer quality), "
                         f"got {q.tolist()}; round it")
    return _tables._ijg(q, torch.float64)


def _resolve_tables(x: torch.Tensor, quality, luma_table, chroma_table, n: int, integer: bool):
    """``(luma, chroma)`` float64 tables on x's device, ``(8, 8)`` or ``(n, 8, 8)``, from exactly one of ``quality``
    (default 75, Pillow's) and explicit tables; ``integer``: steps must be integers 1..32767 (what a file holds)."""
    if quality is not None and luma_table is not None:
        raise ValueError("quality, luma_table: expected one of them (an IJG quality or explicit tables), got both")
    if luma_table is None:
        if chroma_table is not None:
            raise ValueError("chroma_table: expected luma_table too (explicit tables), got only chroma_table")
        quality = 75 if quality is None else quality
        if not isinstance(quality, torch.Tensor):
            quality = as_number(quality)
            if isinstance(quality, (int, float)) and not isinstance(quality, bool) and x.device.type == "cpu":
                return _quality_tables(quality, integer)
        q = check_quality(quality)
        if q.dim() == 1 and q.shape[0] != n:
            raise ValueError(f"quality: expected one quality per image of the flattened batch ({n}), got {q.shape[0]}")
        if integer and bool((q != q.round()).any()):
            raise ValueError("quality: expected integer qualities (a JPEG file is written at an integer quality), "
                             f"got {q.tolist()}; round it")
        return _tables._ijg(q.to(x.device), torch.float64)
    lt = check_table("luma_table", luma_table, n).to(device=x.device, dtype=torch.float64)
    ct = lt if chroma_table is None else check_table("chroma_table", chroma_table, n).to(x.device, torch.float64)
    for name, t in (("luma_table", lt.detach()), ("chroma_table", ct.detach())):
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 1:
            raise ValueError(f"{name}: expected finite steps >= 1, got min {float(t.min()):g}")
        if integer and (bool((t != t.round()).any()) or float(t.max()) > MAX_STEP):
            raise ValueError(f"{name}: expected integer steps 1..{MAX_STEP} (what a JPEG file holds), got "
                             f"min {float(t.min()):g}, max {float(t.max()):g}, integers: "
                             f"{bool((t == t.round()).all())}; round the table (torch.round) and clamp it")
    return lt, ct


def _coefficients(x: torch.Tensor, lt: torch.Tensor, ct: torch.Tensor, subsampling: str, impl: str):
    """The quantized coefficients of ``x`` ``(N, C, H, W)`` that libjpeg-turbo codes, computed on backend ``impl``:
    per component a view ``(N, R, C, 8, 8)`` (natural order) of the block grid padded to whole MCUs, holding the
    integers (the C library's encoder) or the quantizer's quotients ``z = t / 8Q``, whose rounding half away from zero
    they are (the backends' forward; Triton's does not return them: the torch reference's then); and the luma's real
    block rows and columns."""
    from . import backends

    n, ch, h, w = x.shape
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, lt, ct = x.detach().to(compute).contiguous(), lt.to(compute), ct.to(compute)
    planes = None
    if impl == "cpu":
        from .backends import cpu

        planes = cpu.encode(x, lt, ct, subsampling)
    if planes is not None:  # (N, 1, Hp, Wp) and (N, 2, Hp / vs, Wp / hs) planes, block (r, c) at [8r:8r+8, 8c:8c+8]
        def grid(p):
            return p.unflatten(1, (p.shape[1] // 8, 8)).unflatten(3, (p.shape[2] // 8, 8)).permute(0, 1, 3, 2, 4)
        comps = [grid(planes[0][:, 0])] + ([grid(planes[1][:, 0]), grid(planes[1][:, 1])] if ch == 3 else [])
        return comps, -(-h // 8), -(-w // 8)
    rec = backends.get(impl if backends.get(impl).saves_state else "torch")
    with torch.no_grad():
        _, zy, zc = rec.forward(x, lt, ct, subsampling, True)

    def grid_z(z):  # (N, 64, R, C) -> (N, R, C, 8, 8)
        return z.permute(0, 2, 3, 1).unflatten(3, (8, 8))
    comps = [grid_z(zy[:, 0])] + ([grid_z(zc[:, 0]), grid_z(zc[:, 1])] if ch == 3 else [])
    return comps, -(-h // 8), -(-w // 8)


def jpeg_size(x: torch.Tensor, quality: Union[Number, torch.Tensor, None] = None, *, luma_table=None,
              chroma_table=None, subsampling: str = "4:2:0", optimize: bool = False, backend: str = "auto",
              validate: bool = True) -> torch.Tensor:
    """Exact size in bytes of the JPEG file Pillow writes for each image of ``x``.

    Equal to ``len()`` of ``Image.save(buf, "JPEG", quality=quality, subsampling=..., optimize=optimize)`` (or
    ``qtables=[luma, chroma]`` for explicit tables) of the 8-bit image ``round(255 x)``: the markers Pillow writes
    (SOI, APP0 JFIF, DQT, SOF, DHT, SOS, EOI), the Huffman-coded coefficients with the standard tables or, with
    ``optimize``, libjpeg's per-image optimal tables, byte stuffing and the final padding.

    Args:
        x: ``(..., 3 or 1, H, W)`` float in [0, 1] (RGB, or grayscale: a one-component file; any strides: the C
            path reads a channels-last batch or a crop in place), or an :class:`fdgpu.Coefficients` (``color``
            "ycbcr" with one chroma table for Cb and Cr, or "gray"): the file holding exactly those coefficients and
            tables; ``quality``, the tables and ``subsampling`` then come from it and must not be given.
        quality: an integer IJG quality in [1, 100], or a ``(B,)`` tensor of them, one per image of the flattened
            batch; None (and no tables) is Pillow's default, 75.
        luma_table, chroma_table: instead of ``quality``, integer steps 1..32767, ``(8, 8)`` or ``(B, 8, 8)``
            (natural order); ``chroma_table`` defaults to ``luma_table``. Tables with a step above 255 are written
            with 16-bit entries, as Pillow does.
        subsampling: one of ``fdgpu.SUBSAMPLINGS`` (colour only).
        optimize: per-image optimal Huffman tables (Pillow's ``optimize=True``).
        backend: one of ``fdgpu.choices.BACKENDS``, as in :func:`fdgpu.requantize`: "cpu" computes the coefficients
            and codes them in the C library, "torch" with torch ops on x's device (the same numbers), "triton" the
            coefficients with the torch reference and the codes with torch ops on the GPU, "auto" picks the first
            that applies to x's device.
        validate: check that ``x`` is finite and within [0, 1] (one host sync).

    Returns:
        ``x.shape[:-3]`` int64 on x's device: bytes per image.

    Example:
        >>> import torch, fdgpu
        >>> fdgpu.jpeg_size(torch.zeros(2, 3, 16, 16), 75).tolist()
        [631, 631]
    """
    if not isinstance(optimize, bool):
        raise TypeError(f"optimize: expected True or False, got {type(optimize).__name__}")
    from .coefficients import Coefficients

    if isinstance(x, Coefficients):
        if quality is not None or luma_table is not None or chroma_table is not None:
            raise ValueError("quality, luma_table, chroma_table: expected none of them with Coefficients (its own "
                             "tables are the file's), got some")
        return _coefficients_size(x, optimize, backend)
    check_input(x)
    check_choice("subsampling", subsampling, SUBSAMPLINGS)
    check_choice("backend", backend, BACKENDS)
    *lead, ch, h, w = x.shape
    n = math.prod(lead)
    lt, ct = _resolve_tables(x, quality, luma_table, chroma_table, n, integer=True)
    if n == 0:
        if validate:
            check_values([(x, minmax, x_error)])
        return torch.zeros(lead, dtype=torch.int64, device=x.device)
    from . import backends

    impl = backends.resolve(backend, x.device)
    x = x.reshape(n, ch, h, w)
    hs, vs = FACTORS[subsampling] if ch == 3 else (1, 1)
    ent = None
    if impl == "cpu":  # images to sizes in the library, the value check in its read of x
        from .backends import entropy as c_entropy

        ent = c_entropy.image_sizes(x, lt, ct, hs, vs, optimize, validate)
    if ent is None:
        if validate:
            check_values([(x, minmax, x_error)])
        comps, real_rows, real_cols = _coefficients(x, lt, ct, subsampling, impl)
        ent = _entropy_torch(comps, real_rows, real_cols, hs, vs, optimize)
    return _file_bytes(ent, ch, (lt, ct), n, optimize).to(x.device).reshape(lead)


# ------------------------------------------------------------------------------------------------ differentiable rate
def _coefficients_size(c, optimize: bool, backend: str) -> torch.Tensor:
    """:func:`jpeg_size` of the file holding the coefficients and tables of ``c`` (an :class:`fdgpu.Coefficients`)."""
    check_choice("backend", backend, BACKENDS)
    if c.color not in ("ycbcr", "gray"):
        raise ValueError(f"x: expected Coefficients with color 'ycbcr' or 'gray' (what Pillow writes), got "
                         f"{c.color!r}")
    comps = list(c.components)
    tabs = list(c.tables)
    if len(comps) == 3 and not torch.equal(tabs[1], tabs[2]):
        raise ValueError("x: expected one chroma table for Cb and Cr (Pillow writes one), got two different tables")
    for name, t in zip(("luma table", "chroma table"), tabs[:2]):
        if bool((t != t.round()).any()) or float(t.min()) < 1 or float(t.max()) > MAX_STEP:
            raise ValueError(f"x: expected integer steps 1..{MAX_STEP} in the {name}, got min {float(t.min()):g}, "
                             f"max {float(t.max()):g}")
    n = c.batch_size
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=comps[0].device)
    hs, vs = FACTORS[c.subsampling] if len(comps) == 3 else (1, 1)
    real_rows, real_cols = comps[0].shape[1:3]
    # the luma grid padded to whole MCUs (the coder replaces the padding by the encoder's dummy blocks)
    comps[0] = F.pad(comps[0], (0, 0, 0, 0, 0, -(-real_cols // hs) * hs - real_cols, 0,
                                -(-real_rows // vs) * vs - real_rows))
    impl = "cpu" if backend in ("auto", "cpu") and comps[0].device.type == "cpu" else "torch"
    if backend == "cpu" and impl != "cpu":
        raise ValueError(f"backend='cpu': expected Coefficients on the CPU, got {comps[0].device}")
    ent = None
    if impl == "cpu":
        from .backends import entropy as c_entropy

        grids = [g.detach().to(torch.float64 if g.dtype == torch.float64 else torch.float32) for g in comps]
        grids += [None, None]
        ent = c_entropy.sizes(grids[0], grids[1], grids[2], real_rows, real_cols, hs, vs, optimize)
        if ent is None and backend == "cpu":
            raise RuntimeError(f"backend='cpu' is unavailable: {c_entropy.status()}; use backend='torch' or 'auto'")
    if ent is None:
        ent = _entropy_torch([g.detach() for g in comps], real_rows, real_cols, hs, vs, optimize)
    return _file_bytes(ent, len(comps), (tabs[0], tabs[-1]), n, optimize).to(comps[0].device)


def _real_quotients(x: torch.Tensor, lt: torch.Tensor, ct: torch.Tensor, subsampling: str):
    """``z = DCT / Q`` of the real-valued pipeline (no 8-bit rounding, real colour conversion and box downsampling,
    orthonormal DCT of the level-shifted planes): per component ``(N, R, C, 64)`` on the block grid padded to whole
    MCUs, differentiable in ``x`` and the tables."""
    from .reference.color import rgb_to_ycbcr
    from .reference.dct import block_dct
    from .reference.jpeg import Geometry
    from .reference.sampling import downsample, pad_replicate

    n, ch, h, w = x.shape
    g = Geometry.of(h, w, ch, subsampling)
    u = pad_replicate(x * 255.0, g.hp, g.wp)
    if ch == 3:
        ycc = rgb_to_ycbcr(u, exact=False)
        chroma = downsample(ycc[:, 1:, : g.hc * g.vs], g.hs, g.vs, exact=False)
        planes = [(ycc[:, :1], lt), (pad_replicate(chroma, g.hp // g.vs, g.wp // g.hs), ct)]
    else:
        planes = [(u, lt)]
    comps = []
    for p, t in planes:
        z = block_dct(p - 128.0) / t.to(p.dtype).reshape(-1, 1, 64, 1, 1)   # [N, K, 64, R, C]
        comps += [z[:, k].permute(0, 2, 3, 1) for k in range(z.shape[1])]
    return comps, -(-h // 8), -(-w // 8)


def _lerp_lengths(lengths: torch.Tensor, s: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Code length at a real size ``s``: linear between the lengths of the integer sizes around it (``s`` clamped to
    ``[lo, hi]``). ``lengths``: ``(..., hi + 1)`` broadcastable against ``s``'s leading dims plus one."""
    sc = s.clamp(lo, hi)
    k = sc.detach().floor().long().clamp(max=hi - 1)
    a = torch.gather(lengths, -1, k.unsqueeze(-1)).squeeze(-1)
    b = torch.gather(lengths, -1, (k + 1).unsqueeze(-1)).squeeze(-1)
    return a + (b - a) * (sc - k)


def nonzero_weight(z: torch.Tensor) -> torch.Tensor:
    """The smooth "is coded" weight of a quotient: ``1 - exp(-(2 z)**4)`` (0 at 0, 0.06 at 1/4, 0.63 at the rounding
    threshold ``|z| = 1/2``, 0.99 at 3/4). The fourth power (rather than the square: ``1 - exp(-(2 z)**2)`` is
    0.47 at 0.4) keeps quotients that round to zero from being charged: on 12 photos x 12 tables the median relative
    error to :func:`jpeg_size` fell from 7.5 % to 3.7 % (Spearman 0.992 -> 0.998)."""
    return 1.0 - torch.exp(-(2.0 * z).square().square())


def magnitude_bits(v: torch.Tensor) -> torch.Tensor:
    """Smooth magnitude category ``log2(1 + |v|)``: equal to the category (the bits of ``|round v|``) at
    ``|v| = 0, 1, 3, 7, ...``, up to one bit below it in between."""
    return torch.log2(1.0 + v.abs())


def _rate_bits(comps, real_rows: int, real_cols: int, hs: int, vs: int, optimize: bool):
    """Smooth bits of the entropy-coded segment ``(N,)`` and the DHT bytes per image (see :func:`rate`)."""
    from .reference.quantize import round_half_away

    blocks, comp, table = _scan_order(comps, real_rows, real_cols, hs, vs)
    n, dev, dt = blocks.shape[0], blocks.device, blocks.dtype
    hard = round_half_away(blocks.detach()).long()
    dc_s, _, sym, zrl, _, _, nz, eob = _symbols(hard, comp)
    # code lengths [image, table, class, symbol]: the standard tables', or the optimal tables of the hard symbols
    # (16 bits for a symbol that the hard coefficients never use)
    if optimize:
        freq = _frequencies(n, table, dc_s, sym, zrl, nz, eob).cpu()
        size = torch.full((n, 2, 2, 256), 16, dtype=torch.int64)
        dht = []
        for i in range(n):
            counts = []
            for t in range(2 if len(comps) == 3 else 1):
                for k in range(2):
                    opt_bits, opt_vals = optimal_table(freq[i, t, k].tolist())
                    _, sz = _canonical(opt_bits, opt_vals)
                    size[i, t, k] = torch.where(torch.tensor(sz) > 0, torch.tensor(sz), 16)
                    counts.append(len(opt_vals))
            dht.append(dht_bytes(len(comps), counts))
        size = size.to(device=dev, dtype=dt)
    else:
        size = _std_codes(dev)[1].to(dt).expand(n, 2, 2, 256)
        dht = [dht_bytes(len(comps))] * n
    img = torch.arange(n, device=dev)[:, None]
    t = table[None, :].expand(n, -1)
    # DC: the code of the difference's smooth category, then that many bits
    dc = blocks[..., 0]
    diff = torch.zeros_like(dc)
    for c in range(len(comps)):
        m = comp == c
        d = dc[:, m]
        diff[:, m] = d - F.pad(d, (1, 0))[:, :-1]
    s_dc = magnitude_bits(diff)
    bits = (_lerp_lengths(size[img, t, 0, :12], s_dc, 0, 11) + s_dc).sum(1)
    # AC: each coefficient weighted by its smooth nonzero weight: the code of (run, smooth size) + the size's bits,
    # with the run the hard one (zeros since the previous nonzero hard coefficient)
    ac = blocks[..., ZIGZAG[1:].to(dev)]
    pos = torch.arange(1, 64, device=dev)
    last = torch.cummax(torch.where(nz, pos, 0), dim=-1).values
    run = pos - F.pad(last, (1, 0))[..., :-1] - 1
    s_ac = magnitude_bits(ac)
    lengths = size[img, t, 1][:, :, None, :].expand(n, ac.shape[1], 63, 256)
    idx = ((run % 16) * 16)[..., None] + torch.arange(11, device=dev)         # symbols (run, 0..10)
    per_size = torch.gather(lengths, -1, idx)                                  # [N, L, 63, 11]
    code = _lerp_lengths(per_size, s_ac, 1, 10)
    bits = bits + (nonzero_weight(ac) * (code + s_ac)).sum((1, 2))
    # ZRL and EOB codes: counted from the hard coefficients (no gradient)
    zrl_len = size[img, t, 1, 0xF0]
    eob_len = size[img, t, 1, 0]
    bits = bits + (zrl.sum(-1) * zrl_len).sum(1) + (eob * eob_len).sum(1)
    return bits, dht


def rate(x: torch.Tensor, quality: Union[Number, torch.Tensor, None] = None, *, luma_table=None,
         chroma_table=None, subsampling: str = "4:2:0", optimize: bool = False,
         validate: bool = True) -> torch.Tensor:
    """Differentiable estimate of the JPEG file's size in bits (:func:`jpeg_size` times 8), for rate terms.

    The same count as :func:`jpeg_size` with its integer steps made smooth. With ``z = DCT / Q`` the quantizer's
    quotients of the real-valued pipeline (colour conversion, box downsampling, orthonormal DCT, no 8-bit rounding)
    and ``s(v) = log2(1 + |v|)`` the smooth magnitude category (:func:`magnitude_bits`)::

        bits = 8 * headers
             + sum over blocks of      L_DC(s(dz)) + s(dz)                 dz: DC difference in scan order
             + sum over AC quotients   nu(z) * (L_AC(run, s(z)) + s(z))    nu(z) = 1 - exp(-(2 z)**4)
             + L_ZRL * (hard ZRL count) + L_EOB * (hard EOB count)

    ``L_DC(s)``, ``L_AC(run, s)`` are the Huffman code lengths of the symbols (libjpeg's standard tables, or with
    ``optimize`` the optimal tables of the rounded coefficients), linear in ``s`` between integer sizes; ``run``
    (zeros since the previous nonzero rounded coefficient, modulo 16), the ZRL and EOB counts and the headers come
    from the rounded quotients and carry no gradient. Byte stuffing and the last byte's padding are not modelled.

    Derivatives: with ``c`` the real coefficient and ``Q`` its step, ``z = c / Q``, every term is a smooth function
    of ``z``: ``d bits / d z = nu'(z) (L + s) + nu(z) (dL/ds + 1) s'(z)`` with ``s'(z) = sign(z) / ((1 + |z|) ln 2)``
    and ``nu'(z) = 64 z**3 exp(-(2 z)**4)``; ``dz/dx`` is the real-valued pipeline's (linear) Jacobian,
    ``dz/dQ = -z / Q``, and the quality reaches the tables through :func:`fdgpu.tables.ijg` (straight-through for its
    floor and clamp). The DC difference term has the same form in ``dz``.

    Args:
        x: ``(..., 3 or 1, H, W)`` float in [0, 1].
        quality: an IJG quality in [1, 100] (a tensor with ``requires_grad`` gets a gradient), or a ``(B,)`` tensor;
            None (and no tables) is 75.
        luma_table, chroma_table: instead of ``quality``, steps >= 1 (real-valued allowed: tables being learned),
            ``(8, 8)`` or ``(B, 8, 8)``; ``chroma_table`` defaults to ``luma_table``.
        subsampling: one of ``fdgpu.SUBSAMPLINGS``.
        optimize: code lengths of the per-image optimal Huffman tables (and their DHT sizes) instead of the standard
            ones.
        validate: check that ``x`` is finite and within [0, 1] (one host sync).

    Returns:
        ``x.shape[:-3]``, x's floating dtype (float32 for half inputs): estimated bits per image.

    Example:
        >>> import torch, fdgpu
        >>> x = torch.rand(2, 3, 16, 16, requires_grad=True)
        >>> bits = fdgpu.rate(x, 50)
        >>> bits.sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3, 16, 16])
    """
    check_input(x)
    check_choice("subsampling", subsampling, SUBSAMPLINGS)
    if not isinstance(optimize, bool):
        raise TypeError(f"optimize: expected True or False, got {type(optimize).__name__}")
    *lead, ch, h, w = x.shape
    n = math.prod(lead)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    lt, ct = _resolve_tables(x, quality, luma_table, chroma_table, n, integer=False)
    if validate:
        check_values([(x, minmax, x_error)])
    if n == 0:
        return torch.zeros(lead, dtype=compute, device=x.device)
    comps, real_rows, real_cols = _real_quotients(x.reshape(n, ch, h, w).to(compute), lt.to(compute),
                                                  ct.to(compute), subsampling)
    hs, vs = FACTORS[subsampling] if ch == 3 else (1, 1)
    bits, dht = _rate_bits(comps, real_rows, real_cols, hs, vs, optimize)
    wide = [(t.detach().reshape(-1, 64) > 255).any(1).cpu() for t in (lt, ct)]
    wide = [v.expand(n) if v.numel() == 1 else v for v in wide]
    head = torch.tensor([8 * header_bytes(ch, (bool(wide[0][i]), bool(wide[1][i])), dht[i]) for i in range(n)],
                        dtype=compute, device=x.device)
    return (bits + head).reshape(lead)

"""The JPEG family as defences: JPEG at a fixed or random quality, Feature Distillation (the paper's, the authors'
code's and a data-designed table), tables from a file, and Dziugaite et al.'s JPEG-noise control.

Each is registered below with its spec form (``jpeg:75``, ``fd:1``, ...) for ``fdgpu eval``. Inputs and outputs
``(B, 3, H, W)`` in [0, 1]; the fdgpu layers take the attacker view's backward mode.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..files import load_error
from ..registry import BuildContext, integer, number, register_defence


class RandomQualityJPEG(nn.Module):
    """JPEG at a random integer quality in ``[low, high]``, drawn per image and per call from ``generator``.

    ``(B, 3, H, W)`` in [0, 1] -> same. Call :meth:`reseed` to make a run repeatable.
    """

    def __init__(self, low: int, high: int, backward: str = "ste", seed: int = 0, subsampling: str = "4:2:0"):
        super().__init__()
        self.subsampling = subsampling
        self.low, self.high, self.backward = int(low), int(high), backward
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed`` (``fdgpu eval`` calls this per batch)."""
        self.generator.manual_seed(int(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import fdgpu
        q = torch.randint(self.low, self.high + 1, (x.shape[0],), generator=self.generator).to(torch.float32)
        return fdgpu.jpeg(x, q.to(x.device), subsampling=self.subsampling, backward=self.backward)

    def extra_repr(self) -> str:
        return f"quality in [{self.low}, {self.high}], backward={self.backward!r}"


class JPGNoise(nn.Module):
    """Dziugaite et al. (2016)'s control: ``x + P(JPG(x) - x)`` with P a random permutation of the ``C*H*W`` entries
    of each image's JPEG change (a perturbation of the same size and distribution as JPEG's, but unstructured).

    ``(B, C, H, W)`` in [0, 1] -> same, clamped to [0, 1]. Not meant to be differentiated (identity backward).
    """

    def __init__(self, quality: float, seed: int = 0, subsampling: str = "4:2:0"):
        super().__init__()
        self.subsampling = subsampling
        self.quality = float(quality)
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed`` (``fdgpu eval`` calls this per batch)."""
        self.generator.manual_seed(int(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import fdgpu
        with torch.no_grad():
            y = fdgpu.jpeg(x.detach(), self.quality, subsampling=self.subsampling, backward="bpda")
            d = (y - x.detach()).flatten(1)
            perm = torch.stack([torch.randperm(d.shape[1], generator=self.generator) for _ in range(d.shape[0])])
            d = torch.gather(d, 1, perm.to(d.device)).view_as(x)
            out = (x.detach() + d).clamp(0.0, 1.0)
        return x + (out - x).detach()


def load_tables(path: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(luma, chroma)`` from a ``torch.save``-d ``(8, 8)`` table (``chroma`` is then ``None``) or a dict with
    ``luma`` and optional ``chroma``, read with ``weights_only=True``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tables: expected a torch.save-d (8, 8) table or dict file, got {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load on a file that is not a torch.save-d table raises almost anything
        raise ValueError(f"tables: expected a torch.save-d (8, 8) table or dict file, got {path!r} which cannot be "
                         f"loaded ({load_error(exc)})") from None
    if isinstance(obj, dict):
        if "luma" not in obj:
            raise ValueError(f"tables: expected a dict with 'luma' (and optional 'chroma'), got keys {sorted(obj)}")
        return torch.as_tensor(obj["luma"]), (None if obj.get("chroma") is None else torch.as_tensor(obj["chroma"]))
    return torch.as_tensor(obj), None


# --- registration: the spec forms of fdgpu eval --------------------------------------------------------------------

def _quality(fields, text):
    q = number(fields[0], "Q", text)
    if not 1 <= q <= 100:
        raise ValueError(f"Q in {text!r}: expected a JPEG quality in [1, 100], got {fields[0]}")
    return (q,), {}


def _quality_range(fields, text):
    lo, hi = integer(fields[0], "LO", text), integer(fields[1], "HI", text)
    if not 1 <= lo <= hi <= 100:
        raise ValueError(f"{text!r}: expected 1 <= LO <= HI <= 100, got LO={lo}, HI={hi}")
    return (lo, hi), {}


def _strength(fields, text):
    k = number(fields[0], "K", text)
    if not k > 0:
        raise ValueError(f"K in {text!r}: expected a strength > 0 (1, 2, 3 = FD 1x/2x/3x), got {fields[0]}")
    return (k,), {}


def _design(fields, text):
    eps = number(fields[0], "EPS", text)
    if not eps > 0:
        raise ValueError(f"EPS in {text!r}: expected a perturbation size > 0 in pixel levels, got {fields[0]}")
    n = integer(fields[1], "N", text, low=0) if len(fields) == 2 else 15
    return (eps, n), {}


def _path(fields, text):
    return (":".join(fields),), {}  # a path may hold ':'


def _jpeg(spec, ctx: BuildContext):
    import fdgpu
    return fdgpu.JPEG(quality=spec.args[0], subsampling=ctx.subsampling, backward=ctx.backward)


def _jpeg_rand(spec, ctx: BuildContext):
    return RandomQualityJPEG(spec.args[0], spec.args[1], backward=ctx.backward, seed=ctx.seed,
                             subsampling=ctx.subsampling)


def _fd(spec, ctx: BuildContext):
    import fdgpu
    return fdgpu.FDJpeg(strength=spec.args[0], subsampling=ctx.subsampling, backward=ctx.backward)


def _fd_official(spec, ctx: BuildContext):
    import fdgpu
    return fdgpu.FDJpeg(strength=spec.args[0], backward=ctx.backward, variant="official")


def _fd_design(spec, ctx: BuildContext):
    import fdgpu
    if ctx.calib is None:
        raise ValueError(f"{spec.text!r}: expected calibration images (--calib, e.g. train10k), got none")
    table = fdgpu.tables.fd_design(ctx.calib(), spec.args[0], n_sensitive=spec.args[1])
    return fdgpu.Requantize(table, table, subsampling=ctx.subsampling, backward=ctx.backward)


def _tables(spec, ctx: BuildContext):
    import fdgpu
    luma, chroma = load_tables(spec.args[0])
    return fdgpu.Requantize(luma, chroma, subsampling=ctx.subsampling, backward=ctx.backward)


def _jpgnoise(spec, ctx: BuildContext):
    return JPGNoise(spec.args[0], seed=ctx.seed, subsampling=ctx.subsampling)


register_defence("jpeg", form="jpeg:Q", summary="JPEG round trip at IJG quality Q (`fdgpu.JPEG`)",
                 parse=_quality, build=_jpeg, nargs=(1, 1), example="jpeg:75")
register_defence("jpeg-rand", form="jpeg-rand:LO:HI",
                 summary="JPEG at a random integer quality in [LO, HI] per image and per call (an EOT target)",
                 parse=_quality_range, build=_jpeg_rand, nargs=(2, 2), example="jpeg-rand:30:90", randomised=True)
register_defence("fd", form="fd:K",
                 summary="Feature Distillation, strength K (`fdgpu.FDJpeg`; 1, 2, 3 = FD 1x/2x/3x)",
                 parse=_strength, build=_fd, nargs=(1, 1), example="fd:1")
register_defence("fd-official", form="fd-official:K",
                 summary="FD as in the authors' public code: table 25/30 x K on each RGB channel, no YCbCr, no "
                         "subsampling (`fdgpu.FDJpeg(K, variant=\"official\")`)",
                 parse=_strength, build=_fd_official, nargs=(1, 1), example="fd-official:1")
register_defence("fd-design", form="fd-design:EPS[:N]",
                 summary="FD table from `fdgpu.tables.fd_design(calib, EPS, N)` on the calibration images (--calib)",
                 parse=_design, build=_fd_design, nargs=(1, 2), example="fd-design:2:10")
register_defence("tables", form="tables:PATH",
                 summary="a `torch.save`-d (8, 8) table, or a dict with `luma` and optional `chroma`",
                 parse=_path, build=_tables, nargs=(1, None), example="tables:{tmp}/tables.pt")
register_defence("jpgnoise", form="jpgnoise:Q",
                 summary="Dziugaite et al.'s control: `x + P(JPG_Q(x) - x)`, P a random permutation",
                 parse=_quality, build=_jpgnoise, nargs=(1, 1), example="jpgnoise:75", randomised=True)

"""Text specs for defences and attacks, as used by ``fdgpu eval``, and the modules they build.

Defences (inputs and outputs ``(B, 3, H, W)`` in [0, 1]):

============================  ===========================================================================
``none``                      identity
``jpeg:Q``                    JPEG round trip at IJG quality Q (``fdgpu.JPEG``)
``jpeg-rand:LO:HI``           JPEG at a random integer quality in [LO, HI] per image and per call (EOT target)
``fd:K``                      Feature Distillation, strength K (``fdgpu.FDJpeg``; 1, 2, 3 = FD 1x/2x/3x)
``fd-official:K``             FD as in the authors' public code: table 25/30 x K on each RGB channel, no
                              YCbCr, no subsampling (``fdgpu.FDJpeg(K, variant="official")``)
``fd-design:EPS[:N]``         FD table from ``fdgpu.tables.fd_design(calib, EPS, N)`` on calibration images
``tables:PATH``               ``torch.save``-d ``(8, 8)`` table, or a dict with ``luma`` and optional ``chroma``
``jpgnoise:Q``                Dziugaite et al.'s control: ``x + P(JPG_Q(x) - x)``, P a random permutation
``quilting[:k=v,...]``        ``fdgpu.baselines.make_defence("quilting", **kwargs)`` (same for ``tvm``)
============================  ===========================================================================

Attacks (``EPS`` in pixel levels of 0..255 unless written as a fraction such as ``8/255``; L2 budgets are plain
numbers in [0, 1] units):

============================  ===========================================================================
``none``                      no attack (clean accuracy)
``fgsm:EPS``                  FGSM (``fdgpu.attacks.fgsm``)
``pgd:EPS:STEPS[:ALPHA]``     L-inf PGD with a random start (``pgdl2`` for L2)
``eot:EPS:STEPS:SAMPLES``     PGD averaging the gradient over SAMPLES draws of a randomised defence
``apgd:EPS:STEPS``            APGD with cross-entropy (Croce & Hein 2020; ``fdgpu.attacks.apgd``)
``apgd-dlr:EPS:STEPS``        APGD with the DLR loss
``apgd-t:EPS:STEPS``          APGD-T: targeted DLR, one run per target class (``targets=``, default 9)
============================  ===========================================================================

Every attack but ``none`` also takes trailing ``key=value`` options: ``restarts=N`` (random restarts; ``fgsm`` has
none), ``eot=N`` (gradient draws per step against randomised defences; default: ``evaluate``'s ``eot_samples``)
and, for ``apgd-t``, ``targets=N``; e.g. ``apgd:8:100:restarts=2`` or ``pgd:8:10:eot=20``.

Views (what the attacker differentiates): ``transfer`` (the undefended model; the defence is applied to the result),
or adaptive through the defended model with the layer's ``exact`` / ``ste`` / ``soft`` / ``bpda`` backward.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn

VIEWS = ("transfer", "exact", "ste", "soft", "bpda")
ADAPTIVE_VIEWS = VIEWS[1:]
DEFENCE_KINDS = ("none", "jpeg", "jpeg-rand", "fd", "fd-official", "fd-design", "tables", "jpgnoise", "quilting", "tvm")
ATTACK_KINDS = ("none", "fgsm", "pgd", "pgdl2", "eot", "apgd", "apgd-dlr", "apgd-t")
APGD_LOSS = {"apgd": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}


@dataclass(frozen=True)
class AttackSpec:
    """A parsed attack: ``kind``; ``eps`` in [0, 1] units; ``levels`` the L-inf budget in pixel levels.

    ``samples``: EOT draws per step (``None``: the evaluation's default, applied to randomised defences only);
    ``restarts``: random restarts (``None``: the evaluation's default); ``targets``: APGD-T's target classes.
    """
    text: str
    kind: str
    eps: float = 0.0
    steps: int = 0
    alpha: Optional[float] = None
    samples: Optional[int] = None
    restarts: Optional[int] = None
    targets: int = 9

    @property
    def levels(self) -> float:
        return self.eps * 255.0 if self.kind != "pgdl2" else float("nan")


@dataclass(frozen=True)
class DefenceSpec:
    """A parsed defence: ``kind`` and its arguments."""
    text: str
    kind: str
    args: Tuple = ()
    kwargs: Dict = field(default_factory=dict, hash=False, compare=False)


def _number(text: str, what: str, spec: str) -> float:
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            value = float(a) / float(b)
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"{what} in {spec!r}: expected a number, got {text!r}") from None
    except ZeroDivisionError:
        raise ValueError(f"{what} in {spec!r}: expected a number, got {text!r} (a division by zero)") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} in {spec!r}: expected a finite number, got {text!r}")
    return value


def _positive(text: str, what: str, spec: str, levels: bool) -> float:
    # A PGD step: > 0 (a zero or negative step never moves, or moves away from the attack's goal).
    value = _eps(text, spec, what) if levels else _number(text, what, spec)
    if not value > 0:
        raise ValueError(f"{what} in {spec!r}: expected a step size > 0, got {text}")
    return value


def _eps(text: str, spec: str, what: str = "EPS") -> float:
    # "8" or "0.5" are pixel levels (8/255, 0.5/255); a fraction "8/255" is already in [0, 1] units.
    value = _number(text, what, spec)
    if "/" not in text:
        value = value / 255.0
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{what} in {spec!r}: expected pixel levels in [0, 255] (or a fraction like 8/255), "
                         f"got {text}")
    return value


def _int(text: str, what: str, spec: str, low: int = 1) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"{what} in {spec!r}: expected an integer, got {text!r}") from None
    if v < low:
        raise ValueError(f"{what} in {spec!r}: expected an integer >= {low}, got {v}")
    return v


ATTACK_OPTIONS = ("restarts", "eot", "targets")
_ATTACK_FORMS = ("none, fgsm:EPS, pgd:EPS:STEPS[:ALPHA], pgdl2:EPS:STEPS[:ALPHA], eot:EPS:STEPS:SAMPLES, "
                 "apgd:EPS:STEPS, apgd-dlr:EPS:STEPS, apgd-t:EPS:STEPS (EPS in pixel levels, e.g. pgd:8:10; options "
                 "restarts=N, eot=N, targets=N after the last field, e.g. apgd:8:100:restarts=2)")


def _attack_options(parts, spec: str) -> Tuple[list, Dict[str, int]]:
    """Split trailing ``key=value`` fields off ``parts``; the values are integers >= 1."""
    opts: Dict[str, int] = {}
    while len(parts) > 1 and "=" in parts[-1]:
        key, value = parts.pop().split("=", 1)
        key = key.strip().lower()
        if key not in ATTACK_OPTIONS:
            raise ValueError(f"attack: option in {spec!r}: expected one of {', '.join(ATTACK_OPTIONS)}, got {key!r}")
        if key in opts:
            raise ValueError(f"attack: option {key!r} given twice in {spec!r}")
        try:
            opts[key] = _int(value, key, spec)
        except ValueError as exc:
            raise ValueError(f"attack: option {exc}") from None
    if any("=" in p for p in parts):
        raise ValueError(f"attack: options in {spec!r}: expected key=value fields after the positional ones, "
                         f"e.g. apgd:8:100:restarts=2")
    return parts, opts


def parse_attack(spec: str) -> AttackSpec:
    """Parse an attack spec (see the module docstring), e.g. ``pgd:8:10`` or ``apgd-dlr:2:100:restarts=2``.

    Example:
        >>> a = parse_attack("pgd:8:10"); a.kind, round(a.eps * 255), a.steps
        ('pgd', 8, 10)
        >>> a = parse_attack("apgd-t:8:100:targets=3:eot=20"); a.kind, a.targets, a.samples
        ('apgd-t', 3, 20)
    """
    parts, opts = _attack_options(spec.strip().split(":"), spec)
    kind = parts[0].lower()
    if opts and kind == "none":
        raise ValueError(f"attack: {spec!r}: 'none' takes no options")
    if "restarts" in opts and kind == "fgsm":
        raise ValueError(f"attack: {spec!r}: fgsm has no random start, so restarts=N would repeat it; use pgd or apgd")
    if "targets" in opts and kind != "apgd-t":
        raise ValueError(f"attack: {spec!r}: targets=N applies to apgd-t only")
    common = {"samples": opts.get("eot"), "restarts": opts.get("restarts")}
    if kind == "none" and len(parts) == 1:
        return AttackSpec(spec, "none")
    if kind == "fgsm" and len(parts) == 2:
        return AttackSpec(spec, "fgsm", _eps(parts[1], spec), **common)
    if kind in ("pgd", "pgdl2") and len(parts) in (3, 4):
        eps = _eps(parts[1], spec) if kind == "pgd" else _number(parts[1], "EPS", spec)
        if not eps >= 0:
            raise ValueError(f"EPS in {spec!r}: expected an L2 budget >= 0, got {parts[1]}")
        alpha = None
        if len(parts) == 4:
            alpha = _positive(parts[3], "ALPHA", spec, levels=kind == "pgd")
        return AttackSpec(spec, kind, eps, _int(parts[2], "STEPS", spec), alpha, **common)
    if kind == "eot" and len(parts) == 4:
        if "eot" in opts:
            raise ValueError(f"attack: {spec!r}: eot:EPS:STEPS:SAMPLES already gives the draws; drop eot=N")
        return AttackSpec(spec, "eot", _eps(parts[1], spec), _int(parts[2], "STEPS", spec),
                          samples=_int(parts[3], "SAMPLES", spec), restarts=opts.get("restarts"))
    if kind in APGD_LOSS and len(parts) == 3:
        return AttackSpec(spec, kind, _eps(parts[1], spec), _int(parts[2], "STEPS", spec),
                          targets=opts.get("targets", 9), **common)
    raise ValueError(f"attack: expected one of {_ATTACK_FORMS}, got {spec!r}")


def parse_defence(spec: str) -> DefenceSpec:
    """Parse a defence spec (see the module docstring).

    Example:
        >>> parse_defence("fd:2").args
        (2.0,)
    """
    text = spec.strip()
    parts = text.split(":")
    kind = parts[0].lower()
    if kind == "none" and len(parts) == 1:
        return DefenceSpec(text, "none")
    if kind in ("jpeg", "jpgnoise") and len(parts) == 2:
        q = _number(parts[1], "Q", text)
        if not 1 <= q <= 100:
            raise ValueError(f"Q in {text!r}: expected a JPEG quality in [1, 100], got {parts[1]}")
        return DefenceSpec(text, kind, (q,))
    if kind == "jpeg-rand" and len(parts) == 3:
        lo, hi = _int(parts[1], "LO", text), _int(parts[2], "HI", text)
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"{text!r}: expected 1 <= LO <= HI <= 100, got LO={lo}, HI={hi}")
        return DefenceSpec(text, kind, (lo, hi))
    if kind in ("fd", "fd-official") and len(parts) == 2:
        k = _number(parts[1], "K", text)
        if not k > 0:
            raise ValueError(f"K in {text!r}: expected a strength > 0 (1, 2, 3 = FD 1x/2x/3x), got {parts[1]}")
        return DefenceSpec(text, kind, (k,))
    if kind == "fd-design" and len(parts) in (2, 3):
        eps = _number(parts[1], "EPS", text)
        if not eps > 0:
            raise ValueError(f"EPS in {text!r}: expected a perturbation size > 0 in pixel levels, got {parts[1]}")
        n = _int(parts[2], "N", text, low=0) if len(parts) == 3 else 15
        return DefenceSpec(text, kind, (eps, n))
    if kind == "tables" and len(parts) >= 2:
        return DefenceSpec(text, kind, (text.split(":", 1)[1],))
    if kind in ("quilting", "tvm") and len(parts) <= 2:
        kwargs = {}
        if len(parts) == 2 and parts[1]:
            for item in parts[1].split(","):
                if "=" not in item:
                    raise ValueError(f"{text!r}: expected key=value options after ':', got {item!r}")
                key, value = item.split("=", 1)
                try:
                    kwargs[key] = int(value)
                except ValueError:
                    try:
                        kwargs[key] = float(value)
                    except ValueError:
                        kwargs[key] = value
        return DefenceSpec(text, kind, (), kwargs)
    raise ValueError(f"defence: expected one of none, jpeg:Q, jpeg-rand:LO:HI, fd:K, fd-official:K, fd-design:EPS[:N], "
                     f"tables:PATH, jpgnoise:Q, quilting[:k=v,...], tvm[:k=v,...], got {spec!r}")


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


def load_error(exc: BaseException) -> str:
    """A one-line account of why ``torch.load(..., weights_only=True)`` failed on a file."""
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    if "weights only load failed" in first.lower():  # torch's text goes on to advise weights_only=False
        first = "not a file of tensors that torch.load(..., weights_only=True) can read"
    return f"{type(exc).__name__}: {first}"


def _load_tables(path: str) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
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


def build_defence(spec, backward: str = "ste", calib: Optional[Callable[[], torch.Tensor]] = None,
                  seed: int = 0, subsampling: str = "4:2:0", data_root: Optional[str] = None) -> nn.Module:
    """Build the ``nn.Module`` of a defence spec, with the layer's backward mode ``backward``.

    Args:
        spec: a string or :class:`DefenceSpec`.
        backward: ``exact`` / ``ste`` / ``soft`` / ``bpda`` for fdgpu layers (ignored by ``quilting``/``tvm``,
            which always have an identity backward, and by ``jpgnoise``).
        calib: a callable returning ``(N, 3, H, W)`` calibration images in [0, 1], needed by ``fd-design``.
        seed: initial seed of randomised defences.
        subsampling: chroma subsampling of the fdgpu layers (``"4:2:0"``, as Pillow's default, or ``"4:4:4"``).
        data_root: data folder for quilting's patch database when the spec gives no ``data=`` (``fdgpu eval``
            passes ``--data-root``); ``None``: ``$FDGPU_DATA``.
    """
    import fdgpu

    s = parse_defence(spec) if isinstance(spec, str) else spec
    if backward not in ADAPTIVE_VIEWS:
        raise ValueError(f"backward: expected one of {ADAPTIVE_VIEWS}, got {backward!r}")
    if s.kind == "none":
        return nn.Identity()
    if s.kind == "jpeg":
        return fdgpu.JPEG(quality=s.args[0], subsampling=subsampling, backward=backward)
    if s.kind == "jpeg-rand":
        return RandomQualityJPEG(s.args[0], s.args[1], backward=backward, seed=seed, subsampling=subsampling)
    if s.kind == "fd":
        return fdgpu.FDJpeg(strength=s.args[0], subsampling=subsampling, backward=backward)
    if s.kind == "fd-official":
        return fdgpu.FDJpeg(strength=s.args[0], backward=backward, variant="official")
    if s.kind == "fd-design":
        if calib is None:
            raise ValueError(f"{s.text!r}: expected calibration images (--calib, e.g. train10k), got none")
        table = fdgpu.tables.fd_design(calib(), s.args[0], n_sensitive=s.args[1])
        return fdgpu.Requantize(table, table, subsampling=subsampling, backward=backward)
    if s.kind == "tables":
        luma, chroma = _load_tables(s.args[0])
        return fdgpu.Requantize(luma, chroma, subsampling=subsampling, backward=backward)
    if s.kind == "jpgnoise":
        return JPGNoise(s.args[0], seed=seed, subsampling=subsampling)
    if s.kind in ("quilting", "tvm"):
        try:
            from fdgpu.defences import make_defence
        except ImportError:
            raise RuntimeError(f"{s.text!r}: expected fdgpu.baselines.make_defence (quilting/TVM baselines), "
                               f"got none in this installation; update fdgpu or evaluate jpeg/fd only") from None
        kwargs = dict(s.kwargs)
        if s.kind == "quilting" and data_root is not None and not {"data", "database", "images"} & set(kwargs):
            kwargs["data"] = data_root
        try:
            return make_defence(s.kind, **kwargs)
        except TypeError as exc:  # an option the baseline does not take
            raise ValueError(f"{s.text!r}: expected options of fdgpu.baselines.make_defence({s.kind!r}, ...), "
                             f"got {sorted(s.kwargs)} ({exc})") from None
    raise ValueError(f"defence: unknown kind {s.kind!r}")

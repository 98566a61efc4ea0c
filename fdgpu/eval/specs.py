"""Text specs for defences and attacks, as used by ``fdgpu eval``: parsing only.

A spec is a kind and its fields, ``:``-separated: ``jpeg:75``, ``fd:1``, ``quilting:source=natural,size=224``;
``pgd:8:10``, ``apgd:8:100:restarts=2``. The kinds, their forms and what their fields mean are registered by the
defences and attacks themselves (:mod:`fdgpu.registry`; the table is in docs/extending.md and in
``fdgpu eval --help``); building a defence and running an attack are :func:`fdgpu.eval.build_defence` and
:func:`fdgpu.eval.run_attack`.

Attacks take ``EPS`` in pixel levels of 0..255 unless written as a fraction such as ``8/255`` (L2 budgets are plain
numbers in [0, 1] units). Every attack but ``none`` also takes trailing ``key=value`` options: ``restarts=N``
(random restarts; ``fgsm`` has none), ``eot=N`` (gradient draws per step against randomised defences; default:
``evaluate``'s ``eot_samples``) and, for ``apgd-t``, ``targets=N``; e.g. ``apgd:8:100:restarts=2`` or
``pgd:8:10:eot=20``.

Views (what the attacker differentiates): ``transfer`` (the undefended model; the defence is applied to the result),
or adaptive through the defended model with one of the layer's backward modes (:data:`fdgpu.BACKWARDS`: ``exact`` /
``ste`` / ``soft`` / ``bpda``): the view of an adaptive attack is the ``backward=`` its defence is built with. A
gradient-free attack (``square:EPS:QUERIES``) sees only the defended model's outputs, the same in every backward
mode: its rows have the view ``query`` (one per defence, whichever adaptive views are asked for).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..choices import BACKWARDS
from ..registry import ATTACK_OPTIONS, ATTACKS, DEFENCES, integer

#: the attacker's views: "transfer", then one adaptive view per backward mode of the layer
VIEWS = ("transfer",) + BACKWARDS
ADAPTIVE_VIEWS = BACKWARDS


@dataclass(frozen=True)
class AttackSpec:
    """A parsed attack: ``kind``; ``eps`` in [0, 1] units; ``levels`` the L-inf budget in pixel levels.

    ``samples``: EOT draws per step (``None``: the evaluation's default, applied to randomised defences only);
    ``restarts``: random restarts (``None``: the evaluation's default); ``targets``: APGD-T's target classes;
    ``p_init``: the Square attack's initial window fraction (``None``: its default).
    """
    text: str
    kind: str
    eps: float = 0.0
    steps: int = 0
    alpha: Optional[float] = None
    samples: Optional[int] = None
    restarts: Optional[int] = None
    targets: int = 9
    p_init: Optional[float] = None

    @property
    def levels(self) -> float:
        entry = ATTACKS.get(self.kind)
        return float("nan") if entry is not None and entry.norm == "l2" else self.eps * 255.0


@dataclass(frozen=True)
class DefenceSpec:
    """A parsed defence: ``kind`` and its arguments."""
    text: str
    kind: str
    args: Tuple = ()
    kwargs: Dict = field(default_factory=dict, hash=False, compare=False)


def _attack_forms() -> str:
    options = ", ".join(f"{o}=N" for o in ATTACK_OPTIONS)
    return (f"{ATTACKS.forms()} (EPS in pixel levels, e.g. pgd:8:10; options {options} after the last field, "
            f"e.g. apgd:8:100:restarts=2)")


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
            opts[key] = integer(value, key, spec)
        except ValueError as exc:
            raise ValueError(f"attack: option {exc}") from None
    if any("=" in p for p in parts):
        raise ValueError(f"attack: options in {spec!r}: expected key=value fields after the positional ones, "
                         f"e.g. apgd:8:100:restarts=2")
    return parts, opts


def _arity_ok(nargs, n: int) -> bool:
    low, high = nargs
    return low <= n and (high is None or n <= high)


def parse_attack(spec: str) -> AttackSpec:
    """Parse an attack spec (see the module docstring), e.g. ``pgd:8:10`` or ``apgd-dlr:2:100:restarts=2``.

    Examples:
        >>> a = parse_attack("pgd:8:10"); a.kind, round(a.eps * 255), a.steps
        ('pgd', 8, 10)
        >>> a = parse_attack("apgd-t:8:100:targets=3:eot=20"); a.kind, a.targets, a.samples
        ('apgd-t', 3, 20)
    """
    parts, opts = _attack_options(spec.strip().split(":"), spec)
    kind = parts[0].lower()
    entry = ATTACKS.get(kind)
    if entry is not None:
        for key in ATTACK_OPTIONS:
            if key not in opts or key in entry.options:
                continue
            if not entry.options:
                raise ValueError(f"attack: {spec!r}: {kind!r} takes no options")
            if key in entry.refuse:
                raise ValueError(f"attack: {spec!r}: {entry.refuse[key]}")
            takers = [k for k, a in ATTACKS.items() if key in a.options]
            raise ValueError(f"attack: {spec!r}: {key}=N applies to {', '.join(takers)} only")
    if entry is None or not _arity_ok(entry.nargs, len(parts) - 1):
        raise ValueError(f"attack: expected one of {_attack_forms()}, got {spec!r}")
    fields: Dict[str, Any] = {"samples": opts.get("eot"), "restarts": opts.get("restarts"),
                              "targets": opts.get("targets", 9)}
    fields.update(entry.parse(parts[1:], spec))
    return AttackSpec(spec, kind, **fields)


def parse_defence(spec: str) -> DefenceSpec:
    """Parse a defence spec (see the module docstring).

    Examples:
        >>> parse_defence("fd:2").args
        (2.0,)
    """
    text = spec.strip()
    parts = text.split(":")
    kind = parts[0].lower()
    entry = DEFENCES.get(kind)
    if entry is None or not _arity_ok(entry.nargs, len(parts) - 1):
        raise ValueError(f"defence: expected one of {DEFENCES.forms()}, got {spec!r}")
    args, kwargs = entry.parse(parts[1:], text)
    return DefenceSpec(text, kind, tuple(args), dict(kwargs))


_MOVED = {"RandomQualityJPEG": "fdgpu.defences.jpeg", "JPGNoise": "fdgpu.defences.jpeg",
          "load_error": "fdgpu.files", "build_defence": "fdgpu.eval.core"}


def __getattr__(name: str):
    # Names that lived here before the registries: still importable from their new homes.
    if name in _MOVED:
        import importlib
        return getattr(importlib.import_module(_MOVED[name]), name)
    if name == "DEFENCE_KINDS":
        return tuple(DEFENCES)
    if name == "ATTACK_KINDS":
        return tuple(ATTACKS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

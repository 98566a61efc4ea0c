"""The evaluation loop behind ``fdgpu eval``: defences x attacks x attacker views on a labelled image set.

Determinism: images are split into fixed batches; batch ``b`` always uses the seed ``(seed, b)`` for attack random
starts and randomised defences, whichever process runs it. Under ``torch.distributed`` batch ``b`` goes to rank
``b % world_size`` and per-batch counts are summed with ``all_reduce`` into a ``(batches,)`` vector that is then
summed in batch order, so a sharded run gives bit-identical numbers to a single process.

Adaptive attacks on a randomised defence (one with a ``reseed`` method, or whose clean logits change between two
calls) average their gradients over ``eot_samples`` draws (EOT, default 8) and return each image's highest-loss
iterate rather than its first fooling one (``"max-loss"``: an iterate that fooled one draw often fails under the
next); every row says how many draws and restarts it used, which seeds and which iterate rule (``selection``). Rows
carry per-image correctness (``clean_bits``/``adv_bits``), from which :func:`worst_case` computes the per-image
worst case over attacks and views, the headline number of a defence, and which attack and view fooled which images
(``attribution``). A gradient-free attack (``square``) sees only the defended model's outputs, which are the same in
every backward mode: it runs once per defence in the view ``query`` when any adaptive view is asked for (and in
``transfer`` when that is). The returned list also carries AutoAttack-style sanity checks (``.sanity``), among them
the budget check: an attack whose last iterations (the final 20 %, or the last restart) still fooled new images is
budget-limited.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..attacks.gradient import recording, selecting
from ..registry import ATTACKS, DEFENCES, BuildContext
from .specs import ADAPTIVE_VIEWS, VIEWS, AttackSpec, DefenceSpec, parse_attack, parse_defence

Classifier = Union[nn.Module, Callable[[str], nn.Module]]
METRICS = ("clean_correct", "adv_correct", "clean_top_prob", "adv_top_prob", "adv_true_prob")
#: the view of a gradient-free attack run on the defended model (it cannot tell the backward modes apart)
QUERY_VIEW = "query"


@dataclass
class _Config:
    defence: DefenceSpec
    attack: AttackSpec
    view: str


def _batch_seed(seed: int, batch: int, salt: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(batch) * 7_919 + salt) % (2 ** 63)


def _reseed_random(module: nn.Module, seed: int) -> None:
    # Randomised defences (fdgpu.defences) restart their stream per batch through ``reseed(seed)``,
    # so that a sharded run draws exactly what a single process draws.
    for m in module.modules():
        reseed = getattr(m, "reseed", None)
        if callable(reseed):
            reseed(seed)


def _is_randomised(module: nn.Module) -> bool:
    return any(callable(getattr(m, "reseed", None)) for m in module.modules())


def _registered(registry, kind: str):
    try:
        return registry[kind]
    except KeyError:
        raise ValueError(f"{registry.what}: unknown kind {kind!r}; expected one of {', '.join(registry)}") from None


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
    s = parse_defence(spec) if isinstance(spec, str) else spec
    if backward not in ADAPTIVE_VIEWS:
        raise ValueError(f"backward: expected one of {ADAPTIVE_VIEWS}, got {backward!r}")
    ctx = BuildContext(backward=backward, seed=seed, subsampling=subsampling, calib=calib, data_root=data_root)
    return _registered(DEFENCES, s.kind).build(s, ctx)


def run_attack(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator, *, eot_samples: Optional[int] = None,
               restarts: Optional[int] = None) -> torch.Tensor:
    """Run one parsed attack on a batch: ``(B, C, H, W)`` in [0, 1] -> adversarial images, same shape.

    ``eot_samples`` / ``restarts`` override the spec's (``None``: the spec's, or 1 when it gives none).
    """
    samples = eot_samples if eot_samples is not None else (spec.samples or 1)
    runs = restarts if restarts is not None else (spec.restarts or 1)
    return _registered(ATTACKS, spec.kind).run(spec, model, x, y, generator, samples, runs)


class EvalResults(list):
    """The rows of :func:`evaluate` (a plain list of dicts), plus ``sanity``: AutoAttack-style checks, one dict per
    finding with ``check``, ``defence``, ``view``, ``flagged`` and a sentence ``detail``."""

    def __init__(self, rows=(), sanity=()):
        super().__init__(rows)
        self.sanity = list(sanity)

    def worst_case(self) -> List[Dict]:
        return worst_case(self)


def _bits(v: torch.Tensor) -> str:
    return "".join("1" if int(b) else "0" for b in v.tolist())


def _budget(row: Dict):
    entry = ATTACKS.get(row["attack_kind"])
    l2 = entry.norm == "l2" if entry is not None else row.get("eps_levels") is None
    if l2:
        return ("l2", round(float(row["eps"]), 6))
    return ("linf", row["eps_levels"])


def worst_case(rows: Sequence[Dict]) -> List[Dict]:
    """Per-image worst case of each defence at each budget, over every attack and view of ``rows``.

    An image counts as robust only if it is classified correctly clean and under every (attack, view) row at that
    budget (as AutoAttack reports). Rows need ``clean_bits``/``adv_bits`` (per-image correctness, as
    :func:`evaluate` gives). Returns one dict per (defence, budget) with ``n``, ``clean_acc``, ``worst_acc`` (the
    headline), ``per_view`` (worst over attacks, per view), ``per_attack`` (worst over views, per attack),
    ``configs`` (the (attack, view) pairs that entered) and ``attribution``: per (attack, view), in the order of
    ``rows``, the clean-correct images it ``fooled``, those no earlier pair had fooled (``first``; they sum to the
    images the worst case fooled) and those no other pair fooled (``only``: without it the headline would be higher
    by that many images).

    Examples:
        >>> r = dict(defence="d", attack_kind="pgd", eps=2/255, eps_levels=2.0, clean_bits="11", n=2)
        >>> rows = [dict(r, attack="a", view="v", adv_bits="10"), dict(r, attack="b", view="v", adv_bits="01")]
        >>> worst_case(rows)[0]["worst_acc"]
        0.0
    """
    groups: Dict = {}
    for r in rows:
        if r.get("adv_bits") is None or r["attack_kind"] == "none":
            continue
        groups.setdefault((r["defence"], _budget(r)), []).append(r)
    out = []
    for (defence, (norm, eps)), members in groups.items():
        def mask(text):
            return torch.tensor([c == "1" for c in text], dtype=torch.bool)
        clean = mask(members[0]["clean_bits"])
        robust = clean.clone()
        per_view: Dict[str, torch.Tensor] = {}
        per_attack: Dict[str, torch.Tensor] = {}
        for r in members:
            adv = mask(r["adv_bits"])
            robust &= adv
            per_view[r["view"]] = per_view.get(r["view"], clean) & adv
            per_attack[r["attack"]] = per_attack.get(r["attack"], clean) & adv
        n = clean.numel()
        fooled = [clean & ~mask(r["adv_bits"]) for r in members]
        times = torch.stack(fooled).sum(0) if fooled else torch.zeros(n)
        seen = torch.zeros(n, dtype=torch.bool)
        attribution = []
        for r, f in zip(members, fooled):
            attribution.append({"attack": r["attack"], "view": r["view"], "fooled": int(f.sum()),
                                "first": int((f & ~seen).sum()), "only": int((f & (times == 1)).sum())})
            seen |= f
        out.append({"defence": defence, "norm": norm, "eps_levels": eps if norm == "linf" else None,
                    "eps": members[0]["eps"], "n": n, "clean_acc": clean.double().mean().item(),
                    "worst_acc": robust.double().mean().item(),
                    "per_view": {v: m.double().mean().item() for v, m in per_view.items()},
                    "per_attack": {a: m.double().mean().item() for a, m in per_attack.items()},
                    "configs": [(r["attack"], r["view"]) for r in members], "attribution": attribution})
    return out


def _budget_findings(rows: Sequence[Dict]) -> List[Dict]:
    """The budget check, per row (white-box or adaptive): (1) images its attack first fooled in its final 20 % of
    iterations or its last restart (``late_bits``), saying how many of them no other attack or view of the same
    defence and budget fooled (``deciding``): flagged (a warning) when those decide the worst case, else a note;
    (2) ``rising-loss``: a warning when images robust in the worst case still had a rising loss in the final 20 % of
    its iterations (``rising_bits``): the attack had not converged on the images that make the headline."""
    found = []
    for r in rows:
        if r["view"] == "transfer" or r.get("adv_bits") is None:
            continue
        others = [o for o in rows if o is not r and o["defence"] == r["defence"] and o.get("adv_bits") is not None
                  and o["attack_kind"] != "none" and _budget(o) == _budget(r)]
        entry = ATTACKS.get(r["attack_kind"])
        what = "queries" if entry is not None and entry.gradient_free else "iterations"
        more = f"more than {r['steps']} {what}" if r.get("steps") else f"more {what}"
        rising = r.get("rising_bits") or ""
        # images robust in the worst case (every row failed on them) on which this attack had not converged
        unfinished = sum(1 for i, c in enumerate(rising) if c == "1" and all(o["adv_bits"][i] == "1" for o in others))
        if unfinished:
            found.append({"check": "rising-loss", "defence": r["defence"], "view": r["view"], "flagged": True,
                          "attack": r["attack"], "deciding": unfinished,
                          "detail": f"{r['attack']}: {unfinished} of the images robust in the worst case still had "
                                    f"a rising loss in the final 20 % of its {what}: the worst case may be "
                                    f"budget-limited; rerun with {more} or with restarts=N"})
        late = r.get("late_bits")
        if not late or "1" not in late:
            continue
        n_late = late.count("1")
        deciding = sum(1 for i, c in enumerate(late) if c == "1" and all(o["adv_bits"][i] == "1" for o in others))
        # a warning when the worst case depends on it (images no other row fooled), else a note about the row alone
        if deciding:
            verdict = (f"{deciding} of them fooled by no other attack or view: its number and the defence's worst "
                       f"case are budget-limited")
        else:
            verdict = ("every one of them also fooled by another attack or view: its own number is budget-limited, "
                       "the worst case is not")
        found.append({"check": "budget", "defence": r["defence"], "view": r["view"], "flagged": deciding > 0,
                      "attack": r["attack"], "late": n_late, "deciding": deciding,
                      "detail": f"{r['attack']} first fooled {n_late} image(s) in the final 20 % of its {what} or in "
                                f"its last restart, {verdict}; rerun with {more} or with restarts=N"})
    return found


def _sanity(defended, dspecs, views, xb, yb, seed, tol=1e-4):
    """AutoAttack-style checks on one batch: does a defence's output change between two calls, and do the adaptive
    views give all-zero input gradients?"""
    found = []
    for d in dspecs:
        if d.kind == "none":
            continue
        model = defended[d.text, "ste"]
        with torch.no_grad():
            _reseed_random(model, _batch_seed(seed, 0, 4))
            a, b = model(xb), model(xb)
        delta = (a - b).abs().max().item()
        changes = delta > tol * max(1.0, a.abs().max().item())
        declared = _is_randomised(model)
        if changes or declared:
            detail = (f"clean logits {'change' if changes else 'do not change'} between two calls "
                      f"(max |diff| = {delta:.3g}); {'declares' if declared else 'has no'} reseed(seed)")
            if changes and not declared:
                detail += ": randomised but not reproducible by seed; treated as randomised (EOT applied)"
            found.append({"check": "randomness", "defence": d.text, "view": "-", "flagged": changes and not declared,
                          "randomised": True, "detail": detail})
        for v in views:
            if v == "transfer":
                continue
            m = defended[d.text, v]
            _reseed_random(m, _batch_seed(seed, 0, 4))
            xr = xb.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                loss = nn.functional.cross_entropy(m(xr), yb, reduction="sum")
                g, = torch.autograd.grad(loss, xr, allow_unused=True)
            zero = xb.shape[0] if g is None else int((g.flatten(1).abs().sum(1) == 0).sum())
            if zero:
                found.append({"check": "zero-gradient", "defence": d.text, "view": v, "flagged": True,
                              "detail": f"{zero}/{xb.shape[0]} images of the first batch have an all-zero input "
                                        f"gradient: gradient masking; adaptive numbers from this view are not a "
                                        f"robustness estimate"})
    return found


def _recorded(seen: list, batch: int):
    """(late ``(B,)`` bool, rising ``(B,)`` bool, queries ``(B,)`` int64) from the
    :class:`~fdgpu.attacks.BestIterate` records of one attack run (an attack that keeps several records for the
    batch: their union and sum)."""
    late = torch.zeros(batch, dtype=torch.bool)
    rising = torch.zeros(batch, dtype=torch.bool)
    used = torch.zeros(batch, dtype=torch.int64)
    for rec in seen:
        if rec.fooled.shape[0] == batch:
            late |= rec.late().cpu()
            rising |= rec.rising().cpu()
            if rec.queries is not None:
                used += rec.queries.cpu()
    return late, rising, used


def _stats(logits: torch.Tensor, y: torch.Tensor):
    p = torch.softmax(logits.double(), dim=-1)
    return ((logits.argmax(-1) == y).double().sum(), p.max(-1).values.sum(), p.gather(1, y[:, None]).sum())


def _dist():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def evaluate(classifier: Classifier, x: torch.Tensor, y: torch.Tensor, defences: Sequence = ("none",),
             attacks: Sequence = ("none",), views: Sequence[str] = ("transfer",), *, batch_size: int = 100,
             seed: int = 0, device: Optional[Union[str, torch.device]] = None,
             calib: Optional[Callable[[], torch.Tensor]] = None, subsampling: str = "4:2:0",
             progress: bool = False, data_root: Optional[str] = None, eot_samples: int = 8,
             restarts: int = 1, on_step: Optional[Callable[[int, int], None]] = None) -> EvalResults:
    """Evaluate every defence against every attack seen from every view.

    Args:
        classifier: ``(B, 3, H, W)`` in [0, 1] -> ``(B, K)`` logits, undefended (e.g. ``Sequential(Normalize, net)``);
            or a callable ``view -> nn.Module`` for models whose own parts depend on the view (vaccinated
            ensembles; ``"transfer"`` must give the undefended model). Put it in eval mode.
        x: ``(N, 3, H, W)`` float in [0, 1]; y: ``(N,)`` int64.
        defences: specs such as ``"none"``, ``"jpeg:75"``, ``"fd:1"`` (see :mod:`fdgpu.eval.specs`).
        attacks: specs such as ``"fgsm:8"``, ``"pgd:8:10"`` (EPS in pixel levels).
        views: ``"transfer"`` and/or the adaptive backward modes ``"exact"``, ``"ste"``, ``"soft"``, ``"bpda"``.
        batch_size: images per batch (also the unit of sharding and seeding).
        seed: the run's seed; the same seed gives the same numbers.
        device: where to run; default CUDA if available, else CPU (the local rank's GPU under torchrun).
        calib: callable giving calibration images for ``fd-design`` defences.
        subsampling: chroma subsampling of the JPEG/FD defences (``"4:2:0"`` or ``"4:4:4"``).
        progress: show a tqdm bar (rank 0 only).
        data_root: data folder (``cifar10/``, ``natural/``) for defences that need clean images (quilting's patch
            database) when their spec names none; default ``$FDGPU_DATA``.
        eot_samples: gradient draws per step of adaptive attacks on randomised defences (EOT; an attack spec's
            ``eot=N`` overrides it); deterministic defences and the transfer view use 1.
        restarts: random restarts of the attacks that take them (pgd, apgd, square; an attack spec's
            ``restarts=N`` overrides it).
        on_step: called with ``(done, total)`` after each (batch, configuration) of this rank (``fdgpu eval`` says
            how far an interrupted run got).

    Returns:
        an :class:`EvalResults` list: one dict per (defence, attack, view) with ``n``, ``clean_acc``, ``adv_acc``
        (top-1, in [0, 1]), ``clean_top_prob``, ``adv_top_prob`` (mean probability of the predicted label),
        ``adv_true_prob``, the spec fields, ``eot_samples``, ``restarts``, ``randomised`` (the defence), ``seed``
        and ``attack_seeds`` (the seed of each batch's attack generator; restart r draws the r-th start from it),
        and ``clean_bits``/``adv_bits`` (per-image correctness, "1" = correct, for :func:`worst_case`). White-box
        and adaptive rows also give ``late_fooled``/``late_bits`` (images first fooled in the attack's final 20 % of
        iterations or its last restart) and ``rising``/``rising_bits`` (images it left unfooled with a loss still
        rising there), and rows of a gradient-free attack ``queries_mean``/``queries_median`` (per image it fooled).
        The ``none`` attack, and the ``none`` defence of an ``nn.Module`` classifier, get one row each (view
        ``"-"``); a gradient-free attack gets one row per defence in the view ``"query"`` (and one in
        ``"transfer"`` when asked). ``.sanity`` holds the sanity checks run on the first batch (see :func:`_sanity`)
        and the budget check over all images.
    """
    if x.dim() != 4 or not x.is_floating_point() or y.shape != x.shape[:1]:
        raise ValueError(f"expected x (N, C, H, W) float in [0, 1] and y (N,), got {tuple(x.shape)} {x.dtype} and "
                         f"{tuple(y.shape)}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    for v in views:
        if v not in VIEWS:
            raise ValueError(f"view: expected one of {VIEWS}, got {v!r}")
    for name, value in (("eot_samples", eot_samples), ("restarts", restarts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    dist, rank, world = _dist()
    if device is None:
        if torch.cuda.is_available():
            index = rank % torch.cuda.device_count() if world > 1 else torch.cuda.current_device()
            device = torch.device("cuda", index)
        else:
            device = torch.device("cpu")
    device = torch.device(device)
    dspecs = [parse_defence(d) if isinstance(d, str) else d for d in defences]
    aspecs = [parse_attack(a) if isinstance(a, str) else a for a in attacks]

    def model_for(view: str) -> nn.Module:
        return (classifier(view) if not isinstance(classifier, nn.Module) else classifier).to(device).eval()

    # "ste" is always built: defended models are evaluated with it (the forward output is the same in every backward
    # mode), and a view-dependent classifier (an ensemble whose members carry their own JPEG) needs its defended form.
    base = {v: model_for(v) for v in sorted({"transfer", "ste"} | set(views))}
    cache_calib = {}

    def get_calib():
        if "x" not in cache_calib:
            cache_calib["x"] = calib()
        return cache_calib["x"]

    # One defended model per (defence, adaptive view); the transfer view evaluates with the "ste" build (the forward
    # output is identical in every backward mode).
    defended = {}
    for d in dspecs:
        for v in sorted({"ste"} | set(views) - {"transfer"}):
            clf = base[v]
            layer = build_defence(d, v, calib=get_calib if calib is not None else None, seed=seed,
                                  subsampling=subsampling, data_root=data_root)
            defended[d.text, v] = nn.Sequential(layer, clf).to(device).eval()

    configs: List[_Config] = []
    for d in dspecs:
        for a in aspecs:
            # An undefended nn.Module looks the same from every view; a view-dependent classifier does not.
            if a.kind == "none" or (d.kind == "none" and isinstance(classifier, nn.Module)):
                configs.append(_Config(d, a, "-"))
            elif ATTACKS[a.kind].gradient_free:
                # outputs only: one run on the defended model stands for every adaptive view
                configs.extend(_Config(d, a, v) for v in ["transfer"] * ("transfer" in views)
                               + [QUERY_VIEW] * any(v != "transfer" for v in views))
            else:
                configs.extend(_Config(d, a, v) for v in views)
    n_batches = (x.shape[0] + batch_size - 1) // batch_size
    # Sanity checks on batch 0, on every rank (their randomness finding decides EOT, so all ranks must agree).
    sanity = _sanity(defended, dspecs, views, x[:batch_size].to(device), y[:batch_size].to(device), seed)
    randomised = {d.text: any(f.get("randomised", False) for f in sanity if f["defence"] == d.text) for d in dspecs}

    def plan(cfg: _Config):
        """(EOT draws, restarts) of a config."""
        a = cfg.attack
        if a.kind == "none":
            return 1, 1
        adaptive = cfg.view not in ("transfer", "-") or (cfg.view == "-" and not isinstance(classifier, nn.Module))
        samples = a.samples if a.samples is not None else (
            eot_samples if adaptive and randomised[cfg.defence.text] else 1)
        runs = 1 if "restarts" not in ATTACKS[a.kind].options else (a.restarts if a.restarts is not None else restarts)
        return samples, runs

    def selection(cfg: _Config) -> str:
        """The iterate an adaptive attack returns per image (:func:`fdgpu.attacks.selecting`): on a randomised
        defence the highest-loss one (``"max-loss"``), else the first that fooled the defended model.

        An iterate that fooled a randomised defence once (one draw, or the average of one step's EOT draws) is close
        to the decision boundary and is often classified correctly again under the fresh draw that scores it; going
        on to the most adversarial iterate by the EOT-averaged loss is the stronger attack there (docs/results.md §4b:
        PGD-10 with EOT-8 left 26 % of JPEG at a random quality correct when it stopped at the first fooling
        iterate)."""
        adaptive = cfg.view not in ("transfer", "-")
        return "max-loss" if adaptive and randomised[cfg.defence.text] else "first-fooled"

    for cfg in configs:
        samples, _ = plan(cfg)
        adaptive = cfg.view not in ("transfer", "-")
        if adaptive and cfg.attack.kind != "none" and randomised[cfg.defence.text] and samples == 1:
            sanity.append({"check": "no-eot", "defence": cfg.defence.text, "view": cfg.view, "flagged": True,
                           "detail": f"{cfg.attack.text} attacks a randomised defence with one draw per step "
                                     f"(no EOT): its number overstates robustness"})
    # counts[c, m, b]: metric m of config c on batch b (zeros for batches of other ranks).
    counts = torch.zeros(len(configs), len(METRICS), n_batches, dtype=torch.float64)
    # bits[c, k, i] for image i under config c (zeros for other ranks' images), k: 0 clean | 1 adversarial correctness,
    # 2 first fooled late in the attack's budget (and fooled in the end), 3 queries spent (query attacks), 4 not fooled
    # but its loss still rising in the attack's final 20 %
    bits = torch.zeros(len(configs), 5, x.shape[0], dtype=torch.float64)
    mine = list(range(rank, n_batches, world))
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(mine) * len(configs), desc="fdgpu eval", unit="cfg")
    for b in mine:
        xb = x[b * batch_size:(b + 1) * batch_size].to(device)
        yb = y[b * batch_size:(b + 1) * batch_size].to(device)
        transfer_adv = {}
        clean, clean_bits = {}, {}
        for c, cfg in enumerate(configs):
            eval_model = defended[cfg.defence.text, "ste"]
            with torch.no_grad():
                _reseed_random(eval_model, _batch_seed(seed, b, 1))
                if cfg.defence.text not in clean:
                    logits = eval_model(xb)
                    clean[cfg.defence.text] = _stats(logits, yb)
                    clean_bits[cfg.defence.text] = (logits.argmax(-1) == yb).double().cpu()
            gen = torch.Generator().manual_seed(_batch_seed(seed, b, 2))
            samples, runs = plan(cfg)
            rec = None  # (late, rising, queries) of a white-box or adaptive attack
            if cfg.attack.kind == "none":
                xa = xb
            elif cfg.view == "transfer":
                # the highest-loss iterate on the source model, not the first that only just fools it (a weak
                # transfer); computed once per batch for all defences
                if cfg.attack.text not in transfer_adv:
                    with selecting("max-loss"):
                        transfer_adv[cfg.attack.text] = run_attack(cfg.attack, base["transfer"], xb, yb, gen,
                                                                   eot_samples=samples, restarts=runs)
                xa = transfer_adv[cfg.attack.text]
            elif cfg.view == "-":
                # white-box on the undefended model: an image fooled at any iterate counts
                with recording() as seen:
                    xa = run_attack(cfg.attack, base["transfer"], xb, yb, gen, eot_samples=samples, restarts=runs)
                rec = _recorded(seen, xb.shape[0])
            else:
                attacked = defended[cfg.defence.text, "ste" if cfg.view == QUERY_VIEW else cfg.view]
                _reseed_random(attacked, _batch_seed(seed, b, 3))
                with selecting(selection(cfg)), recording() as seen:
                    xa = run_attack(cfg.attack, attacked, xb, yb, gen, eot_samples=samples, restarts=runs)
                rec = _recorded(seen, xb.shape[0])
            with torch.no_grad():
                # the same draw of a randomised defence as for the clean images: the "none" attack row then equals
                # the clean accuracy, and clean vs adversarial differ only by the attack
                _reseed_random(eval_model, _batch_seed(seed, b, 1))
                logits = eval_model(xa)
                adv = _stats(logits, yb)
                adv_bits = (logits.argmax(-1) == yb).double().cpu()
            cl = clean[cfg.defence.text]
            counts[c, :, b] = torch.stack([cl[0], adv[0], cl[1], adv[1], adv[2]]).cpu()
            rows_b = slice(b * batch_size, b * batch_size + xb.shape[0])
            bits[c, 0, rows_b] = clean_bits[cfg.defence.text]
            bits[c, 1, rows_b] = adv_bits
            if rec is not None:
                late, rising, used = rec
                # late and still fooled in the evaluation, of a clean-correct image
                bits[c, 2, rows_b] = (late.cpu() & (adv_bits == 0) & (clean_bits[cfg.defence.text] == 1)).double()
                bits[c, 3, rows_b] = used.double().cpu()
                # still rising and still correct in the evaluation, of a clean-correct image
                bits[c, 4, rows_b] = (rising.cpu() & (adv_bits == 1) & (clean_bits[cfg.defence.text] == 1)).double()
            if bar is not None:
                bar.update(1)
            if on_step is not None:
                on_step(mine.index(b) * len(configs) + c + 1, len(mine) * len(configs))
    if bar is not None:
        bar.close()
    if dist is not None and world > 1:
        buf = counts.to(device) if dist.get_backend() == "nccl" else counts
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        counts = buf.cpu()
        buf = bits.to(device) if dist.get_backend() == "nccl" else bits
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        bits = buf.cpu()
    totals = counts.sum(dim=2)  # summed in batch order: identical for any world size
    n = x.shape[0]
    rows = []
    for c, cfg in enumerate(configs):
        t = totals[c] / n
        extra = {}
        if ATTACKS[cfg.attack.kind].gradient_free and cfg.view != "transfer":
            # queries per image the attack fooled (as AutoAttack reports them), clean-correct images only
            hit = (bits[c, 0] == 1) & (bits[c, 1] == 0)
            q = bits[c, 3][hit]
            extra = {"queries_mean": float(q.mean()) if q.numel() else None,
                     "queries_median": float(q.median()) if q.numel() else None}
        rows.append({
            "defence": cfg.defence.text, "attack": cfg.attack.text, "attack_kind": cfg.attack.kind,
            "eps_levels": round(cfg.attack.eps * 255.0, 6) if ATTACKS[cfg.attack.kind].norm == "linf" else None,
            "eps": cfg.attack.eps, "steps": cfg.attack.steps, "view": cfg.view, "n": n,
            "clean_acc": float(t[0]), "adv_acc": float(t[1]), "clean_top_prob": float(t[2]),
            "adv_top_prob": float(t[3]), "adv_true_prob": float(t[4]),
            "eot_samples": plan(cfg)[0], "restarts": plan(cfg)[1], "randomised": randomised[cfg.defence.text],
            "selection": (None if cfg.attack.kind == "none" else
                          "max-loss" if cfg.view == "transfer" else selection(cfg)),
            "seed": seed, "attack_seeds": ([_batch_seed(seed, b, 2) for b in range(n_batches)]
                                           if ATTACKS[cfg.attack.kind].random_start else []),
            "clean_bits": _bits(bits[c, 0]), "adv_bits": _bits(bits[c, 1]),
            "late_fooled": int(bits[c, 2].sum()), "late_bits": _bits(bits[c, 2]),
            "rising": int(bits[c, 4].sum()), "rising_bits": _bits(bits[c, 4]), **extra,
        })
    return EvalResults(rows, sanity + _budget_findings(rows))

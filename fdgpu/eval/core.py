"""The evaluation loop behind ``fdgpu eval``: defences x attacks x attacker views on a labelled image set.

Determinism: images are split into fixed batches; batch ``b`` always uses the seed ``(seed, b)`` for attack random
starts and randomised defences, whichever process runs it. Under ``torch.distributed`` batch ``b`` goes to rank
``b % world_size`` and per-batch counts are summed with ``all_reduce`` into a ``(batches,)`` vector that is then
summed in batch order, so a sharded run gives bit-identical numbers to a single process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..attacks import fgsm, pgd
from .specs import VIEWS, AttackSpec, DefenceSpec, build_defence, parse_attack, parse_defence

Classifier = Union[nn.Module, Callable[[str], nn.Module]]
METRICS = ("clean_correct", "adv_correct", "clean_top_prob", "adv_top_prob", "adv_true_prob")


@dataclass
class _Config:
    defence: DefenceSpec
    attack: AttackSpec
    view: str


def _batch_seed(seed: int, batch: int, salt: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(batch) * 7_919 + salt) % (2 ** 63)


def _reseed_random(module: nn.Module, seed: int) -> None:
    # Randomised defences (eval's own and fdgpu.baselines) restart their stream per batch through ``reseed(seed)``,
    # so that a sharded run draws exactly what a single process draws.
    for m in module.modules():
        if callable(getattr(m, "reseed", None)):
            m.reseed(seed)


def run_attack(spec: AttackSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    """Run one parsed attack on a batch: ``(B, C, H, W)`` in [0, 1] -> adversarial images, same shape."""
    if spec.kind == "none":
        return x
    if spec.kind == "fgsm":
        return fgsm(model, x, y, spec.eps)
    if spec.kind in ("pgd", "pgdl2", "eot"):
        return pgd(model, x, y, spec.eps, spec.alpha, spec.steps, norm="l2" if spec.kind == "pgdl2" else "linf",
                   generator=generator, eot_samples=spec.samples)
    raise ValueError(f"attack: unknown kind {spec.kind!r}")


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
             progress: bool = False, data_root: Optional[str] = None) -> List[Dict]:
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

    Returns:
        one dict per (defence, attack, view) with ``n``, ``clean_acc``, ``adv_acc`` (top-1, in [0, 1]),
        ``clean_top_prob``, ``adv_top_prob`` (mean probability of the predicted label), ``adv_true_prob`` and the
        spec fields. The ``none`` attack, and the ``none`` defence of an ``nn.Module`` classifier, get one row
        each (view ``"-"``).
    """
    if x.dim() != 4 or not x.is_floating_point() or y.shape != x.shape[:1]:
        raise ValueError(f"expected x (N, C, H, W) float in [0, 1] and y (N,), got {tuple(x.shape)} {x.dtype} and "
                         f"{tuple(y.shape)}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    for v in views:
        if v not in VIEWS:
            raise ValueError(f"view: expected one of {VIEWS}, got {v!r}")
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
            else:
                configs.extend(_Config(d, a, v) for v in views)
    n_batches = (x.shape[0] + batch_size - 1) // batch_size
    # counts[c, m, b]: metric m of config c on batch b (zeros for batches of other ranks).
    counts = torch.zeros(len(configs), len(METRICS), n_batches, dtype=torch.float64)
    mine = list(range(rank, n_batches, world))
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(mine) * len(configs), desc="fdgpu eval", unit="cfg")
    for b in mine:
        xb = x[b * batch_size:(b + 1) * batch_size].to(device)
        yb = y[b * batch_size:(b + 1) * batch_size].to(device)
        transfer_adv = {}
        clean = {}
        for c, cfg in enumerate(configs):
            eval_model = defended[cfg.defence.text, "ste"]
            with torch.no_grad():
                _reseed_random(eval_model, _batch_seed(seed, b, 1))
                if cfg.defence.text not in clean:
                    clean[cfg.defence.text] = _stats(eval_model(xb), yb)
            gen = torch.Generator().manual_seed(_batch_seed(seed, b, 2))
            if cfg.attack.kind == "none":
                xa = xb
            elif cfg.view in ("transfer", "-"):
                if cfg.attack.text not in transfer_adv:
                    transfer_adv[cfg.attack.text] = run_attack(cfg.attack, base["transfer"], xb, yb, gen)
                xa = transfer_adv[cfg.attack.text]
            else:
                attacked = defended[cfg.defence.text, cfg.view]
                _reseed_random(attacked, _batch_seed(seed, b, 3))
                xa = run_attack(cfg.attack, attacked, xb, yb, gen)
            with torch.no_grad():
                # the same draw of a randomised defence as for the clean images: the "none" attack row then equals
                # the clean accuracy, and clean vs adversarial differ only by the attack
                _reseed_random(eval_model, _batch_seed(seed, b, 1))
                adv = _stats(eval_model(xa), yb)
            cl = clean[cfg.defence.text]
            counts[c, :, b] = torch.stack([cl[0], adv[0], cl[1], adv[1], adv[2]]).cpu()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if dist is not None and world > 1:
        buf = counts.to(device) if dist.get_backend() == "nccl" else counts
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        counts = buf.cpu()
    totals = counts.sum(dim=2)  # summed in batch order: identical for any world size
    n = x.shape[0]
    rows = []
    for c, cfg in enumerate(configs):
        t = totals[c] / n
        rows.append({
            "defence": cfg.defence.text, "attack": cfg.attack.text, "attack_kind": cfg.attack.kind,
            "eps_levels": None if cfg.attack.kind in ("none", "pgdl2") else round(cfg.attack.eps * 255.0, 6),
            "eps": cfg.attack.eps, "steps": cfg.attack.steps, "view": cfg.view, "n": n,
            "clean_acc": float(t[0]), "adv_acc": float(t[1]), "clean_top_prob": float(t[2]),
            "adv_top_prob": float(t[3]), "adv_true_prob": float(t[4]),
        })
    return rows

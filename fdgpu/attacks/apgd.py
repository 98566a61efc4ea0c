"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020), with the CE, DLR and targeted-DLR losses, restarts and EOT.

Written from the paper's description (Algorithm 1 and Section 3):

- step size ``eta(0) = 2 eps``; first step ``x(1) = P(x(0) + eta sign(grad))`` (L2: ``grad / ||grad||``);
- momentum ``alpha = 0.75``: ``z = P(x(k) + eta grad-step)``, ``x(k+1) = P(x(k) + alpha (z - x(k)) +
  (1 - alpha) (x(k) - x(k-1)))``;
- checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
  0.06)``; at each checkpoint the step size of an image is halved, and its search restarted from its best point so
  far, when (1) the loss increased in fewer than ``rho = 0.75`` of the steps since the previous checkpoint, or (2)
  the step size was not halved at the previous checkpoint and the best loss has not improved since;
- DLR loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` and its targeted form
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (``z`` sorted in decreasing order ``z_pi1 >= z_pi2 >= ...``).

As in AutoAttack, an image counts as fooled as soon as any iterate is misclassified, and later restarts (and, for
``dlr-targeted``, later target classes) attack only the images still standing.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import integer, levels, register_attack
from .gradient import (
    NORMS,
    BestIterate,
    _check,
    _check_int,
    _flat_norm,
    _fooled,
    _loss_and_grad,
    _project,
)

LOSSES = ("ce", "dlr", "dlr-targeted")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio, per sample: ``(B, K)`` logits, ``(B,)`` labels -> ``(B,)`` (K >= 3).

    Positive exactly when the sample is misclassified; invariant to shifting and (positively) scaling the logits.

    Examples:
        >>> float(dlr_loss(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0])))
        -0.6666666...
    """
    s = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    other = torch.where(logits.argmax(1) == y, s[:, 1], s[:, 0])
    return -(z_y - other) / (s[:, 0] - s[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR, per sample (K >= 4): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; maximising it pushes the
    target ``t``'s logit above the true class ``y``'s."""
    s = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, target[:, None])[:, 0]
    return -(z_y - z_t) / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3]) + 1e-12)


def checkpoints(steps: int) -> List[int]:
    """The iterations ``0 < w_1 < w_2 < ... < steps`` at which APGD may halve its step size (paper, Section 3.2).

    Examples:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if nxt >= 1.0:
            break
        p.append(nxt)
    ws = sorted({math.ceil(q * steps - 1e-9) for q in p[1:]})
    return [w for w in ws if 0 < w < steps]


def _apgd_run(model, x0, y, eps, steps, loss_fn, norm, samples, generator, best, idx, rho, momentum, run=0,
              runs=1):
    """One APGD run (run ``run`` of ``runs``) on the rows ``idx`` of the batch (``x0``/``y`` already indexed); offers
    every iterate to ``best``."""
    B = x0.shape[0]
    view = (-1,) + (1,) * (x0.dim() - 1)
    if norm == "linf":
        t = (torch.rand(x0.shape, generator=generator, dtype=torch.float32) * 2 - 1).to(x0.device, x0.dtype)
        xa = (x0 + eps * t).clamp(0.0, 1.0)
    else:
        t = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
        xa = (x0 + eps * t / _flat_norm(t)).clamp(0.0, 1.0)
    eta = torch.full((B,), 2.0 * eps, dtype=x0.dtype, device=x0.device)

    def step_dir(g):
        return g.sign() if norm == "linf" else g / _flat_norm(g)

    g, loss, logits = _loss_and_grad(model, xa, y, loss_fn, samples)
    best.at(0, steps, run, runs)
    best.update(xa, loss, _fooled(logits, y, False), idx)
    x_max, f_max, g_max = xa.clone(), loss.clone(), g.clone()
    x_prev = xa.clone()
    ck = set(checkpoints(steps))
    last_ck = 0
    increases = torch.zeros(B, dtype=torch.int64, device=x0.device)
    f_max_last_ck = f_max.clone()
    reduced_last = torch.zeros(B, dtype=torch.bool, device=x0.device)
    for k in range(steps):
        z = _project(xa + eta.view(view) * step_dir(g), x0, eps, norm)
        if k == 0:
            x_new = z
        else:
            x_new = _project(xa + momentum * (z - xa) + (1.0 - momentum) * (xa - x_prev), x0, eps, norm)
        x_prev, xa = xa, x_new.detach()
        g_new, loss_new, logits = _loss_and_grad(model, xa, y, loss_fn, samples, grad=k + 1 < steps)
        best.at(k + 1, steps, run, runs)
        best.update(xa, loss_new, _fooled(logits, y, False), idx)
        increases += (loss_new > loss).long()
        improved = loss_new > f_max
        x_max[improved], f_max[improved] = xa[improved], loss_new[improved]
        if g_new is None:
            break
        g_max[improved] = g_new[improved]
        g, loss = g_new, loss_new
        if k + 1 in ck:
            oscillating = increases.double() < rho * (k + 1 - last_ck)
            stalled = ~reduced_last & (f_max <= f_max_last_ck)
            halve = oscillating | stalled
            eta = torch.where(halve, eta / 2, eta)
            xa = torch.where(halve.view(view), x_max, xa)
            x_prev = torch.where(halve.view(view), x_max, x_prev)
            g = torch.where(halve.view(view), g_max, g)
            loss = torch.where(halve, f_max, loss)
            reduced_last, f_max_last_ck = halve, f_max.clone()
            increases.zero_()
            last_ck = k + 1


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 100, *, loss: str = "ce",
         restarts: int = 1, eot_samples: int = 1, generator: Optional[torch.Generator] = None,
         norm: str = "linf", n_targets: int = 9, rho: float = 0.75, momentum: float = 0.75) -> torch.Tensor:
    """Auto-PGD: a step-size-free PGD with momentum (Croce & Hein 2020), untargeted, in [0, 1] pixel space.

    Args:
        model: ``(B, C, H, W)`` in [0, 1] -> ``(B, K)`` logits.
        x: ``(B, C, H, W)`` float in [0, 1]; y: ``(B,)`` true labels (also for ``dlr-targeted``).
        eps: budget in [0, 1] units (L-inf per pixel, L2 over the whole image).
        steps: iterations per run (100 in AutoAttack).
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (K >= 3) or ``"dlr-targeted"`` (APGD-T, K >= 4: one run per target
            class, the ``n_targets`` classes with the highest clean logits other than ``y``).
        restarts: runs per loss/target (>= 1), each from a new random start; later runs attack only the images no
            earlier run fooled.
        eot_samples: forward/backward passes averaged per iterate (EOT; AutoAttack's ``rand`` version uses 20).
        generator: CPU ``torch.Generator`` for the random starts (default: seeded with 0); runs draw in turn.
        norm: ``"linf"`` or ``"l2"``.
        n_targets: target classes for ``dlr-targeted`` (AutoAttack: 9); clipped to K - 1.
        rho, momentum: the paper's 0.75 and 0.75.

    Returns:
        ``(B, C, H, W)`` in [0, 1] within the budget: per image the first iterate that was misclassified, else the
        one with the highest loss.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
        >>> xa = apgd(net, x, y, 8 / 255, steps=5, loss="dlr")
        >>> bool(((xa - x).abs() <= 8 / 255 + 1e-6).all())
        True
    """
    _check(x, y, eps)
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    _check_int(steps, "steps")
    _check_int(restarts, "restarts")
    _check_int(eot_samples, "eot_samples")
    _check_int(n_targets, "n_targets")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    x = x.detach()
    best = BestIterate(x)
    with torch.no_grad():
        _, _, clean_logits = _loss_and_grad(model, x, y, None, eot_samples, grad=False)
    K = clean_logits.shape[1]
    need = 4 if loss == "dlr-targeted" else 3 if loss == "dlr" else 2
    if K < need:
        raise ValueError(f"loss={loss!r}: expected a model with >= {need} classes, got {K}; use loss='ce'")
    # the clean image is a point of the search: already misclassified images are not attacked (AutoAttack)
    best.update(x, F.cross_entropy(clean_logits, y, reduction="none"), _fooled(clean_logits, y, False))
    if loss == "dlr-targeted":
        order = clean_logits.masked_fill(F.one_hot(y, K).bool(), -math.inf).argsort(dim=1, descending=True)
        targets: List[Optional[torch.Tensor]] = [order[:, i] for i in range(min(n_targets, K - 1))]
    else:
        targets = [None]
    runs = len(targets) * restarts
    for i, target in enumerate(targets):
        for r in range(restarts):
            idx = best.pending
            if idx.numel() == 0:
                return best.x
            fn: Optional[Callable]
            if target is None:
                fn = None if loss == "ce" else dlr_loss
            else:
                t = target[idx]

                def fn(logits, yy, t=t):
                    return dlr_targeted_loss(logits, yy, t)
            # scores of different losses/targets are not comparable: the highest-loss point is kept per run only
            best.score[idx] = -math.inf
            _apgd_run(model, x[idx], y[idx], eps, steps, fn, norm, eot_samples, generator, best, idx, rho, momentum,
                      i * restarts + r, runs)
    return best.x


# --- registration: the spec forms of fdgpu eval --------------------------------------------------------------------

def _parse(fields, text):
    return {"eps": levels(fields[0], text), "steps": integer(fields[1], "STEPS", text)}


def _runner(loss: str):
    def run(spec, model, x, y, generator, eot_samples, restarts):
        return apgd(model, x, y, spec.eps, spec.steps, loss=loss, restarts=restarts, eot_samples=eot_samples,
                    generator=generator, n_targets=spec.targets)
    return run


register_attack("apgd", form="apgd:EPS:STEPS",
                summary="APGD with cross-entropy (Croce & Hein 2020; `fdgpu.attacks.apgd`)", parse=_parse,
                run=_runner("ce"), nargs=(2, 2), example="apgd:8:2", style=("-.", "D"))
register_attack("apgd-dlr", form="apgd-dlr:EPS:STEPS", summary="APGD with the DLR loss", parse=_parse,
                run=_runner("dlr"), nargs=(2, 2), example="apgd-dlr:8:2", style=((0, (5, 1, 1, 1)), "v"))
register_attack("apgd-t", form="apgd-t:EPS:STEPS",
                summary="APGD-T: targeted DLR, one run per target class (`targets=N`, default 9)", parse=_parse,
                run=_runner("dlr-targeted"), nargs=(2, 2), example="apgd-t:8:2:targets=2",
                options=("restarts", "eot", "targets"), style=((0, (1, 1)), "P"))

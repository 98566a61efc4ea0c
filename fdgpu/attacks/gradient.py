"""FGSM, PGD (L-inf and L2) and EOT-PGD in [0, 1] pixel space.

All attacks take ``model``: ``(B, C, H, W)`` in [0, 1] -> ``(B, K)`` logits (e.g.
``nn.Sequential(fdgpu.FDJpeg(backward="ste"), Normalize(mean, std), net)``; the layer's ``backward=`` decides what
the attacker sees), ``x`` ``(B, C, H, W)`` float in [0, 1] and ``y`` ``(B,)`` int64 labels, and return adversarial
images of ``x``'s shape and dtype in [0, 1]. They never change the model's mode or parameters' ``.grad`` and never
touch the global RNG: randomness comes from ``generator`` (a CPU ``torch.Generator``; draws are made on the CPU and
moved to ``x.device``, so results do not depend on the device's RNG).

Best iterate: every point an attack visits (the start, each step, the last step) is checked, and per image the
returned point is the first one that fooled the model (untargeted: ``argmax != y``; targeted: ``argmax == y``), or,
for images never fooled, the one with the highest loss (lowest when targeted). So an image counts as fooled if any
iterate fooled it, as AutoAttack counts. With ``eot_samples > 1`` the check uses the logits and the loss averaged
over the draws.

Per-sample losses are summed, so one image's gradient does not depend on the other images in its batch.
"""
from __future__ import annotations

import contextlib
import functools
import contextvars
import math
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import integer, levels, number, register_attack, step_size

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NORMS = ("linf", "l2")


def _check(x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a float (B, C, H, W) tensor in [0, 1], got {got}")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        got_y = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y: expected a ({x.shape[0]},) tensor of class indices, got {got_y}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: expected a finite number >= 0 in [0, 1] pixel units (8/255 for 8 levels), "
                         f"got {eps!r}")


def _check_int(value, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def _loss_and_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Optional[LossFn],
                   samples: int = 1, grad: bool = True) -> Tuple[Optional[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Per-sample loss ``(B,)``, logits ``(B, K)`` and the gradient of the summed loss w.r.t. ``x`` (``None`` when
    ``grad`` is false), each averaged over ``samples`` forward passes (EOT)."""
    g_sum = torch.zeros_like(x) if grad else None
    loss_sum: Optional[torch.Tensor] = None
    logit_sum: Optional[torch.Tensor] = None
    for _ in range(samples):
        xr = x.detach().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            logits = model(xr)
            loss = F.cross_entropy(logits, y, reduction="none") if loss_fn is None else loss_fn(logits, y)
            if grad:
                g, = torch.autograd.grad(loss.sum(), xr, allow_unused=True)
                if g is not None and g_sum is not None:
                    g_sum += g
        loss, logits = loss.detach(), logits.detach()
        loss_sum = loss if loss_sum is None else loss_sum + loss
        logit_sum = logits if logit_sum is None else logit_sum + logits
    assert loss_sum is not None and logit_sum is not None  # samples >= 1 (checked by the callers)
    return (None if g_sum is None else g_sum / samples), loss_sum / samples, logit_sum / samples


def _fooled(logits: torch.Tensor, y: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(-1)
    return pred == y if targeted else pred != y


SELECTIONS = ("first-fooled", "max-loss")
_SELECTION = contextvars.ContextVar("fdgpu_attack_selection", default="first-fooled")


@contextlib.contextmanager
def selecting(rule: str) -> Iterator[None]:
    """Within the block, attacks return per image the iterate chosen by ``rule``:

    - ``"first-fooled"`` (default): the first iterate that fooled the attacked model, else the highest-loss one (as
      AutoAttack counts a white-box or adaptive attack: fooled at any iterate means fooled).
    - ``"max-loss"``: the highest-loss iterate, fooled or not. For **transfer** attacks: an iterate that only just
      fools the source model is the weakest perturbation to carry over to another model or a defended one, so
      ``fdgpu eval`` crafts its transfer view under this rule (with ``"first-fooled"`` a transfer PGD was weaker than
      transfer FGSM: docs/results.md §9b).
    """
    if rule not in SELECTIONS:
        raise ValueError(f"selecting: expected one of {SELECTIONS}, got {rule!r}")
    token = _SELECTION.set(rule)
    try:
        yield
    finally:
        _SELECTION.reset(token)


_RECORDING: contextvars.ContextVar = contextvars.ContextVar("fdgpu_attack_recording", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list]:
    """Within the block, every :class:`BestIterate` an attack creates is appended to the yielded list, so a caller
    (``fdgpu eval``) can read when each image was first fooled (:meth:`BestIterate.late`) and, for query attacks,
    how many queries each image took (``BestIterate.queries``)."""
    found: list = []
    token = _RECORDING.set(found)
    try:
        yield found
    finally:
        _RECORDING.reset(token)


class BestIterate:
    """Per-image best point of an attack under the current :func:`selecting` rule: the first iterate that fooled the
    model, else the highest score (``"first-fooled"``, the default), or the highest score (``"max-loss"``).

    ``score`` is the loss for untargeted attacks and minus the loss for targeted ones (higher = more adversarial).
    ``fooled`` records whether any offered iterate fooled the model, under either rule.

    Iterative attacks say where they are with :meth:`at` (run ``r`` of ``runs``, iteration ``k`` of ``steps``, 0 the
    starting point); each image's first fooling iterate is then kept in ``first_run`` / ``first_step`` (-1: never
    fooled), from which :meth:`late` tells which images the budget's last part fooled, and :meth:`rising` which
    unfooled images it had not finished with. ``queries``: per image, the model queries a query attack spent on it
    (``None`` for gradient attacks).
    """

    def __init__(self, x: torch.Tensor):
        self.x = x.detach().clone()
        self.first_fooled = _SELECTION.get() == "first-fooled"
        self.fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.score = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        self.first_run = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        self.first_step = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        self.run, self.runs, self.step, self.steps = 0, 1, 0, 0
        self.queries: Optional[torch.Tensor] = None
        self._tail_score: Optional[torch.Tensor] = None
        found = _RECORDING.get()
        if found is not None:
            found.append(self)

    def at(self, step: int, steps: int, run: int = 0, runs: int = 1) -> None:
        """The iterates offered next are iteration ``step`` of ``steps`` (0: the starting point) of run ``run`` of
        ``runs`` (restarts, or APGD-T's targets times restarts)."""
        self.step, self.steps, self.run, self.runs = step, steps, run, runs
        if steps >= 2 and step == steps - math.ceil(0.2 * steps) + 1:
            self._tail_score = self.score.clone()  # the best scores as the run's final 20 % begins

    def late(self) -> torch.Tensor:
        """``(B,)`` bool: images first fooled in the final 20 % of a run's iterations (iteration ``k > steps -
        ceil(0.2 steps)``), or in the last of several runs: the budget's last part still fooled them, so a larger
        budget might fool more. All false for attacks that never called :meth:`at` with ``steps >= 2``."""
        if self.steps < 2:
            return torch.zeros_like(self.fooled)
        tail = self.first_step > self.steps - math.ceil(0.2 * self.steps)
        last_run = (self.first_run == self.runs - 1) & (self.runs > 1)
        return self.fooled & (tail | last_run)

    def rising(self) -> torch.Tensor:
        """``(B,)`` bool: images never fooled whose best score (loss) still rose during the final 20 % of the last
        run's iterations: the attack had not converged on them, so a larger budget might fool them. All false for
        attacks that never called :meth:`at` with ``steps >= 2``."""
        if self._tail_score is None:
            return torch.zeros_like(self.fooled)
        before = self._tail_score
        return ~self.fooled & torch.isfinite(before) & (self.score > before)

    def update(self, xa: torch.Tensor, score: torch.Tensor, fooled: torch.Tensor,
               index: Optional[torch.Tensor] = None) -> None:
        """Offer ``xa`` (rows ``index`` of the batch, all rows when ``None``) with its score and fooled flags."""
        idx = torch.arange(self.x.shape[0], device=self.x.device) if index is None else index
        if self.first_fooled:
            newly = fooled & ~self.fooled[idx]
            better = ~fooled & ~self.fooled[idx] & (score.double() > self.score[idx])
            take = newly | better
        else:
            newly = fooled & ~self.fooled[idx]
            better = take = score.double() > self.score[idx]
        self.x[idx[take]] = xa[take].detach().to(self.x.dtype)
        self.score[idx[better]] = score.double()[better]
        self.fooled[idx[newly]] = True
        self.first_run[idx[newly]] = self.run
        self.first_step[idx[newly]] = self.step

    @property
    def pending(self) -> torch.Tensor:
        """Rows a further restart should attack: the unfooled ones (``"first-fooled"``), or all (``"max-loss"``)."""
        if self.first_fooled:
            return (~self.fooled).nonzero().flatten()
        return torch.arange(self.x.shape[0], device=self.x.device)


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def _random_start(x0: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    if norm == "linf":
        noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32) * 2 - 1
        delta = noise.to(device=x0.device, dtype=x0.dtype) * eps
    else:
        direction = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        radius = torch.rand(x0.shape[0], generator=generator, dtype=torch.float32)
        radius = radius.pow(1.0 / x0[0].numel()).view(-1, *([1] * (x0.dim() - 1)))
        delta = (direction / _flat_norm(direction) * radius * eps).to(device=x0.device, dtype=x0.dtype)
    return (x0 + delta).clamp(0.0, 1.0)


def _project(xa: torch.Tensor, x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        xa = torch.min(torch.max(xa, x0 - eps), x0 + eps)
    else:
        delta = xa - x0
        xa = x0 + delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    return xa.clamp(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False,
         loss_fn: Optional[LossFn] = None, eot_samples: int = 1) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): ``clamp(x + eps * sign(grad), 0, 1)``.

    The best of the two points it visits is returned per image (``x`` itself when ``x`` already fools the model and
    the step does not). It has no restarts: with a deterministic model it draws nothing at random.

    Args:
        eps: L-inf budget in [0, 1] units (``8 / 255`` = 8 pixel levels).
        targeted: ``y`` are target classes; step down the loss instead of up.
        loss_fn: ``(logits, y) -> (B,)`` per-sample loss; cross-entropy by default.
        eot_samples: forward/backward passes averaged for the gradient (EOT, for randomised defences).

    Returns:
        ``(B, C, H, W)`` in [0, 1], ``|x_adv - x| <= eps``.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> bool(((fgsm(net, x, y, 0.1) - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    _check(x, y, eps)
    _check_int(eot_samples, "eot_samples")
    sign = -1.0 if targeted else 1.0
    g, loss, logits = _loss_and_grad(model, x, y, loss_fn, eot_samples)
    best = BestIterate(x)
    best.update(x, sign * loss, _fooled(logits, y, targeted))
    assert g is not None  # grad=True
    xa = (x.detach() + sign * eps * g.sign()).clamp(0.0, 1.0)
    _, loss, logits = _loss_and_grad(model, xa, y, loss_fn, eot_samples, grad=False)
    best.update(xa, sign * loss, _fooled(logits, y, targeted))
    return best.x


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: Optional[float] = None,
        steps: int = 10, *, norm: str = "linf", random_start: bool = True, targeted: bool = False,
        loss_fn: Optional[LossFn] = None, generator: Optional[torch.Generator] = None,
        eot_samples: int = 1, restarts: int = 1) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al. 2018) under an L-inf or L2 budget, optionally with EOT and restarts.

    Args:
        eps: budget in [0, 1] units (L-inf: per pixel; L2: Euclidean norm of the whole ``(C, H, W)`` perturbation).
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).
        steps: number of iterations (>= 1).
        norm: ``"linf"`` (signed-gradient steps, clip to the box) or ``"l2"`` (normalised steps, project to the ball).
        random_start: start from a uniform point of the L-inf box / the L2 ball (drawn from ``generator``).
        targeted: ``y`` are targets: descend the loss.
        loss_fn: ``(logits, y) -> (B,)``; cross-entropy by default.
        generator: CPU ``torch.Generator`` for the random starts; default a fresh one seeded with 0. Restart ``r``
            draws its start after restart ``r - 1``'s, from the same generator.
        eot_samples: forward/backward passes averaged per step (expectation over transformation, for randomised
            defences); 1 for deterministic models.
        restarts: independent runs (>= 1); each later run attacks only the images no earlier run fooled.

    Returns:
        ``(B, C, H, W)`` adversarial images in [0, 1] within the budget of ``x``: per image the best iterate over
        all runs (see the module docstring).
    """
    _check(x, y, eps)
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    _check_int(steps, "steps")
    _check_int(eot_samples, "eot_samples")
    _check_int(restarts, "restarts")
    alpha = 2.5 * eps / steps if alpha is None else float(alpha)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    sign = -1.0 if targeted else 1.0
    best = BestIterate(x)
    for run in range(restarts):
        idx = best.pending
        if idx.numel() == 0:
            break
        x0, yr = x.detach()[idx], y[idx]
        xa = _random_start(x0, eps, norm, generator) if random_start and eps > 0 else x0.clone()
        for step in range(steps + 1):
            best.at(step, steps, run, restarts)
            g, loss, logits = _loss_and_grad(model, xa, yr, loss_fn, eot_samples, grad=step < steps)
            best.update(xa, sign * loss, _fooled(logits, yr, targeted), idx)
            if step == steps:
                break
            assert g is not None  # grad=True before the last step
            if norm == "linf":
                xa = xa + sign * alpha * g.sign()
            else:
                xa = xa + sign * alpha * g / _flat_norm(g)
            xa = _project(xa, x0, eps, norm).detach()
    return best.x


def eot(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: Optional[float] = None,
        steps: int = 10, samples: int = 8, **kwargs) -> torch.Tensor:
    """EOT-PGD (Athalye et al. 2018): PGD whose every step averages the gradient over ``samples`` draws of a
    randomised model (e.g. a JPEG defence with a random quality per call). Other arguments as in :func:`pgd`.

    Examples:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> eot(net, x, y, 0.1, steps=2, samples=2).shape
        torch.Size([4, 3, 2, 2])
    """
    return pgd(model, x, y, eps, alpha, steps, eot_samples=samples, **kwargs)


# --- registration: the spec forms of fdgpu eval --------------------------------------------------------------------

def _parse_fgsm(fields, text):
    return {"eps": levels(fields[0], text)}


def _parse_pgd(fields, text, norm="linf"):
    eps = levels(fields[0], text) if norm == "linf" else number(fields[0], "EPS", text)
    if not eps >= 0:
        raise ValueError(f"EPS in {text!r}: expected an L2 budget >= 0, got {fields[0]}")
    alpha = step_size(fields[2], "ALPHA", text, in_levels=norm == "linf") if len(fields) == 3 else None
    return {"eps": eps, "steps": integer(fields[1], "STEPS", text), "alpha": alpha}


def _parse_eot(fields, text):
    return {"eps": levels(fields[0], text), "steps": integer(fields[1], "STEPS", text),
            "samples": integer(fields[2], "SAMPLES", text)}


def _run_fgsm(spec, model, x, y, generator, eot_samples, restarts):
    return fgsm(model, x, y, spec.eps, eot_samples=eot_samples)


def _run_pgd(spec, model, x, y, generator, eot_samples, restarts, norm: str = "linf"):
    return pgd(model, x, y, spec.eps, spec.alpha, spec.steps, norm=norm, generator=generator,
               eot_samples=eot_samples, restarts=restarts)


register_attack("fgsm", form="fgsm:EPS", summary="FGSM (`fdgpu.attacks.fgsm`)", parse=_parse_fgsm, run=_run_fgsm,
                nargs=(1, 1), example="fgsm:8", options=("eot",), random_start=False, style=("--", "s"),
                refuse={"restarts": "fgsm has no random start, so restarts=N would repeat it; use pgd or apgd"})
register_attack("pgd", form="pgd:EPS:STEPS[:ALPHA]", summary="L-inf PGD with a random start (`fdgpu.attacks.pgd`)",
                parse=_parse_pgd, run=_run_pgd, nargs=(2, 3), example="pgd:8:2", style=("-", "o"))
register_attack("pgdl2", form="pgdl2:EPS:STEPS[:ALPHA]",
                summary="L2 PGD with a random start; EPS and ALPHA are L2 norms in [0, 1] units",
                parse=lambda fields, text: _parse_pgd(fields, text, "l2"),
                run=functools.partial(_run_pgd, norm="l2"), nargs=(2, 3), example="pgdl2:0.5:2", norm="l2")
register_attack("eot", form="eot:EPS:STEPS:SAMPLES",
                summary="PGD averaging the gradient over SAMPLES draws of a randomised defence (EOT)",
                parse=_parse_eot, run=_run_pgd, nargs=(3, 3), example="eot:8:2:2", options=("restarts",),
                refuse={"eot": "eot:EPS:STEPS:SAMPLES already gives the draws; drop eot=N"}, style=(":", "^"))

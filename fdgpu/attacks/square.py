"""Square attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020), L-inf, untargeted: a random search that needs only the model's logits.

Written from the paper's description (Section 3 and Algorithm 1, L-inf):

- start from **vertical stripes**: every column of every channel moved by ``+eps`` or ``-eps`` (one sign per
  column and channel), clipped to [0, 1];
- each iteration proposes one square window of side ``s`` at a uniformly random position, whose values all move by
  ``+2 eps`` or ``-2 eps`` (one sign per channel) and are projected back onto the ``eps`` box around the clean image
  and [0, 1]; signs that would leave an image's window unchanged are redrawn (as in the paper's code); an image
  keeps the proposal when it lowers its **margin loss** ``z_y - max_{k != y} z_k`` (or misclassifies);
- the side comes from ``p``, the fraction of the image's pixels the window covers, ``s = round(sqrt(p H W))``
  (at least 1, at most ``min(H, W)``): ``p = p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000
  and 8000 of a 10,000-query run, the iteration index rescaled for other budgets (:func:`p_schedule`);
- each image stops as soon as it is misclassified (per-image early stop), and restarts attack only the images no
  earlier run fooled, each from new stripes.

``queries`` counts the points evaluated per image and run, the stripes included (so ``queries - 1`` square
proposals); with ``eot_samples = N`` each point costs N forward passes, whose logits are averaged (EOT, for
randomised defences). Random draws come only from ``generator``. As in AutoAttack's code, an iteration's window
position and signs are drawn once and proposed to every image still being attacked, and the stripes are drawn for
every image of the batch: an image's search is then the same whichever other images are in the batch or already
fooled. Unlike AutoAttack's code (and torchattacks' port of it), whose windows never reach the last row or column,
every position is drawn, ``0 <= top <= H - s``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn

from ..registry import integer, levels, number, register_attack
from .gradient import BestIterate, _check, _check_int, _fooled, _loss_and_grad

#: iterations of a 10,000-query run after which the paper halves p (Andriushchenko et al. 2020, Section 4)
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: sign choices drawn per iteration; an image takes the first that changes its window
REDRAWS = 4


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{k != y} z_k`` per sample: ``(B, K)`` logits, ``(B,)`` labels -> ``(B,)``; negative exactly when
    another class scores higher than ``y``.

    Example:
        >>> float(margin_loss(torch.tensor([[3.0, 1.0, 0.5]]), torch.tensor([0])))
        2.0
    """
    z_y = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -math.inf).max(dim=1).values
    return z_y - others


def p_schedule(step: int, steps: int, p_init: float = 0.8) -> float:
    """The fraction of pixels the window covers at proposal ``step`` (0-based) of ``steps``: ``p_init`` halved at
    each of :data:`HALVINGS` passed, the index rescaled as ``int(step / steps * 10000)``.

    Example:
        >>> [p_schedule(i, 10000) for i in (0, 10, 11, 51, 9999)]
        [0.8, 0.8, 0.4, 0.2, 0.0015625]
        >>> p_schedule(100, 1000)  # 100 of 1,000 is 1,000 of 10,000
        0.05
    """
    it = int(step / steps * 10000) if steps > 0 else 0
    return p_init / 2 ** sum(it > h for h in HALVINGS)


def _signs(shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(like.device, like.dtype)


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int = 5000, *,
           p_init: float = 0.8, restarts: int = 1, eot_samples: int = 1, generator: Optional[torch.Generator] = None,
           return_queries: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Square attack, L-inf, untargeted (see the module docstring): random search on the margin loss, no gradient.

    Args:
        model: ``(B, C, H, W)`` in [0, 1] -> ``(B, K)`` logits (K >= 2); only its outputs are used.
        x: ``(B, C, H, W)`` float in [0, 1]; y: ``(B,)`` true labels.
        eps: L-inf budget in [0, 1] units (``8 / 255`` = 8 pixel levels).
        queries: points evaluated per image and run (>= 1), the stripes start included; AutoAttack runs 5,000.
        p_init: the window's initial fraction of the image, in (0, 1] (AutoAttack: 0.8 for L-inf; the paper's
            ImageNet runs 0.05).
        restarts: runs (>= 1); each later run attacks, from new stripes, only the images no earlier run fooled.
        eot_samples: forward passes averaged per point (EOT) for randomised models.
        generator: CPU ``torch.Generator`` for stripes, positions and signs (default: seeded with 0).
        return_queries: also return the ``(B,)`` int64 queries spent per image (0 for images misclassified clean).

    Returns:
        ``(B, C, H, W)`` in [0, 1] with ``|x_adv - x| <= eps``: per image the first point that was misclassified,
        else the one with the lowest margin (under :func:`fdgpu.attacks.selecting` ``"max-loss"``: the lowest
        margin, the search going on after the first misclassification); with ``return_queries``, ``(x_adv,
        queries)``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
        >>> xa, used = square(net, x, y, 8 / 255, 20, return_queries=True)
        >>> bool(((xa - x).abs() <= 8 / 255 + 1e-6).all()), bool((used <= 20).all())
        (True, True)
    """
    _check(x, y, eps)
    if x.dim() != 4:
        raise ValueError(f"x: expected a (B, C, H, W) image batch, got shape {tuple(x.shape)}")
    _check_int(queries, "queries")
    _check_int(restarts, "restarts")
    _check_int(eot_samples, "eot_samples")
    if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
        raise ValueError(f"p_init: expected a fraction of the image in (0, 1], got {p_init!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    x = x.detach()
    B, C, H, W = x.shape
    best = BestIterate(x)
    used = torch.zeros(B, dtype=torch.int64, device=x.device)
    best.queries = used
    with torch.no_grad():
        _, margin, logits = _loss_and_grad(model, x, y, margin_loss, eot_samples, grad=False)
    if logits.shape[-1] < 2:
        raise ValueError(f"model: expected logits of >= 2 classes, got {logits.shape[-1]}")
    # the clean image is a point of the search: already misclassified images are not attacked (as AutoAttack)
    best.update(x, -margin.double(), _fooled(logits, y, False))
    for run in range(restarts):
        idx = best.pending
        if idx.numel() == 0:
            break
        x0, yr = x[idx], y[idx]
        lo, hi = (x0 - eps).clamp(0.0, 1.0), (x0 + eps).clamp(0.0, 1.0)
        # stripes drawn for every image of the batch, so that an image's draws do not depend on the others
        xb = (x0 + eps * _signs((B, C, 1, W), generator, x0)[idx]).clamp(0.0, 1.0)
        _, margin, logits = _loss_and_grad(model, xb, yr, margin_loss, eot_samples, grad=False)
        used[idx] += 1
        best.at(0, queries - 1, run, restarts)
        best.update(xb, -margin.double(), _fooled(logits, yr, False), idx)
        for k in range(queries - 1):
            # per-image early stop: only the rows still to fool (all rows under "max-loss") are queried
            if best.first_fooled:
                act = (~best.fooled[idx]).nonzero().flatten()
            else:
                act = torch.arange(idx.numel(), device=x.device)
            if act.numel() == 0:
                break
            s = min(max(int(round(math.sqrt(p_schedule(k, queries - 1, p_init) * H * W))), 1), H, W)
            top = int(torch.randint(0, H - s + 1, (1,), generator=generator))
            left = int(torch.randint(0, W - s + 1, (1,), generator=generator))
            # REDRAWS sign choices per iteration (a fixed number, so that an image's draws do not depend on the
            # others): an image takes the first that changes its window (the paper's code redraws until one does;
            # with C channels a choice is useless with probability <= 2^-C)
            signs = _signs((REDRAWS, 1, C, 1, 1), generator, x0)
            cur = xb[act]
            box = (slice(None), slice(None), slice(top, top + s), slice(left, left + s))
            w_cur, w_lo, w_hi = cur[box], lo[act][box], hi[act][box]
            w_new = torch.min(torch.max(w_cur + 2 * eps * signs[0], w_lo), w_hi)
            for sign in signs[1:]:
                same = (w_new == w_cur).flatten(1).all(dim=1).view(-1, 1, 1, 1)
                w_new = torch.where(same, torch.min(torch.max(w_cur + 2 * eps * sign, w_lo), w_hi), w_new)
            x_new = cur.clone()
            x_new[box] = w_new
            _, m_new, logits = _loss_and_grad(model, x_new, yr[act], margin_loss, eot_samples, grad=False)
            used[idx[act]] += 1
            fooled = _fooled(logits, yr[act], False)
            keep = (m_new < margin[act]) | fooled
            rows = act[keep]
            xb[rows], margin[rows] = x_new[keep], m_new[keep]
            best.at(k + 1, queries - 1, run, restarts)
            best.update(x_new, -m_new.double(), fooled, idx[act])
    return (best.x, used) if return_queries else best.x


# --- registration: the spec form of fdgpu eval ----------------------------------------------------------------------

def _parse(fields, text):
    out = {"eps": levels(fields[0], text), "steps": integer(fields[1], "QUERIES", text)}
    if len(fields) == 3:
        p = number(fields[2], "P_INIT", text)
        if not 0 < p <= 1:
            raise ValueError(f"P_INIT in {text!r}: expected a fraction of the image in (0, 1], got {fields[2]}")
        out["p_init"] = p
    return out


def _run(spec, model, x, y, generator, eot_samples, restarts):
    p_init = 0.8 if spec.p_init is None else spec.p_init
    return square(model, x, y, spec.eps, spec.steps, p_init=p_init, restarts=restarts, eot_samples=eot_samples,
                  generator=generator)


register_attack("square", form="square:EPS:QUERIES[:P_INIT]",
                summary="Square attack, L-inf random search without gradients (Andriushchenko et al. 2020; "
                        "`fdgpu.attacks.square`); P_INIT default 0.8",
                parse=_parse, run=_run, nargs=(2, 3), example="square:8:5", gradient_free=True,
                style=((0, (3, 2)), "X"))

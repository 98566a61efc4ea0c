"""FGSM, PGD (L-inf and L2) and EOT-PGD in [0, 1] pixel space.

All attacks take ``model``: ``(B, C, H, W)`` in [0, 1] -> ``(B, K)`` logits (e.g.
``nn.Sequential(fdgpu.FDJpeg(backward="ste"), Normalize(mean, std), net)``; the layer's ``backward=`` decides what
the attacker sees), ``x`` ``(B, C, H, W)`` float in [0, 1] and ``y`` ``(B,)`` int64 labels, and return adversarial
images of ``x``'s shape and dtype in [0, 1]. They never change the model's mode or parameters' ``.grad`` and never
touch the global RNG: randomness comes from ``generator`` (a CPU ``torch.Generator``; draws are made on the CPU and
moved to ``x.device``, so results do not depend on the device's RNG).

Per-sample losses are summed, so one image's gradient does not depend on the other images in its batch.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NORMS = ("linf", "l2")


def _check(x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected a float (B, C, H, W) tensor in [0, 1], got {got}")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:1]:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y: expected a ({x.shape[0]},) tensor of class indices, got {got}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps: expected a finite number >= 0 in [0, 1] pixel units (8/255 for 8 levels), "
                         f"got {eps!r}")


def _loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Optional[LossFn],
               samples: int = 1) -> torch.Tensor:
    """Gradient of the summed per-sample loss w.r.t. ``x``, averaged over ``samples`` forward passes (EOT)."""
    grad = torch.zeros_like(x)
    for _ in range(samples):
        xr = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xr)
            loss = F.cross_entropy(logits, y, reduction="none") if loss_fn is None else loss_fn(logits, y)
            g, = torch.autograd.grad(loss.sum(), xr, allow_unused=True)
        if g is not None:
            grad += g
    return grad / samples


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False,
         loss_fn: Optional[LossFn] = None) -> torch.Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): ``clamp(x + eps * sign(grad), 0, 1)``.

    Args:
        eps: L-inf budget in [0, 1] units (``8 / 255`` = 8 pixel levels).
        targeted: ``y`` are target classes; step down the loss instead of up.
        loss_fn: ``(logits, y) -> (B,)`` per-sample loss; cross-entropy by default.

    Returns:
        ``(B, C, H, W)`` in [0, 1], ``|x_adv - x| <= eps``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> bool(((fgsm(net, x, y, 0.1) - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    _check(x, y, eps)
    g = _loss_grad(model, x, y, loss_fn)
    step = -eps if targeted else eps
    return (x.detach() + step * g.sign()).clamp(0.0, 1.0)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: Optional[float] = None,
        steps: int = 10, *, norm: str = "linf", random_start: bool = True, targeted: bool = False,
        loss_fn: Optional[LossFn] = None, generator: Optional[torch.Generator] = None,
        eot_samples: int = 1) -> torch.Tensor:
    """Projected Gradient Descent (Madry et al. 2018) under an L-inf or L2 budget, optionally with EOT.

    Args:
        eps: budget in [0, 1] units (L-inf: per pixel; L2: Euclidean norm of the whole ``(C, H, W)`` perturbation).
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).
        steps: number of iterations (>= 1).
        norm: ``"linf"`` (signed-gradient steps, clip to the box) or ``"l2"`` (normalised steps, project to the ball).
        random_start: start from a uniform point of the L-inf box / the L2 ball (drawn from ``generator``).
        targeted: ``y`` are targets: descend the loss.
        loss_fn: ``(logits, y) -> (B,)``; cross-entropy by default.
        generator: CPU ``torch.Generator`` for the random start; default a fresh one seeded with 0.
        eot_samples: forward/backward passes averaged per step (expectation over transformation, for randomised
            defences); 1 for deterministic models.

    Returns:
        ``(B, C, H, W)`` adversarial images in [0, 1] within the budget of ``x``.
    """
    _check(x, y, eps)
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps: expected an int >= 1, got {steps!r}")
    if not (isinstance(eot_samples, int) and eot_samples >= 1):
        raise ValueError(f"eot_samples: expected an int >= 1, got {eot_samples!r}")
    alpha = 2.5 * eps / steps if alpha is None else float(alpha)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    x0 = x.detach()
    if random_start and eps > 0:
        if norm == "linf":
            noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32) * 2 - 1
            delta = noise.to(device=x0.device, dtype=x0.dtype) * eps
        else:
            direction = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
            radius = torch.rand(x0.shape[0], generator=generator, dtype=torch.float32)
            radius = radius.pow(1.0 / x0[0].numel()).view(-1, *([1] * (x0.dim() - 1)))
            delta = (direction / _flat_norm(direction) * radius * eps).to(device=x0.device, dtype=x0.dtype)
        xa = (x0 + delta).clamp(0.0, 1.0)
    else:
        xa = x0.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        g = _loss_grad(model, xa, y, loss_fn, eot_samples)
        if norm == "linf":
            xa = xa + sign * alpha * g.sign()
            xa = torch.min(torch.max(xa, x0 - eps), x0 + eps)
        else:
            xa = xa + sign * alpha * g / _flat_norm(g)
            delta = xa - x0
            delta = delta * (eps / _flat_norm(delta)).clamp(max=1.0)
            xa = x0 + delta
        xa = xa.clamp(0.0, 1.0).detach()
    return xa


def eot(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: Optional[float] = None,
        steps: int = 10, samples: int = 8, **kwargs) -> torch.Tensor:
    """EOT-PGD (Athalye et al. 2018): PGD whose every step averages the gradient over ``samples`` draws of a
    randomised model (e.g. a JPEG defence with a random quality per call). Other arguments as in :func:`pgd`.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> x, y = torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
        >>> eot(net, x, y, 0.1, steps=2, samples=2).shape
        torch.Size([4, 3, 2, 2])
    """
    return pgd(model, x, y, eps, alpha, steps, eot_samples=samples, **kwargs)

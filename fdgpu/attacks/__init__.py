"""Attacks for evaluating preprocessing defences: FGSM, PGD (L-inf / L2), EOT-PGD, APGD (CE / DLR / targeted DLR),
the gradient-free Square attack and a BPDA wrapper.

Everything works in [0, 1] pixel space on any device, in batches, and draws randomness only from a
``torch.Generator`` it is given. Every attack returns, per image, its best iterate (the first that fooled the
model, else the highest-loss one), and takes ``eot_samples`` to average gradients over draws of a randomised model.

Examples:
    >>> import torch, torch.nn as nn, fdgpu
    >>> from fdgpu.attacks import pgd
    >>> model = nn.Sequential(fdgpu.FDJpeg(backward="bpda"), nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    >>> x, y = torch.rand(2, 3, 16, 16), torch.tensor([1, 2])
    >>> x_adv = pgd(model, x, y, eps=8 / 255, steps=2, generator=torch.Generator().manual_seed(0))
    >>> bool(((x_adv - x).abs() <= 8 / 255 + 1e-6).all())
    True
"""
from .apgd import LOSSES, apgd, checkpoints, dlr_loss, dlr_targeted_loss
from .bpda import BPDA
from .gradient import NORMS, SELECTIONS, BestIterate, eot, fgsm, pgd, recording, selecting
from .square import margin_loss, p_schedule, square

__all__ = ["fgsm", "pgd", "eot", "apgd", "dlr_loss", "dlr_targeted_loss", "checkpoints", "BestIterate", "BPDA",
           "NORMS", "LOSSES", "selecting", "SELECTIONS", "square", "margin_loss", "p_schedule", "recording"]

"""Averaging ensembles of classifiers (used for the Das et al. "vaccination" ensemble)."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


class Ensemble(nn.Module):
    """Average the softmax probabilities of several classifiers; return their log (usable as logits).

    ``(B, ...)`` -> ``(B, K)``: ``log(mean_m softmax(model_m(x)))``, so ``argmax`` is the soft vote and
    cross-entropy on the output is the ensemble's negative log-likelihood (what an attacker differentiates).
    """

    def __init__(self, models: Iterable[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)
        if len(self.members) == 0:
            raise ValueError("models: expected at least one classifier, got none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(x), dim=-1) for m in self.members], dim=0)
        return torch.logsumexp(logp, dim=0) - torch.log(torch.tensor(float(len(self.members)), dtype=logp.dtype))

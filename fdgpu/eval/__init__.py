"""Defence evaluation: ``evaluate`` (Python API behind ``fdgpu eval``), spec parsing and reports.

Defences and attacks are found by kind in :mod:`fdgpu.registry` (docs/extending.md adds one).

Examples:
    >>> import torch, torch.nn as nn
    >>> from fdgpu.eval import evaluate
    >>> clf = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)).eval()
    >>> x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 10, (4,))
    >>> rows = evaluate(clf, x, y, ["none", "fd:1"], ["fgsm:8"], ["transfer", "bpda"], batch_size=2)
    >>> [(r["defence"], r["view"]) for r in rows]
    [('none', '-'), ('fd:1', 'transfer'), ('fd:1', 'bpda')]
"""
from .core import EvalResults, build_defence, evaluate, run_attack, worst_case
from .report import (attribution_table, markdown_report, markdown_table, plot, sanity_section, worst_case_table,
                     write_json)
from .specs import VIEWS, AttackSpec, DefenceSpec, parse_attack, parse_defence

__all__ = ["evaluate", "run_attack", "worst_case", "EvalResults", "parse_attack", "parse_defence", "build_defence",
           "AttackSpec", "DefenceSpec", "VIEWS", "markdown_table", "markdown_report", "worst_case_table",
           "sanity_section", "attribution_table", "plot", "write_json"]

"""Paired comparisons of replay methods over the same seeded splits.

Two methods scored on the same splits differ split by split; `paired` summarizes those
differences: their mean, their sample standard deviation (ddof=1, the spread of the paired
differences, not of either method), and how many splits each side won.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smcs_graph.offline.evaluation.metrics import Metrics

__all__ = ["Paired", "paired"]


@dataclass(frozen=True)
class Paired:
    """`method` minus `baseline` on one metric over the splits (fractions, not percent)."""

    method: str
    baseline: str
    metric: str
    mean: float
    std: float
    """Sample standard deviation of the per-split differences (ddof=1; 0 with one split)."""
    wins: int
    ties: int
    losses: int


def _value(metrics: Metrics, metric: str) -> float:
    if metric == "top1":
        return metrics.top1
    if metric == "pairwise":
        return metrics.pairwise
    raise ValueError(f"metric must be 'top1' or 'pairwise', got {metric!r}")


def paired(
    results: dict[str, list[Metrics]], method: str, baseline: str, metric: str = "top1"
) -> Paired:
    """The paired difference of `method` over `baseline` on `metric` ("top1" or "pairwise")."""
    a = np.array([_value(m, metric) for m in results[method]])
    b = np.array([_value(m, metric) for m in results[baseline]])
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"{method!r} and {baseline!r} must be scored on the same splits")
    diff = a - b
    return Paired(
        method,
        baseline,
        metric,
        float(diff.mean()),
        float(diff.std(ddof=1)) if diff.size > 1 else 0.0,
        int((diff > 0).sum()),
        int((diff == 0).sum()),
        int((diff < 0).sum()),
    )

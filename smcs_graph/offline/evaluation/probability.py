"""Calibrated P(correct) of every prior rule, and how well calibrated it is (replay evaluation).

A rule's score s[q, m] becomes P(model m right on q) = sigmoid(a * x + b), where x is the
score's feature (`rule_feature`): the logit of a rule that already estimates an accuracy
(shrunk, hier, the per-category router), eq. 4's V divided by the support set's total
similarity for the paper's rule (a monotone map per query: the ranking is unchanged), and the
learned rule's blended probability as it is (its blend is already fitted on held-out folds).
(a, b) is Platt scaling fitted on held-out bank questions (`platt`, defined with the rules in
`core.prior_rules`: every fitted rule carries its own), never on the test split.

`expected_calibration_error` and `reliability` score P(correct) on measured test entries only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph.core.prior_rules import Platt, platt

__all__ = [
    "DEFAULT_BINS",
    "Platt",
    "ReliabilityBin",
    "expected_calibration_error",
    "platt",
    "reliability",
]

DEFAULT_BINS = 10


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of predicted probability: its bounds, entries, mean prediction and accuracy."""

    low: float
    high: float
    count: int
    predicted: float
    observed: float


def _binned(
    probabilities: ArrayLike, outcomes: ArrayLike, measured: ArrayLike | None, bins: int
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.intp]]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    m = np.ones(p.shape, bool) if measured is None else np.asarray(measured, bool)
    if not (p.shape == y.shape == m.shape):
        raise ValueError(f"shapes differ: {p.shape}, {y.shape}, {m.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    p, y = p[m], y[m]
    index = np.minimum((p * bins).astype(np.intp), bins - 1)
    return p, y, index


def expected_calibration_error(
    probabilities: ArrayLike,
    outcomes: ArrayLike,
    measured: ArrayLike | None = None,
    bins: int = DEFAULT_BINS,
) -> float:
    """ECE = sum_b (n_b / n) |mean outcome_b - mean P_b| over `bins` equal-width bins of P in
    [0, 1] (the last bin holds 1.0), over measured entries; NaN with none."""
    p, y, index = _binned(probabilities, outcomes, measured, bins)
    if p.shape[0] == 0:
        return float("nan")
    count = np.bincount(index, minlength=bins).astype(np.float64)
    gap = np.abs(np.bincount(index, y, bins) - np.bincount(index, p, bins))
    return float(gap.sum() / count.sum())


def reliability(
    probabilities: ArrayLike,
    outcomes: ArrayLike,
    measured: ArrayLike | None = None,
    bins: int = DEFAULT_BINS,
) -> list[ReliabilityBin]:
    """The reliability table: per non-empty bin, mean P(correct) against the observed rate."""
    p, y, index = _binned(probabilities, outcomes, measured, bins)
    out = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            out.append(
                ReliabilityBin(
                    b / bins,
                    (b + 1) / bins,
                    int(inside.sum()),
                    float(p[inside].mean()),
                    float(y[inside].mean()),
                )
            )
    return out

"""Scores of a ranking of the models against recorded test outcomes (replay evaluation).

Top-1 routing accuracy, top-K coverage and the pairwise ranking score (eq. 8); unmeasured
models are ranked out of each test question, never counted wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core

__all__ = ["DEFAULT_COVERAGE_K", "Metrics", "evaluate_rankings", "random_metrics"]

DEFAULT_COVERAGE_K = (1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True)
class Metrics:
    """Scores of one method on one split."""

    top1: float
    coverage: dict[int, float]
    pairwise: float
    questions: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "coverage": {str(k): v for k, v in self.coverage.items()},
            "pairwise": self.pairwise,
            "questions": self.questions,
        }


def _ranked(priors: NDArray[np.float64], measured: NDArray[np.bool_]) -> NDArray[np.intp]:
    """Model order per row: prior descending, ties by lower index, unmeasured models last."""
    keyed = np.where(measured, priors, -np.inf)
    order: NDArray[np.intp] = np.argsort(-keyed, axis=1, kind="stable")
    return order


def evaluate_rankings(
    priors: ArrayLike,
    correct: ArrayLike,
    measured: ArrayLike,
    coverage_k: Sequence[int] = DEFAULT_COVERAGE_K,
) -> Metrics:
    """Top-1, top-K coverage and eq. 8 of priors (Q, R) against test outcomes (Q, R).

    Only measured models are ranked on each row (see the module docstring); rows must hold at
    least one measured model. Top-K takes the K best measured models (fewer if fewer exist).
    """
    v = np.asarray(priors, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    m = np.asarray(measured, dtype=bool)
    if not (v.shape == c.shape == m.shape) or v.ndim != 2:
        raise ValueError(
            f"priors, correct and measured must all be (Q, R); got {v.shape}, {c.shape}, {m.shape}"
        )
    if v.shape[0] == 0:
        raise ValueError("no test questions to evaluate")
    if not m.any(axis=1).all():
        raise ValueError("every test question needs at least one measured model")
    order = _ranked(v, m)
    hits = np.take_along_axis(np.where(m, c, 0.0), order, axis=1)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), np.iinfo(np.intp).max)
    coverage = {int(k): float((first_hit < k).mean()) for k in coverage_k}
    return Metrics(
        top1=float(hits[:, 0].mean()),
        coverage=coverage,
        pairwise=core.pairwise_ranking_score(v, np.where(m, c, 0.0), m),
        questions=int(v.shape[0]),
    )


def random_metrics(
    correct: ArrayLike, measured: ArrayLike, coverage_k: Sequence[int] = DEFAULT_COVERAGE_K
) -> Metrics:
    """The expected scores of a uniformly random ranking of the measured models (exact).

    Top-K coverage of a row with `w` wrong among `n` measured models is 1 - C(w, K) / C(n, K);
    the expected pairwise ranking score is 0.5 (random priors have no ties).
    """
    c = np.asarray(correct, dtype=np.float64)
    m = np.asarray(measured, dtype=bool)
    n = m.sum(axis=1)
    wrong = (m & (c == 0.0)).sum(axis=1)
    right = n - wrong
    coverage: dict[int, float] = {}
    for k in coverage_k:
        miss = [
            math.comb(int(w), min(k, int(t))) / math.comb(int(t), min(k, int(t)))
            for w, t in zip(wrong, n, strict=True)
        ]
        coverage[int(k)] = float(1.0 - np.mean(miss))
    has_pair = (right > 0) & (wrong > 0)
    return Metrics(
        top1=float(np.mean(right / n)),
        coverage=coverage,
        pairwise=0.5 if has_pair.any() else math.nan,
        questions=int(c.shape[0]),
    )

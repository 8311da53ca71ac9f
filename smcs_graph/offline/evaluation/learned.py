"""Cross-validated choice and batch priors of the learned rule (`smcs_graph.core.learned`).

The rule's free settings (the question map's rank k, the logistic penalty) and its blend with
the kNN evidence are chosen on the bank split alone: the bank is cut into seeded folds, each
fold's learned logits come from a map and models fitted on the other folds, and the kNN
evidence of every bank question is the hier rule's leave-one-out prior (`calibration.hier_loo`).
The blend is fitted on those held-out predictions; the (k, penalty) with the best held-out top-1
of the blend wins (ties: pairwise, then the earlier grid entry). A choice on the edge of a grid
with more than one value is named in `LearnedChoice.at_edge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from smcs_graph.core import learned
from smcs_graph.offline.evaluation.metrics import evaluate_rankings

__all__ = [
    "DEFAULT_LEARNED_FOLDS",
    "DEFAULT_LEARNED_PENALTY",
    "DEFAULT_LEARNED_RANK",
    "LearnedChoice",
    "calibrate_learned",
    "learned_priors",
]

# The grids searched on the bank (k: principal components of MiniLM; penalty: the L2 weight on
# whitened features, in units of one question's log-loss).
DEFAULT_LEARNED_RANK = (4, 8, 16, 32, 64)
DEFAULT_LEARNED_PENALTY = (1.0, 10.0, 100.0, 1000.0, 10000.0)
DEFAULT_LEARNED_FOLDS = 3


@dataclass(frozen=True)
class LearnedChoice:
    """The learned rule's settings chosen on the bank by cross-validation, and their scores."""

    rank: int
    penalty: float
    blend: learned.Blend
    cv_top1: float
    cv_pairwise: float
    at_edge: tuple[str, ...] = ()
    """Settings chosen at the edge of a grid with more than one value ("rank", "penalty")."""


def _edges(value: float, grid: Sequence[float], name: str) -> tuple[str, ...]:
    values = sorted(set(grid))
    return (name,) if len(values) > 1 and value in (values[0], values[-1]) else ()


def calibrate_learned(
    embeddings: NDArray[np.floating],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    knn_rows: NDArray[np.intp],
    knn_priors: NDArray[np.float64],
    *,
    rank_grid: Sequence[int] = DEFAULT_LEARNED_RANK,
    penalty_grid: Sequence[float] = DEFAULT_LEARNED_PENALTY,
    folds: int = DEFAULT_LEARNED_FOLDS,
    seed: int = 0,
) -> LearnedChoice:
    """Choose (k, penalty) and fit the blend on the bank by `folds`-fold cross-validation.

    `embeddings` (N, d) and `capability`, `measured` (R, N) are the bank's; `knn_priors` (Q, R)
    are held-out kNN estimates of the bank rows `knn_rows` (Q,), the questions scored. A rank
    above what a fold's training rows span (their count - 1, `fit_question_map`) is searched as
    that rank: on a small bank the grid shrinks to what the bank can tell apart.
    """
    if not rank_grid or not penalty_grid or folds < 2:
        raise ValueError("the learned rule needs non-empty grids and at least two folds")
    emb = np.asarray(embeddings, dtype=np.float64)
    n = emb.shape[0]
    fold = np.random.default_rng(seed).permutation(n) % folds
    # A fold's map spans at most its training rows - 1 directions (`fit_question_map`): a
    # larger rank is searched as that one.
    most = min(emb.shape[1], n - int(np.bincount(fold, minlength=folds).max()) - 1)
    if most < 1:
        raise ValueError(
            f"{n} bank questions are too few for the learned rule's {folds}-fold "
            "cross-validation (each fold trains on at least 2): add questions or leave the "
            "learned rule out"
        )
    ranks = sorted({min(int(k), most) for k in rank_grid})
    penalties = sorted({float(a) for a in penalty_grid}, reverse=True)  # warm starts: strong first
    held = {(k, a): np.zeros((n, capability.shape[0])) for k in ranks for a in penalties}
    for f in range(folds):
        train = fold != f
        qmap = learned.fit_question_map(emb[train], max(ranks))
        features = qmap(emb)
        for k in ranks:
            start = None
            for a in penalties:
                models = learned.fit_models(
                    features[train, :k], capability[:, train], measured[:, train], a, start=start
                )
                start = models
                held[(k, a)][~train] = models.logits(features[~train, :k])
    truth, truth_measured = capability[:, knn_rows].T, measured[:, knn_rows].T
    best: LearnedChoice | None = None
    for k in ranks:
        for a in sorted(penalties):
            logits = held[(k, a)][knn_rows]
            blend = learned.fit_blend(logits, knn_priors, truth, truth_measured)
            scores = evaluate_rankings(
                blend(logits, knn_priors), truth, truth_measured, coverage_k=(1,)
            )
            if best is None or (scores.top1, scores.pairwise) > (best.cv_top1, best.cv_pairwise):
                best = LearnedChoice(k, a, blend, scores.top1, scores.pairwise)
    assert best is not None
    edges = _edges(best.rank, ranks, "rank") + _edges(best.penalty, penalties, "penalty")
    return LearnedChoice(best.rank, best.penalty, best.blend, best.cv_top1, best.cv_pairwise, edges)


def learned_priors(
    bank_embeddings: NDArray[np.floating],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    query_embeddings: NDArray[np.floating],
    knn_priors: NDArray[np.float64],
    choice: LearnedChoice,
) -> NDArray[np.float64]:
    """P(correct) (Q, R) of the learned rule: map and models fitted on the whole bank, then
    blended with the queries' kNN priors (Q, R) as chosen."""
    qmap = learned.fit_question_map(np.asarray(bank_embeddings, dtype=np.float64), choice.rank)
    models = learned.fit_models(qmap(bank_embeddings), capability, measured, choice.penalty)
    return choice.blend(models.logits(qmap(query_embeddings)), knn_priors)

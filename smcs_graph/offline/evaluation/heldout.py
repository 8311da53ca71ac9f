"""Held-out bank scores of each rule: what its Platt scaling (`probability`) is fitted on.

Seeded bank questions act as queries against the rest of the bank (their own row never joins
their support set), as in `calibration`. The hier rule's held-out priors come from
`calibration.hier_loo` and the learned rule's from its cross-validation; this module gives the
paper's rule, the shrunk rule and the per-category router theirs. The query's own outcomes
stay in the bank-wide and per-category tallies (one question of N: a leak of 1/N, well below
the calibration's own noise on a bank of thousands).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.core.prior_rules import held_rows
from smcs_graph.offline.evaluation.priors import similarity_matrix

__all__ = ["bank_queries", "paper_feature", "router_feature", "self_excluded_similarities"]

_EXCLUDED = -2.0  # below any cosine: a query's own bank row never joins its support set


def bank_queries(measured: NDArray[np.bool_], queries: int, seed: int) -> NDArray[np.intp]:
    """Up to `queries` seeded bank rows with at least two measured models, sorted (the rows
    every rule's own calibration holds out, `core.prior_rules.held_rows`)."""
    return held_rows(measured, queries, seed)


def self_excluded_similarities(
    unit: NDArray[np.float32], rows: NDArray[np.intp]
) -> NDArray[np.float64]:
    """Similarities (Q, N) of bank rows `rows` to the whole bank, each to itself excluded."""
    sims = similarity_matrix(unit[rows], unit)
    sims[np.arange(rows.shape[0]), rows] = _EXCLUDED
    return sims


def paper_feature(
    similarities: NDArray[np.float64],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    n_sup_base: int,
    gamma: float,
    rule: core.Rule,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Eq. 4's priors (Q, R) and their calibration feature: V / sum of the support's
    similarities (0 for an empty support), a per-query rescaling that keeps the ranking."""
    support = core.support_mask(similarities, n_sup_base, gamma, rule)
    priors = core.prior_scores(similarities, capability, measured, support=support)
    total = np.where(support, similarities, 0.0).sum(axis=1, keepdims=True)
    feature = np.divide(priors, total, out=np.zeros_like(priors), where=total > 0.0)
    return priors, feature


def router_feature(
    table: dict[str, NDArray[np.float64]], labels: Sequence[str]
) -> NDArray[np.float64]:
    """The per-category router's accuracies (Q, R) of questions labelled `labels`."""
    return np.stack([table[c] for c in labels])

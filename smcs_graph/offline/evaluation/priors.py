"""Priors of many test questions at once: similarities to the bank, then `smcs_graph.core`.

Each function applies eq. 3 to every row of the (Q, N) similarities against the whole bank
and hands the support masks to core's rule, the same code the graph runs on one question.
The arrays: `capability` and `measured` (R, N) (the layout of `QuestionBank.capability`),
`categories` (N,) the bank rows' labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core

__all__ = ["hier_priors", "rps_priors", "shrunk_priors", "similarity_matrix", "unit_rows"]


def unit_rows(matrix: ArrayLike) -> NDArray[np.float32]:
    """Float32 rows scaled to unit length (zero rows stay zero)."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out: NDArray[np.float32] = (m / np.where(norms > 0.0, norms, 1.0)).astype(np.float32)
    return out


def similarity_matrix(queries: ArrayLike, bank: ArrayLike) -> NDArray[np.float64]:
    """Cosines (Q, N) of unit-row queries with unit-row bank vectors (float32 product, clipped).

    The same arithmetic as `QuestionBank`'s exact support: one float32 product, then float64.
    """
    q = np.asarray(queries, dtype=np.float32)
    b = np.asarray(bank, dtype=np.float32)
    sims: NDArray[np.float64] = np.clip((q @ b.T).astype(np.float64), -1.0, 1.0)
    return sims


def rps_priors(
    similarities: NDArray[np.float64],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    n_sup_base: int = 400,
    gamma: float = 0.95,
    *,
    rule: core.Rule = "paper",
) -> NDArray[np.float64]:
    """Eq. 4 priors (Q, R) of the paper's RPS over each row's support set."""
    support = core.support_mask(similarities, n_sup_base, gamma, rule)
    return core.prior_scores(similarities, capability, measured, support=support)


def shrunk_priors(
    similarities: NDArray[np.float64],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    prior_accuracy: NDArray[np.float64],
    n_sup_base: int,
    gamma: float,
    strength: float,
    *,
    temperature: float | None = None,
    rule: core.Rule = "paper",
) -> NDArray[np.float64]:
    """`core.shrunk_prior_scores` (Q, R) over each row's support set."""
    support = core.support_mask(similarities, n_sup_base, gamma, rule)
    return core.shrunk_prior_scores(
        similarities,
        capability,
        measured,
        prior_accuracy,
        strength,
        temperature=temperature,
        support=support,
    )


def hier_priors(
    similarities: NDArray[np.float64],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    categories: Sequence[str],
    category_table: Mapping[str, ArrayLike],
    prior_accuracy: NDArray[np.float64],
    n_sup_base: int,
    gamma: float,
    strength: float,
    *,
    temperature: float,
    category_temperature: float,
    rule: core.Rule = "paper",
) -> NDArray[np.float64]:
    """`core.hier_prior_scores` (Q, R) over each row's support set."""
    support = core.support_mask(similarities, n_sup_base, gamma, rule)
    return core.hier_prior_scores(
        similarities,
        capability,
        measured,
        categories,
        category_table,
        prior_accuracy,
        strength,
        temperature=temperature,
        category_temperature=category_temperature,
        support=support,
    )

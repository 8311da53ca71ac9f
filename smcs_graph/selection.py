"""Prior selection as a service: one question's support set and every pool model's prior.

RPS steps 1-3 (embed, support set, priors by the run's prior rule). The `select_priors` node
and the rank tool both call `prior_selection`, so the tool ranks exactly as the graph selects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank import QuestionBank, Support
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder

__all__ = ["prior_selection"]


def prior_selection(
    question: str,
    pool_names: Sequence[str],
    bank: QuestionBank,
    embedder: Embedder,
    settings: SMCSConfig,
) -> tuple[Support, NDArray[np.float64]]:
    """The question's support set and the pool's priors, (R,) in `pool_names` order, at full
    precision (callers round for display only)."""
    names = list(pool_names)
    query = embedder.embed([question])[0]
    support = bank.support(
        query,
        names,
        n_sup_base=settings.n_sup_base,
        gamma=settings.gamma,
        rule=settings.support_rule,
    )
    if settings.prior_rule == "shrunk":
        priors = core.shrunk_prior_scores(
            support.similarities,
            support.capability,
            support.measured,
            bank.accuracy(names),
            settings.shrink_strength,
            temperature=settings.shrink_temperature,
        )
    elif settings.prior_rule == "hier":
        priors = core.hier_prior_scores(
            support.similarities,
            support.capability,
            support.measured,
            support.categories,
            bank.category_accuracy(names, settings.hier_category_strength),
            bank.accuracy(names),
            settings.hier_strength,
            temperature=settings.hier_temperature,
            category_temperature=settings.hier_category_temperature,
        )
    else:
        priors = core.prior_scores(
            support.similarities,
            support.capability,
            support.measured,
            weighted=settings.weighted_prior,
        )
    return support, priors

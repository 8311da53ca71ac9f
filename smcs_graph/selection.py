"""Prior selection as a service: one question's support set and every pool model's prior.

RPS steps 1-3 (embed, support set, priors by the run's prior rule). The `select_priors` node
and the rank tool both call `prior_selection`, so the tool ranks exactly as the graph selects.

The "learned" rule (`core.learned.LearnedPrior`) is fitted once per bank snapshot and cached
here by the snapshot's identity: a write that only records results (same questions) refits
only the models whose results changed; a write that adds questions refits everything.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, get_args

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank import QuestionBank, Support
from smcs_graph.config import PriorRule, SMCSConfig
from smcs_graph.core.learned import LearnedPrior
from smcs_graph.embedder import Embedder

__all__ = [
    "LEARNED_PENALTY",
    "LEARNED_RANK",
    "learned_prior",
    "p_correct",
    "prior_selection",
]

LEARNED_RANK = 32
"""The learned rule's question-map rank in the graph: with `LEARNED_PENALTY`, the pair that
cross-validation on the bank chose most often in the MMLU-Pro replay (4 of 10 splits; the
cross-validated score is flat across the grid, see the README's Replay evaluation)."""
LEARNED_PENALTY = 1000.0
"""The learned rule's L2 penalty in the graph (see `LEARNED_RANK`)."""
_HELD_QUERIES = 1000  # bank questions whose held-out hier priors fit the blend
_EXCLUDED = -2.0  # below any cosine: a held-out question never supports itself

_lock = threading.Lock()
_fits: dict[int, tuple[weakref.ref[Any], Any, tuple[Any, ...], LearnedPrior]] = {}
"""id(bank) -> (bank, the snapshot fitted on, the hier settings, the fit). The snapshot is held
(one per bank) so that the next one can be compared with it."""


def _held_hier(
    snap: Any, names: list[str], settings: SMCSConfig
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Hier priors of up to `_HELD_QUERIES` seeded bank rows, each left out of its own support
    set (its outcomes stay in the tallies: a 1/N leak)."""
    cap, mask = snap.capability(names, np.arange(len(snap.ids), dtype=np.intp))
    scorable = np.flatnonzero(mask.sum(axis=0) >= 2)
    rows = np.sort(np.random.default_rng(0).permutation(scorable)[:_HELD_QUERIES])
    unit = snap.matrix
    sims = np.clip((unit[rows] @ unit.T).astype(np.float64), -1.0, 1.0)
    sims[np.arange(rows.shape[0]), rows] = _EXCLUDED
    support = core.support_mask(sims, settings.n_sup_base, settings.gamma, settings.support_rule)
    table = core.category_accuracy(cap, mask, snap.categories, settings.hier_category_strength)
    priors = core.hier_prior_scores(
        sims,
        cap,
        mask,
        snap.categories,
        table,
        core.global_accuracy(cap, mask),
        settings.hier_strength,
        temperature=settings.hier_temperature,
        category_temperature=settings.hier_category_temperature,
        support=support,
    )
    return rows, priors


def learned_prior(bank: QuestionBank, settings: SMCSConfig) -> LearnedPrior:
    """The bank's fitted learned rule for its current snapshot (cached; see the module)."""
    snap = bank._snap()  # the snapshot's identity is the cache key
    hier_key = (
        settings.n_sup_base,
        settings.gamma,
        settings.support_rule,
        settings.hier_strength,
        settings.hier_temperature,
        settings.hier_category_temperature,
        settings.hier_category_strength,
    )
    with _lock:
        cached = _fits.get(id(bank))
        if cached is not None and cached[0]() is bank and cached[2] == hier_key:
            old = cached[1]
            if old is snap:
                return cached[3]
            if old.matrix is snap.matrix:
                fit = cached[3]
                for name, values in snap.results.items():
                    if old.results.get(name) is not values:
                        fit = fit.refit_model(name, snap.matrix, values == 1, values >= 0)
                _fits[id(bank)] = (weakref.ref(bank), snap, hier_key, fit)
                return fit
        names = sorted(snap.results)
        cap, mask = snap.capability(names, np.arange(len(snap.ids), dtype=np.intp))
        held = _held_hier(snap, names, settings) if len(snap.ids) > 1 and names else None
        fit = LearnedPrior.fit(
            snap.matrix,
            cap,
            mask,
            names,
            held if held is not None and held[0].size else None,
            rank=min(LEARNED_RANK, max(1, len(snap.ids) - 1)),
            penalty=LEARNED_PENALTY,
        )
        _fits[id(bank)] = (weakref.ref(bank), snap, hier_key, fit)
        return fit


def _hier(
    support: Support, names: list[str], bank: QuestionBank, settings: SMCSConfig, query: Any
) -> NDArray[np.float64]:
    return core.hier_prior_scores(
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


def _paper(
    support: Support, names: list[str], bank: QuestionBank, settings: SMCSConfig, query: Any
) -> NDArray[np.float64]:
    return core.prior_scores(
        support.similarities,
        support.capability,
        support.measured,
        weighted=settings.weighted_prior,
    )


def _shrunk(
    support: Support, names: list[str], bank: QuestionBank, settings: SMCSConfig, query: Any
) -> NDArray[np.float64]:
    return core.shrunk_prior_scores(
        support.similarities,
        support.capability,
        support.measured,
        bank.accuracy(names),
        settings.shrink_strength,
        temperature=settings.shrink_temperature,
    )


def _learned(
    support: Support, names: list[str], bank: QuestionBank, settings: SMCSConfig, query: Any
) -> NDArray[np.float64]:
    knn = _hier(support, names, bank, settings, query)
    if len(bank) < 2:  # nothing to learn from: the hier rule's fallback (g_m)
        return knn
    unit = np.asarray(query, dtype=np.float64)
    unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
    return learned_prior(bank, settings).p_correct(unit, names, knn)


_Rule = Callable[[Support, list[str], QuestionBank, SMCSConfig, Any], NDArray[np.float64]]
_RULES: dict[str, _Rule] = {"paper": _paper, "shrunk": _shrunk, "hier": _hier, "learned": _learned}
"""Each `PriorRule` by name: (support, pool names, bank, settings, query embedding) -> priors."""
assert set(_RULES) == set(get_args(PriorRule)), "every PriorRule needs its function here"


def prior_selection(
    question: str,
    pool_names: Sequence[str],
    bank: QuestionBank,
    embedder: Embedder,
    settings: SMCSConfig,
) -> tuple[Support, NDArray[np.float64]]:
    """The question's support set and the pool's priors, (R,) in `pool_names` order, at full
    precision (callers round for display only). Rule "learned": each model's P(correct)."""
    names = list(pool_names)
    query = embedder.embed([question])[0]
    support = bank.support(
        query,
        names,
        n_sup_base=settings.n_sup_base,
        gamma=settings.gamma,
        rule=settings.support_rule,
    )
    return support, _RULES[settings.prior_rule](support, names, bank, settings, query)


def p_correct(
    support: Support,
    pool_names: Sequence[str],
    bank: QuestionBank,
    settings: SMCSConfig,
    priors: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Each model's estimated P(correct) on the question, for the prior gate: the priors
    themselves under the "learned" rule (a calibrated probability), else the "shrunk"
    estimate (similarity-weighted support accuracy shrunk toward bank-wide accuracy)."""
    if settings.prior_rule == "learned":
        return np.clip(np.asarray(priors, dtype=np.float64), 0.0, 1.0)
    shrunk = _shrunk(support, list(pool_names), bank, settings, None)
    return np.clip(np.asarray(shrunk, dtype=np.float64), 0.0, 1.0)

"""Prior selection as a service: one question's support set and every pool model's prior.

RPS steps 1-3 (embed, support set, priors by the run's prior rule). The `select_priors` node
and the rank tool both call `prior_selection`, and the prior gate `p_correct`, so the tool ranks
exactly as the graph selects. Every rule is one `core.prior_rules` object, fitted once per bank
snapshot and cached here by the snapshot's identity: a write that only records results (same
questions) refits only the models whose results changed; a write that adds questions refits
everything.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np
from numpy.typing import NDArray

from smcs_graph.bank import QuestionBank, Support
from smcs_graph.config import PriorRule, SMCSConfig
from smcs_graph.core.prior_rules import (
    RULES,
    BankArrays,
    Evidence,
    HierRule,
    PriorRuleBase,
    make_rule,
)
from smcs_graph.embedder import Embedder

__all__ = [
    "LEARNED_PENALTY",
    "LEARNED_RANK",
    "fitted_rule",
    "gate_settings",
    "p_correct",
    "prior_rule",
    "prior_selection",
]

LEARNED_RANK = 32
"""The learned rule's question-map rank in the graph: with `LEARNED_PENALTY`, the pair that
cross-validation on the bank chose most often in the MMLU-Pro replay (4 of 10 splits; the
cross-validated score is flat across the grid, see the README's Replay evaluation)."""
LEARNED_PENALTY = 1000.0
"""The learned rule's L2 penalty in the graph (see `LEARNED_RANK`)."""
assert set(RULES) == set(get_args(PriorRule)), "every PriorRule needs a registered rule class"

_lock = threading.Lock()
_fits: dict[
    tuple[int, tuple[Any, ...]], tuple[weakref.ref[Any], Any, tuple[Any, ...], PriorRuleBase]
] = {}
"""(id(bank), the rule's settings) -> (bank, the snapshot fitted on, the rule's settings, the
fitted rule): the selection's rule and the prior gate's (`gate_rule`) are kept side by side. The
snapshot is held (one per bank and rule) so that the next one can be compared with it."""


def prior_rule(settings: SMCSConfig) -> PriorRuleBase:
    """The run's prior rule (`settings.prior_rule`) with its settings, not yet fitted."""
    support: dict[str, Any] = {
        "n_sup_base": settings.n_sup_base,
        "gamma": settings.gamma,
        "support_rule": settings.support_rule,
        "fallback_strength": settings.shrink_strength,
        "fallback_temperature": settings.shrink_temperature,
    }
    hier: dict[str, Any] = {
        "strength": settings.hier_strength,
        "temperature": settings.hier_temperature,
        "category_temperature": settings.hier_category_temperature,
        "category_strength": settings.hier_category_strength,
    }
    specific: dict[str, dict[str, Any]] = {
        "paper": {"weighted": settings.weighted_prior},
        "shrunk": {
            "strength": settings.shrink_strength,
            "temperature": settings.shrink_temperature,
        },
        "hier": hier,
        "learned": {
            "rank": LEARNED_RANK,
            "penalty": LEARNED_PENALTY,
            "knn": HierRule(**support, **hier),
        },
    }
    return make_rule(settings.prior_rule, **support, **specific[settings.prior_rule])


def _bank_arrays(snap: Any) -> BankArrays:
    names = sorted(snap.results)
    cap, mask = snap.capability(names, np.arange(len(snap.ids), dtype=np.intp))
    return BankArrays(snap.matrix, cap, mask, snap.categories, names)


def fitted_rule(
    bank: QuestionBank, settings: SMCSConfig, *, calibrated: bool = False
) -> PriorRuleBase:
    """The run's prior rule fitted on the bank's current snapshot, cached per bank and rule: a write
    that only records results (same questions) refits only the models whose results changed
    (`refit_model`); a write that adds questions, or other settings, fit it again. P(correct)'s
    calibration is fitted on first need (`calibrated`: the prior gate) and kept across
    refits."""
    rule = prior_rule(settings)
    key = rule.settings()
    snap = bank._snap()  # the snapshot's identity is the cache key
    with _lock:
        cached = _fits.get((id(bank), key))
        if cached is not None and cached[0]() is bank and cached[2] == key:
            old, fit = cached[1], cached[3]
            if old is snap:
                return _calibrated(bank, snap, key, fit, calibrated)
            if old.matrix is snap.matrix and old.categories == snap.categories:
                arrays = _bank_arrays(snap)
                for name in sorted(set(snap.results) | set(old.results)):
                    if old.results.get(name) is not snap.results.get(name):
                        fit = fit.refit_model(name, arrays)
                _store(bank, snap, key, fit)
                return _calibrated(bank, snap, key, fit, calibrated)
        fit = rule.fit(_bank_arrays(snap), calibrate=False)
        _store(bank, snap, key, fit)
        return _calibrated(bank, snap, key, fit, calibrated)


def _store(bank: QuestionBank, snap: Any, key: tuple[Any, ...], fit: PriorRuleBase) -> None:
    """Keep `fit` for the bank and rule, and forget the fits of banks no longer alive; call
    with `_lock` held."""
    for stale in [k for k, v in _fits.items() if v[0]() is None]:
        del _fits[stale]
    _fits[(id(bank), key)] = (weakref.ref(bank), snap, key, fit)


def _calibrated(
    bank: QuestionBank, snap: Any, key: tuple[Any, ...], fit: PriorRuleBase, wanted: bool
) -> PriorRuleBase:
    """`fit`, calibrated (and cached so) when `wanted`; call with `_lock` held."""
    if wanted and not fit.calibrated:
        fit = fit.calibrate(_bank_arrays(snap))
        _store(bank, snap, key, fit)
    return fit


def _evidence(support: Support, query: Any = None) -> Evidence:
    unit = None
    if query is not None:
        unit = np.asarray(query, dtype=np.float64)
        unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
    return Evidence(
        support.similarities, support.capability, support.measured, support.categories, None, unit
    )


def prior_selection(
    question: str,
    pool_names: Sequence[str],
    bank: QuestionBank,
    embedder: Embedder,
    settings: SMCSConfig,
    query: Any = None,
) -> tuple[Support, NDArray[np.float64]]:
    """The question's support set and the pool's priors, (R,) in `pool_names` order, at full
    precision (callers round for display only). Rule "learned": each model's P(correct).
    `query`: the question's embedding, when the caller has it already."""
    names = list(pool_names)
    if query is None:
        query = embedder.embed([question])[0]
    support = bank.support(
        query,
        names,
        n_sup_base=settings.n_sup_base,
        gamma=settings.gamma,
        rule=settings.support_rule,
    )
    return support, fitted_rule(bank, settings).priors(names, _evidence(support, query))


def gate_settings(settings: SMCSConfig) -> SMCSConfig | None:
    """The settings of the prior gate's own rule when `gate_rule` names another rule than
    `prior_rule` (None: the gate reads the selection's rule)."""
    rule = settings.gate_rule
    if rule is None or rule == settings.prior_rule:
        return None
    return settings.replace(prior_rule=rule, gate_rule=None)


def p_correct(
    support: Support,
    pool_names: Sequence[str],
    bank: QuestionBank,
    settings: SMCSConfig,
    priors: NDArray[np.float64],
    query: Any = None,
) -> NDArray[np.float64]:
    """Each model's P(correct) on the question, for the prior gate: the calibrated probability
    (`PriorRuleBase.p_correct`) of the run's rule from the `priors` `prior_selection` gave, or,
    with a `gate_rule` of its own, that rule's on the same support set (`query`: the question's
    embedding, which the 'learned' rule reads)."""
    names = list(pool_names)
    own = gate_settings(settings)
    if own is not None:
        evidence = _evidence(support, query)
        priors = fitted_rule(bank, own).priors(names, evidence)
        settings = own
    rule = fitted_rule(bank, settings, calibrated=True)
    estimate = rule.p_correct(names, _evidence(support), np.asarray(priors))
    return np.clip(estimate, 0.0, 1.0)

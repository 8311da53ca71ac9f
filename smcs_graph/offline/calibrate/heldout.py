"""What the prior gate would decide on each bank question, with that question out of the bank.

The bank's questions are split into folds (seeded; `folds=0`: leave-one-out, one question per
fold). For each fold the run's prior rule (`selection.prior_rule`) is fitted on the bank
without that fold exactly as the graph fits it on a bank (`PriorRuleBase.fit`: the shared
part, every model's state, and the Platt map of P(correct) fitted on that bank's own held-out
questions, or the shrunk fallback below `MIN_CALIBRATION_OUTCOMES`). Each question of the fold
is then asked as the gate asks it: its support set in the bank without the fold (one float32
matrix-vector product and eq. 3, as `bank.retrieval`), the pool's priors, the top-K by prior,
and the top model's P(correct) (`PriorRuleBase.p_correct`). Nothing fitted for a question has
seen its outcomes: its support set, the per-model state and the Platt map all come from the
other folds. With `folds=0` the figures equal the gate's on the bank without the question
(`selection.p_correct`); with F folds, the gate's on the bank without the question's fold.
`folds=None` (the CLI's default) is leave-one-out where one fit per question is cheap, else
`AUTO_FOLDS` folds (`auto_folds`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank.index import unit_query
from smcs_graph.bank.snapshot import Snapshot
from smcs_graph.config import SMCSConfig
from smcs_graph.core.prior_rules import BankArrays, Evidence, PriorRuleBase
from smcs_graph.errors import ConfigError
from smcs_graph.nodes.gates import fit_budget
from smcs_graph.offline.calibrate.thresholds import HeldOut
from smcs_graph.selection import gate_settings, prior_rule

__all__ = ["AUTO_FOLDS", "LOO_MAX_QUESTIONS", "auto_folds", "bank_arrays", "fold_of", "held_out"]

AUTO_FOLDS = 10
"""Folds when leave-one-out would be slow (see `auto_folds`)."""
LOO_MAX_QUESTIONS = 2000
"""Banks up to this size are held out one question at a time (the default bank's 499: about
20 s per rule on 2 cores), except with the 'learned' rule, whose fit takes about 0.7 s there
(leave-one-out: 6 min; 10 folds: 10 s)."""


def auto_folds(size: int, rule: str) -> int:
    """The folds of `folds=None`: 0 (leave-one-out) for a bank of at most `LOO_MAX_QUESTIONS`
    and a rule other than 'learned', else `AUTO_FOLDS`."""
    return 0 if size <= LOO_MAX_QUESTIONS and rule != "learned" else AUTO_FOLDS


def bank_arrays(snap: Snapshot) -> tuple[BankArrays, list[str]]:
    """A bank snapshot's arrays as the graph fits its rule on them (every model with results,
    sorted; `selection.fitted_rule`), and its question ids."""
    names = sorted(snap.results)
    cap, mask = snap.capability(names, np.arange(len(snap.ids), dtype=np.intp))
    return BankArrays(snap.matrix, cap, mask, snap.categories, names), list(snap.ids)


def fold_of(size: int, folds: int, seed: int) -> NDArray[np.intp]:
    """Each of `size` questions' fold: a seeded shuffle dealt round-robin into `folds` (0 or
    at least `size`: leave-one-out, question i in fold i)."""
    if folds < 0 or folds == 1:
        raise ConfigError(
            f"--folds {folds} is impossible: give 0 (leave-one-out) or at least 2 folds"
        )
    if folds == 0 or folds >= size:
        return np.arange(size, dtype=np.intp)
    out = np.empty(size, dtype=np.intp)
    out[np.random.default_rng(seed).permutation(size)] = np.arange(size) % folds
    return out


def held_out(
    bank: BankArrays,
    question_ids: Sequence[str],
    pool: Sequence[str],
    settings: SMCSConfig,
    *,
    folds: int | None = None,
    seed: int = 0,
) -> HeldOut:
    """Per bank question with results for two pool models, the gate's top model and its
    P(correct) from the bank without the question's fold (see the module docstring).

    `bank`: every model with results (as the graph fits on), `pool`: the pool in pool order.
    """
    pool = list(pool)
    cap_pool = np.stack([bank.row(m)[0] for m in pool]) if pool else np.zeros((0, len(bank)))
    mask_pool = np.stack([bank.row(m)[1] for m in pool]) if pool else np.zeros((0, len(bank)))
    mask_pool = mask_pool.astype(bool)
    if not mask_pool.any():
        raise ConfigError(
            "the bank holds no results for the pool's models "
            f"({', '.join(pool)}): profile them first (`smcs profile`)"
        )
    scored = np.flatnonzero(mask_pool.sum(axis=0) >= 2)
    if scored.size == 0:
        raise ConfigError(
            "no bank question has results for two of the pool's models: nothing to calibrate on"
        )
    rule = prior_rule(settings)
    own = gate_settings(settings)
    gate_rule = prior_rule(own) if own is not None else None
    slowest = gate_rule.name if gate_rule is not None and gate_rule.name == "learned" else rule.name
    if folds is None:
        folds = auto_folds(len(bank), slowest)
    assignment = fold_of(len(bank), folds, seed)
    k, n = fit_budget(min(settings.k, len(pool)), settings.n_aggregations, settings.max_calls)
    ids = list(question_ids)
    found: dict[int, tuple[str, float, bool, bool, bool, tuple[str, ...], str]] = {}
    platt_folds = 0
    for fold in np.unique(assignment[scored]):
        keep = np.flatnonzero(assignment != fold)
        rest = _subset(bank, keep)
        fitted = rule.fit(rest)
        gate_fitted = gate_rule.fit(rest) if gate_rule is not None else fitted
        platt_folds += int(gate_fitted.calibration is not None)
        rest_ids = [ids[i] for i in keep]
        for q in scored[assignment[scored] == fold]:
            priors, p, nearest = _gate_view(fitted, rest, rest_ids, pool, bank, int(q))
            order = core.select_top_k(priors, k)
            first = int(order[0])
            if gate_rule is not None:  # the gate's own rule: its most probable referencer
                _, p, _ = _gate_view(gate_fitted, rest, rest_ids, pool, bank, int(q))
                first = int(max(order, key=lambda i: p[i]))  # ties: the selection's order
            found[int(q)] = (
                pool[first],
                float(p[first]),
                bool(cap_pool[first, q]),
                bool(cap_pool[order, q].any()),
                bool(mask_pool[first, q]),
                tuple(pool[int(i)] for i in order),
                rest_ids[nearest],
            )
    rows = [found[int(q)] for q in scored]
    fold_count = int(np.unique(assignment[scored]).size)
    scheme = (
        "leave-one-out"
        if fold_count == scored.size and np.unique(assignment).size == len(bank)
        else f"{fold_count}-fold cross-fitting"
    )
    return HeldOut(
        question_ids=[ids[i] for i in scored],
        top=[r[0] for r in rows],
        p_top=np.array([r[1] for r in rows], dtype=np.float64),
        top_right=np.array([r[2] for r in rows], dtype=bool),
        any_right=np.array([r[3] for r in rows], dtype=bool),
        top_measured=np.array([r[4] for r in rows], dtype=bool),
        k=k,
        n=n,
        rule=(gate_rule or rule).name,
        scheme=scheme,
        fits=fold_count,
        platt_fits=platt_folds,
        referencers=[r[5] for r in rows],
        nearest=[r[6] for r in rows],
    )


def _subset(bank: BankArrays, keep: NDArray[np.intp]) -> BankArrays:
    return BankArrays(
        bank.embeddings[keep],
        bank.capability[:, keep],
        bank.measured[:, keep],
        [bank.categories[i] for i in keep],
        list(bank.names),
    )


def _gate_view(
    fitted: PriorRuleBase,
    rest: BankArrays,
    rest_ids: Sequence[str],
    pool: list[str],
    bank: BankArrays,
    q: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """The pool's priors and P(correct) for bank question `q` asked against `rest`, computed
    as `select_priors` and the prior gate compute them (`selection.prior_selection`,
    `selection.p_correct`), and the position in `rest` of its first support example."""
    matrix = np.asarray(rest.embeddings, dtype=np.float32)
    query = unit_query(bank.embeddings[q], matrix.shape[1])
    sims = np.clip((matrix @ query).astype(np.float64), -1.0, 1.0)
    chosen = core.support_set(sims, fitted.n_sup_base, fitted.gamma, rule=fitted.support_rule)
    idx = np.array(
        sorted((int(i) for i in chosen), key=lambda i: (-sims[i], rest_ids[i])), dtype=np.intp
    )
    cap = np.stack([rest.row(m)[0][idx] for m in pool])
    mask = np.stack([rest.row(m)[1][idx] for m in pool])
    categories = [rest.categories[i] for i in idx]
    unit = np.asarray(bank.embeddings[q], dtype=np.float64)
    unit = unit / max(float(np.linalg.norm(unit)), 1e-12)
    priors = fitted.priors(pool, Evidence(sims[idx], cap, mask, categories, None, unit))
    p = fitted.p_correct(pool, Evidence(sims[idx], cap, mask, categories), np.asarray(priors))
    return np.asarray(priors, dtype=np.float64), np.clip(p, 0.0, 1.0), int(idx[0])

"""Leave-one-out calibration of the shrunk and hier prior rules on a replay's bank split.

Each rule's free settings are chosen on the bank alone: bank questions act as queries against
the rest of the bank (their own row and outcomes left out), and the settings with the best
top-1 routing accuracy win. The rules themselves are `smcs_graph.core`'s; the hier rule's
category prior is rebuilt here with the query's own outcomes taken out of its own category.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.offline.evaluation.heldout import bank_queries, self_excluded_similarities
from smcs_graph.offline.evaluation.metrics import evaluate_rankings
from smcs_graph.offline.evaluation.priors import unit_rows

__all__ = [
    "DEFAULT_CALIBRATION_QUERIES",
    "DEFAULT_HIER_CALIBRATION_QUERIES",
    "DEFAULT_HIER_CATEGORY_STRENGTH",
    "DEFAULT_HIER_CATEGORY_TEMPERATURE",
    "DEFAULT_HIER_STRENGTH",
    "DEFAULT_HIER_TEMPERATURE",
    "DEFAULT_SHRUNK_N_SUP",
    "DEFAULT_SHRUNK_STRENGTH",
    "DEFAULT_SHRUNK_TEMPERATURE",
    "HierChoice",
    "ShrunkChoice",
    "calibrate_hier",
    "calibrate_shrunk",
    "hier_loo",
]

# Calibration grids of the shrunk rule (chosen on the bank by leave-one-out).
DEFAULT_SHRUNK_N_SUP = (400,)
DEFAULT_SHRUNK_TEMPERATURE = (0.05, 0.1, 0.2)
DEFAULT_SHRUNK_STRENGTH = (0.3, 1.0, 3.0, 10.0)
DEFAULT_CALIBRATION_QUERIES = 2000
# Calibration grids and fixed settings of the hier rule (chosen on the bank by leave-one-out).
DEFAULT_HIER_TEMPERATURE = (0.07, 0.1, 0.13)
DEFAULT_HIER_STRENGTH = (0.3, 0.5, 1.0, 2.0, 4.0)
DEFAULT_HIER_CATEGORY_TEMPERATURE = 0.05
DEFAULT_HIER_CATEGORY_STRENGTH = 10.0
# The hier rule's LOO scores differ by tenths of a point: calibrate on the whole bank by default.
DEFAULT_HIER_CALIBRATION_QUERIES = 20000
# Rows per block when scoring many queries (bounds the (block, N) similarity matrix).
_BLOCK = 1024
_P = ParamSpec("_P")


@dataclass(frozen=True)
class ShrunkChoice:
    """The shrunk rule's settings chosen on the bank by leave-one-out, with their LOO scores."""

    n_sup_base: int
    temperature: float | None
    strength: float
    loo_top1: float
    loo_pairwise: float


def _loo_queries(measured: NDArray[np.bool_], queries: int, seed: int) -> NDArray[np.intp]:
    """`bank_queries`; a bank with no question of two measured models is refused."""
    if not (measured.sum(axis=0) >= 2).any():
        raise ValueError("no bank question has two measured models: nothing to calibrate on")
    return bank_queries(measured, queries, seed)


def _beats(choice: ShrunkChoice | HierChoice, best: ShrunkChoice | HierChoice | None) -> bool:
    """Better LOO top-1, ties to the better pairwise score; an equal choice keeps the earlier."""
    return best is None or (choice.loo_top1, choice.loo_pairwise) > (
        best.loo_top1,
        best.loo_pairwise,
    )


def calibrate_shrunk(
    embeddings: NDArray[np.float32],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    *,
    gamma: float = 0.95,
    rule: core.Rule = "paper",
    n_sup_grid: Sequence[int] = DEFAULT_SHRUNK_N_SUP,
    temperature_grid: Sequence[float | None] = DEFAULT_SHRUNK_TEMPERATURE,
    strength_grid: Sequence[float] = DEFAULT_SHRUNK_STRENGTH,
    queries: int = DEFAULT_CALIBRATION_QUERIES,
    seed: int = 0,
) -> ShrunkChoice:
    """Choose (n_sup_base, temperature, strength) of the shrunk rule on the bank, by LOO.

    Up to `queries` bank questions (seeded sample) each act as a query against the rest of the
    bank, their own row and outcomes excluded from both the support set and the global
    accuracy. The best LOO top-1 wins; ties go to the better pairwise ranking score, then to the
    earlier grid entry.
    """
    picked = _loo_queries(measured, queries, seed)
    sims = self_excluded_similarities(unit_rows(embeddings), picked)
    cm = np.where(measured, capability, 0.0)
    # Leave-one-out global accuracy: the query's own outcomes removed from the totals.
    correct_total = cm.sum(axis=1)[:, np.newaxis] - cm[:, picked]
    count_total = measured.sum(axis=1)[:, np.newaxis] - measured[:, picked]
    loo_accuracy = np.where(count_total > 0, correct_total / np.maximum(count_total, 1), 0.5).T
    truth, truth_measured = cm[:, picked].T, measured[:, picked].T
    best: ShrunkChoice | None = None
    for n_sup in n_sup_grid:
        mask = core.support_mask(sims, n_sup, gamma, rule)
        for temperature in temperature_grid:
            weights = core.support_weights(sims, temperature, support=mask)
            local_correct = weights @ cm.T
            evidence = weights @ measured.T.astype(np.float64)
            for strength in strength_grid:
                priors = core.shrink(local_correct, evidence, loo_accuracy, strength)
                scores = evaluate_rankings(priors, truth, truth_measured, coverage_k=(1,))
                choice = ShrunkChoice(
                    int(n_sup), temperature, float(strength), scores.top1, scores.pairwise
                )
                if _beats(choice, best):
                    best = choice
    assert best is not None
    return best


@dataclass(frozen=True)
class HierChoice:
    """The hier rule's settings: chosen on the bank by leave-one-out (temperature, strength)
    or fixed (the category level's), with the LOO scores of the choice."""

    temperature: float
    strength: float
    category_temperature: float
    category_strength: float
    loo_top1: float
    loo_pairwise: float


def hier_loo(
    embeddings: NDArray[np.float32],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    categories: Sequence[str],
    *,
    n_sup_base: int = 400,
    gamma: float = 0.95,
    rule: core.Rule = "paper",
    temperature_grid: Sequence[float] = DEFAULT_HIER_TEMPERATURE,
    strength_grid: Sequence[float] = DEFAULT_HIER_STRENGTH,
    category_temperature: float = DEFAULT_HIER_CATEGORY_TEMPERATURE,
    category_strength: float = DEFAULT_HIER_CATEGORY_STRENGTH,
    queries: int = DEFAULT_HIER_CALIBRATION_QUERIES,
    seed: int = 0,
) -> tuple[HierChoice, NDArray[np.intp], NDArray[np.float64]]:
    """The hier rule's leave-one-out choice, the bank rows used as queries, and their held-out
    priors (Q, R) under the choice (what the learned rule blends with and calibration fits on).

    As `calibrate_shrunk`: up to `queries` bank questions (seeded sample) each act as a query
    against the rest of the bank; their own row is excluded from the support set, and their
    own outcomes from the global accuracy and from their category's accuracy. Their own
    category is never used for the query (only their neighbours'). The best LOO top-1 wins;
    ties go to the better pairwise ranking score, then to the earlier grid entry.
    """
    picked = _loo_queries(measured, queries, seed)
    labels = [str(c) for c in categories]
    if len(labels) != capability.shape[1]:
        raise ValueError(f"categories has {len(labels)} entries for {capability.shape[1]} rows")
    unit = unit_rows(embeddings)
    cm = np.where(measured, capability, 0.0)
    mf = measured.astype(np.float64)
    names, codes = core.category_codes(labels)
    onehot = np.zeros((len(labels), len(names)), dtype=np.float64)
    onehot[np.arange(len(labels)), codes] = 1.0
    cat_correct, cat_count = (cm @ onehot).T, (mf @ onehot).T  # (C, R)
    total = cat_count + category_strength
    inverse = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0.0)
    empty = (total <= 0.0).astype(np.float64)
    grid = [(float(t), float(a)) for t in temperature_grid for a in strength_grid]
    priors = np.empty((len(grid), picked.shape[0], capability.shape[0]), dtype=np.float64)
    for start in range(0, picked.shape[0], _BLOCK):
        rows = picked[start : start + _BLOCK]
        block = slice(start, start + rows.shape[0])
        sims = self_excluded_similarities(unit, rows)
        mask = core.support_mask(sims, n_sup_base, gamma, rule)
        own_correct, own_count = cm[:, rows].T, mf[:, rows].T  # (Q, R)
        # Leave-one-out global accuracy, then the category table built on it.
        left_correct = cm.sum(axis=1) - own_correct
        left_count = mf.sum(axis=1) - own_count
        g = np.where(left_count > 0, left_correct / np.maximum(left_count, 1), 0.5)
        shares = core.category_share_matrix(
            sims, codes, len(names), category_temperature, support=mask
        )
        # sum_c P_c (correct_c + b g) / (count_c + b), g where count_c + b = 0 ...
        prior = (
            shares @ (cat_correct * inverse)
            + category_strength * g * (shares @ inverse)
            + g * (shares @ empty)
        )
        # ... with the query's own outcomes taken out of its own category.
        own = codes[rows]
        own_share = shares[np.arange(rows.shape[0]), own][:, np.newaxis]
        base_total = cat_count[own] + category_strength
        base = np.divide(
            cat_correct[own] + category_strength * g, base_total, out=g.copy(), where=base_total > 0
        )
        loo_total = base_total - own_count
        loo = np.divide(
            cat_correct[own] - own_correct + category_strength * g,
            loo_total,
            out=g.copy(),
            where=loo_total > 0,
        )
        prior += own_share * (loo - base)
        prior = np.where(shares.sum(axis=1, keepdims=True) == 0.0, g, prior)
        index = 0
        for temperature in temperature_grid:
            weights = core.kernel_weights(sims, float(temperature), support=mask)
            local_correct = weights @ cm.T
            evidence = weights @ mf.T
            for strength in strength_grid:
                priors[index, block] = core.shrink(local_correct, evidence, prior, strength)
                index += 1
    truth, truth_measured = cm[:, picked].T, measured[:, picked].T
    best: HierChoice | None = None
    best_index = 0
    for index, (temperature, strength) in enumerate(grid):
        scores = evaluate_rankings(priors[index], truth, truth_measured, coverage_k=(1,))
        choice = HierChoice(
            temperature,
            strength,
            float(category_temperature),
            float(category_strength),
            scores.top1,
            scores.pairwise,
        )
        if _beats(choice, best):
            best, best_index = choice, index
    assert best is not None
    return best, picked, priors[best_index]


def _choice_only(
    loo: Callable[_P, tuple[HierChoice, NDArray[np.intp], NDArray[np.float64]]], name: str, doc: str
) -> Callable[_P, HierChoice]:
    """`loo`'s choice alone, under `name`, with `loo`'s parameters (for help and type checks)."""

    @functools.wraps(loo)
    def choice(*args: _P.args, **kwargs: _P.kwargs) -> HierChoice:
        return loo(*args, **kwargs)[0]

    choice.__name__ = choice.__qualname__ = name
    choice.__doc__ = doc
    signature = inspect.signature(loo).replace(return_annotation="HierChoice")
    choice.__signature__ = signature  # type: ignore[attr-defined]
    return choice


calibrate_hier = _choice_only(
    hier_loo,
    "calibrate_hier",
    """Choose (temperature, strength) of the hier rule on the bank, by leave-one-out.

    As `hier_loo` (the same parameters) without the held-out priors.
    """,
)

"""Replay evaluation of prior selection: no LLM call, only recorded correctness.

The questions are split into a bank and a held-out test set (stratified by category, seeded).
Each method ranks the R models for every test question using the bank only; the ranking is
scored against the recorded correctness of the test question:

- top-1 routing accuracy: the top-ranked model is correct;
- top-K coverage: at least one of the K top-ranked models is correct;
- pairwise ranking score (eq. 8, `core.pairwise_ranking_score`).

Missing records (`measured` False) are never counted as wrong. In the bank they are no
evidence (the paper's prior ignores them; the shrunk and hier rules average over measured cells
only). The hier rule uses the bank questions' categories, never the test question's.
On a test question, each method ranks only the models that have a record there (an unmeasured
model cannot be scored, so it is skipped and the next-ranked model counts); test questions with
fewer than two measured models are left out, and the report counts both cases.

Everything here works on numpy arrays: `embeddings` (N, d) unit rows, `capability` and
`measured` (R, N) (the layout of `QuestionBank.capability`), `categories` (N,).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core

__all__ = [
    "METHODS",
    "HierChoice",
    "Metrics",
    "ReplayReport",
    "ReplaySettings",
    "ShrunkChoice",
    "Split",
    "calibrate_hier",
    "calibrate_shrunk",
    "category_accuracy",
    "evaluate_rankings",
    "hier_priors",
    "random_metrics",
    "rps_priors",
    "run_replay",
    "shrunk_priors",
    "similarity_matrix",
    "stratified_split",
    "support_mask",
]

METHODS = ("rps", "rps-shrunk", "rps-hier", "best-single", "per-category", "random", "oracle")
"""Method names in report order."""

DEFAULT_COVERAGE_K = (1, 2, 3, 4, 5, 6, 7)
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
_EXCLUDED = -2.0  # below any cosine: a query's own bank row never joins its support set


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True, eq=False)
class Split:
    """Bank and test row indices of one seeded split."""

    seed: int
    bank: NDArray[np.intp]
    test: NDArray[np.intp]


def stratified_split(categories: Sequence[str], test_fraction: float, seed: int) -> Split:
    """A seeded split holding out round(test_fraction * n_c) questions of each category.

    Every category with at least two questions keeps at least one in the bank and puts at
    least one in the test set; a single-question category stays in the bank.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    labels = np.asarray(list(categories), dtype=object)
    rng = np.random.default_rng(seed)
    test: list[NDArray[np.intp]] = []
    for category in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == category)
        if rows.shape[0] < 2:
            continue
        take = min(max(1, round(test_fraction * rows.shape[0])), rows.shape[0] - 1)
        test.append(rng.permutation(rows)[:take])
    test_rows = np.sort(np.concatenate(test)) if test else np.empty(0, dtype=np.intp)
    is_test = np.zeros(labels.shape[0], dtype=bool)
    is_test[test_rows] = True
    return Split(
        seed=seed,
        bank=np.flatnonzero(~is_test).astype(np.intp),
        test=test_rows.astype(np.intp),
    )


# --------------------------------------------------------------------------- evidence


def _unit_rows(matrix: ArrayLike) -> NDArray[np.float32]:
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


def support_mask(
    similarities: NDArray[np.float64],
    n_sup_base: int,
    gamma: float,
    rule: core.Rule = "paper",
) -> NDArray[np.bool_]:
    """Eq. 3 for every row at once: row q is `core.support_set(similarities[q], ...)` as a mask."""
    n = similarities.shape[1]
    rank = n_sup_base if rule == "paper" else n_sup_base + 1
    if n < rank:
        reference = similarities.min(axis=1)
    else:
        reference = np.partition(similarities, n - rank, axis=1)[:, n - rank]
    threshold = (gamma * reference)[:, np.newaxis]
    mask: NDArray[np.bool_] = (
        similarities >= threshold if rule == "paper" else similarities > threshold
    )
    return mask


def rps_priors(
    similarities: NDArray[np.float64],
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    n_sup_base: int = 400,
    gamma: float = 0.95,
    *,
    rule: core.Rule = "paper",
) -> NDArray[np.float64]:
    """Eq. 4 priors (Q, R) of the paper's RPS: `core.prior_scores` over each row's support set."""
    mask = support_mask(similarities, n_sup_base, gamma, rule)
    weights = np.where(mask, similarities, 0.0)
    priors: NDArray[np.float64] = weights @ np.where(measured, capability, 0.0).T
    return priors


def category_accuracy(
    capability: NDArray[np.float64],
    measured: NDArray[np.bool_],
    categories: Sequence[str],
) -> dict[str, NDArray[np.float64]]:
    """Each model's accuracy per category (measured entries only); no record: global accuracy."""
    return core.category_accuracy(capability, measured, categories)


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
    """`core.shrunk_prior_scores` for every row at once (Q, R)."""
    mask = support_mask(similarities, n_sup_base, gamma, rule)
    weights = _masked_weights(similarities, mask, temperature)
    correct = weights @ np.where(measured, capability, 0.0).T
    evidence = weights @ measured.T.astype(np.float64)
    return _posterior(correct, evidence, prior_accuracy, strength)


def _category_codes(
    categories: Sequence[str], table: Mapping[str, ArrayLike], fallback: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Category codes of the bank rows and the (C, R) accuracy table in code order (a label
    missing from `table` gets `fallback`)."""
    names, codes = core.category_codes([str(c) for c in categories])
    rows = [np.asarray(table.get(name, fallback), dtype=np.float64) for name in names]
    accuracy = np.stack(rows) if rows else np.zeros((0, fallback.shape[0]), dtype=np.float64)
    return codes, accuracy


def _category_shares(
    sims: NDArray[np.float64],
    mask: NDArray[np.bool_],
    codes: NDArray[np.intp],
    n_categories: int,
    temperature: float,
) -> NDArray[np.float64]:
    """`core.category_shares` of every row at once, (Q, C); a row without support is all 0."""
    votes = _masked_weights(sims, mask, temperature)
    shares = np.zeros((sims.shape[0], n_categories), dtype=np.float64)
    for j in range(n_categories):
        shares[:, j] = votes[:, codes == j].sum(axis=1)
    total = shares.sum(axis=1, keepdims=True)
    out: NDArray[np.float64] = np.divide(
        shares, total, out=np.zeros_like(shares), where=total > 0.0
    )
    return out


def _kernel_masked(
    sims: NDArray[np.float64], mask: NDArray[np.bool_], temperature: float
) -> NDArray[np.float64]:
    """`core.kernel_weights` of each row's support set (zero outside it)."""
    weights: NDArray[np.float64] = np.where(mask, core.kernel_weights(sims, temperature), 0.0)
    return weights


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
    """`core.hier_prior_scores` for every row at once (Q, R); `categories` label the bank rows."""
    mask = support_mask(similarities, n_sup_base, gamma, rule)
    codes, accuracy = _category_codes(categories, category_table, prior_accuracy)
    shares = _category_shares(similarities, mask, codes, accuracy.shape[0], category_temperature)
    no_support = shares.sum(axis=1, keepdims=True) == 0.0
    category_prior = np.where(no_support, prior_accuracy, shares @ accuracy)
    weights = _kernel_masked(similarities, mask, temperature)
    correct = weights @ np.where(measured, capability, 0.0).T
    evidence = weights @ measured.T.astype(np.float64)
    return _posterior(correct, evidence, category_prior, strength)


# --------------------------------------------------------------------------- metrics


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


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class ShrunkChoice:
    """The shrunk rule's settings chosen on the bank by leave-one-out, with their LOO scores."""

    n_sup_base: int
    temperature: float | None
    strength: float
    loo_top1: float
    loo_pairwise: float


def _bank_rows(measured: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Questions that can be scored: at least two measured models."""
    rows: NDArray[np.bool_] = measured.sum(axis=0) >= 2
    return rows


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
    scorable = np.flatnonzero(_bank_rows(measured))
    if scorable.shape[0] == 0:
        raise ValueError("no bank question has two measured models: nothing to calibrate on")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.permutation(scorable)[: min(queries, scorable.shape[0])])
    unit = _unit_rows(embeddings)
    sims = similarity_matrix(unit[picked], unit)
    sims[np.arange(picked.shape[0]), picked] = _EXCLUDED
    cm = np.where(measured, capability, 0.0)
    # Leave-one-out global accuracy: the query's own outcomes removed from the totals.
    correct_total = cm.sum(axis=1)[:, np.newaxis] - cm[:, picked]
    count_total = measured.sum(axis=1)[:, np.newaxis] - measured[:, picked]
    loo_accuracy = np.where(count_total > 0, correct_total / np.maximum(count_total, 1), 0.5).T
    truth, truth_measured = cm[:, picked].T, measured[:, picked].T
    best: ShrunkChoice | None = None
    for n_sup in n_sup_grid:
        mask = support_mask(sims, n_sup, gamma, rule)
        for temperature in temperature_grid:
            weights = _masked_weights(sims, mask, temperature)
            local_correct = weights @ cm.T
            evidence = weights @ measured.T.astype(np.float64)
            for strength in strength_grid:
                priors = _posterior(local_correct, evidence, loo_accuracy, strength)
                scores = evaluate_rankings(priors, truth, truth_measured, coverage_k=(1,))
                choice = ShrunkChoice(
                    int(n_sup), temperature, float(strength), scores.top1, scores.pairwise
                )
                if best is None or (choice.loo_top1, choice.loo_pairwise) > (
                    best.loo_top1,
                    best.loo_pairwise,
                ):
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


def calibrate_hier(
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
) -> HierChoice:
    """Choose (temperature, strength) of the hier rule on the bank, by leave-one-out.

    As `calibrate_shrunk`: up to `queries` bank questions (seeded sample) each act as a query
    against the rest of the bank; their own row is excluded from the support set, and their
    own outcomes from the global accuracy and from their category's accuracy. Their own
    category is never used for the query (only their neighbours'). The best LOO top-1 wins;
    ties go to the better pairwise ranking score, then to the earlier grid entry.
    """
    scorable = np.flatnonzero(_bank_rows(measured))
    if scorable.shape[0] == 0:
        raise ValueError("no bank question has two measured models: nothing to calibrate on")
    labels = [str(c) for c in categories]
    if len(labels) != capability.shape[1]:
        raise ValueError(f"categories has {len(labels)} entries for {capability.shape[1]} rows")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.permutation(scorable)[: min(queries, scorable.shape[0])])
    unit = _unit_rows(embeddings)
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
        sims = similarity_matrix(unit[rows], unit)
        sims[np.arange(rows.shape[0]), rows] = _EXCLUDED
        mask = support_mask(sims, n_sup_base, gamma, rule)
        own_correct, own_count = cm[:, rows].T, mf[:, rows].T  # (Q, R)
        # Leave-one-out global accuracy, then the category table built on it.
        left_correct = cm.sum(axis=1) - own_correct
        left_count = mf.sum(axis=1) - own_count
        g = np.where(left_count > 0, left_correct / np.maximum(left_count, 1), 0.5)
        shares = _category_shares(sims, mask, codes, len(names), category_temperature)
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
            weights = _kernel_masked(sims, mask, float(temperature))
            local_correct = weights @ cm.T
            evidence = weights @ mf.T
            for strength in strength_grid:
                priors[index, block] = _posterior(local_correct, evidence, prior, strength)
                index += 1
    truth, truth_measured = cm[:, picked].T, measured[:, picked].T
    best: HierChoice | None = None
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
        if best is None or (choice.loo_top1, choice.loo_pairwise) > (
            best.loo_top1,
            best.loo_pairwise,
        ):
            best = choice
    assert best is not None
    return best


def _masked_weights(
    sims: NDArray[np.float64], mask: NDArray[np.bool_], temperature: float | None
) -> NDArray[np.float64]:
    """`core.support_weights` of each row's support set (zero outside it)."""
    if temperature is None:
        return np.where(mask, np.maximum(sims, 0.0), 0.0)
    # The row maximum is always in the support set (it is the most similar question).
    peak = np.where(mask, sims, -np.inf).max(axis=1, keepdims=True)
    weights: NDArray[np.float64] = np.where(mask, np.exp((sims - peak) / temperature), 0.0)
    return weights


def _posterior(
    local_correct: NDArray[np.float64],
    evidence: NDArray[np.float64],
    prior_accuracy: NDArray[np.float64],
    strength: float,
) -> NDArray[np.float64]:
    prior = np.broadcast_to(prior_accuracy, local_correct.shape)
    if strength == 0.0:
        # No shrinkage: the local accuracy; a model without local evidence keeps its prior.
        local: NDArray[np.float64] = np.divide(
            local_correct, evidence, out=np.array(prior, dtype=np.float64), where=evidence > 0.0
        )
        return local
    posterior: NDArray[np.float64] = (local_correct + strength * prior) / (evidence + strength)
    return posterior


# --------------------------------------------------------------------------- the replay


@dataclass(frozen=True)
class ReplaySettings:
    """What `run_replay` measures; the defaults are the paper's (section A.3) and split."""

    rules: tuple[core.PriorRule, ...] = ("paper", "shrunk", "hier")
    """Which RPS prior rules to score: "paper" (method "rps"), "shrunk" ("rps-shrunk"), "hier"
    ("rps-hier")."""
    seeds: tuple[int, ...] = tuple(range(10))
    test_fraction: float = 0.1
    n_sup_base: int = 400
    gamma: float = 0.95
    support_rule: core.Rule = "paper"
    coverage_k: tuple[int, ...] = DEFAULT_COVERAGE_K
    sweep_n_sup_base: tuple[int, ...] = (50, 100, 200, 400, 800)
    sweep_gamma: tuple[float, ...] = (0.9, 0.95, 1.0)
    shrunk_n_sup_grid: tuple[int, ...] = DEFAULT_SHRUNK_N_SUP
    shrunk_temperature_grid: tuple[float | None, ...] = DEFAULT_SHRUNK_TEMPERATURE
    shrunk_strength_grid: tuple[float, ...] = DEFAULT_SHRUNK_STRENGTH
    calibration_queries: int = DEFAULT_CALIBRATION_QUERIES
    hier_temperature_grid: tuple[float, ...] = DEFAULT_HIER_TEMPERATURE
    hier_strength_grid: tuple[float, ...] = DEFAULT_HIER_STRENGTH
    hier_category_temperature: float = DEFAULT_HIER_CATEGORY_TEMPERATURE
    hier_category_strength: float = DEFAULT_HIER_CATEGORY_STRENGTH
    hier_calibration_queries: int = DEFAULT_HIER_CALIBRATION_QUERIES

    def __post_init__(self) -> None:
        if not self.rules or any(r not in ("paper", "shrunk", "hier") for r in self.rules):
            raise ValueError(f"rules must name 'paper', 'shrunk' and/or 'hier', got {self.rules!r}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        for name in ("n_sup_base", "calibration_queries", "hier_calibration_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(n < 1 for n in (*self.sweep_n_sup_base, *self.shrunk_n_sup_grid)):
            raise ValueError("support sizes in the sweeps must be >= 1")
        if any(g < 0.0 or not math.isfinite(g) for g in (self.gamma, *self.sweep_gamma)):
            raise ValueError("gamma values must be finite and >= 0")
        if any(
            a < 0.0 or not math.isfinite(a)
            for a in (*self.shrunk_strength_grid, *self.hier_strength_grid)
        ) or not (
            self.hier_category_strength >= 0.0 and math.isfinite(self.hier_category_strength)
        ):
            raise ValueError("shrinkage strengths must be finite and >= 0")
        if any(
            not (t > 0.0 and math.isfinite(t))
            for t in (*self.hier_temperature_grid, self.hier_category_temperature)
        ):
            raise ValueError("the hier rule's temperatures must be finite and > 0")
        if not (self.hier_temperature_grid and self.hier_strength_grid):
            raise ValueError("the hier rule's calibration grids must not be empty")
        if any(t is not None and not t > 0.0 for t in self.shrunk_temperature_grid):
            raise ValueError("temperatures must be > 0 (or None for linear weights)")
        if not (
            self.shrunk_n_sup_grid and self.shrunk_temperature_grid and self.shrunk_strength_grid
        ):
            raise ValueError("the shrunk rule's calibration grids must not be empty")
        if any(k < 1 for k in self.coverage_k):
            raise ValueError("coverage_k values must be >= 1")


@dataclass(frozen=True)
class SplitInfo:
    """Counts of one split (how missing records were handled)."""

    seed: int
    bank_questions: int
    test_questions: int
    evaluated: int
    skipped: int
    """Test questions left out: fewer than two measured models."""
    with_unmeasured: int
    """Evaluated test questions where at least one model has no record (ranked without it)."""
    best_single: str
    shrunk: ShrunkChoice | None
    """The shrunk rule's calibrated settings (None when that rule is not scored)."""
    hier: HierChoice | None = None
    """The hier rule's settings (None when that rule is not scored)."""


@dataclass
class ReplayReport:
    """Per-seed metrics of every method, the paper-RPS sweep, and the split counts."""

    models: list[str]
    questions: int
    categories: int
    settings: ReplaySettings
    results: dict[str, list[Metrics]] = field(default_factory=dict)
    sweep: dict[tuple[int, float], list[Metrics]] = field(default_factory=dict)
    splits: list[SplitInfo] = field(default_factory=list)

    def summary(self, method: str) -> dict[str, dict[str, float]]:
        """Mean, std (population), min and max over the seeds of each metric of `method`."""
        return _summarize(self.results[method], self.settings.coverage_k)

    def sweep_summary(self) -> dict[tuple[int, float], dict[str, dict[str, float]]]:
        return {key: _summarize(runs, self.settings.coverage_k) for key, runs in self.sweep.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, split counts, per-seed metrics and summaries."""
        return {
            "models": self.models,
            "questions": self.questions,
            "categories": self.categories,
            "settings": asdict(self.settings),
            "splits": [asdict(s) for s in self.splits],
            "methods": {
                name: {
                    "summary": self.summary(name),
                    "per_seed": [m.as_dict() for m in runs],
                }
                for name, runs in self.results.items()
            },
            "sweep": [
                {"n_sup_base": n, "gamma": g, "summary": summary}
                for (n, g), summary in self.sweep_summary().items()
            ],
        }


def _metric_values(metrics: Metrics, coverage_k: Sequence[int]) -> dict[str, float]:
    values = {"top1": metrics.top1, "pairwise": metrics.pairwise}
    values.update({f"top{k}_coverage": metrics.coverage[k] for k in coverage_k})
    return values


def _summarize(runs: Sequence[Metrics], coverage_k: Sequence[int]) -> dict[str, dict[str, float]]:
    table = [_metric_values(m, coverage_k) for m in runs]
    out: dict[str, dict[str, float]] = {}
    for name in table[0]:
        values = np.array([row[name] for row in table], dtype=np.float64)
        out[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def run_replay(
    embeddings: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike,
    categories: Sequence[str],
    models: Sequence[str],
    settings: ReplaySettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Score every method of `METHODS` on each seeded split (see the module docstring)."""
    cfg = settings or ReplaySettings()
    emb = np.asarray(embeddings, dtype=np.float32)
    cap = np.asarray(capability, dtype=np.float64)
    mask = np.asarray(measured, dtype=bool)
    labels = list(categories)
    n = len(labels)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must be ({n}, d) for {n} questions, got {emb.shape}")
    if cap.shape != (len(models), n) or mask.shape != cap.shape:
        raise ValueError(
            f"capability and measured must be (models, questions) = ({len(models)}, {n}); got "
            f"{cap.shape} and {mask.shape}"
        )
    if not np.isin(cap[mask], (0.0, 1.0)).all():
        raise ValueError("capability must hold only 0/1 in measured entries")
    emb = _unit_rows(emb)
    report = ReplayReport(
        models=list(models), questions=n, categories=len(set(labels)), settings=cfg
    )
    for seed in cfg.seeds:
        split = stratified_split(labels, cfg.test_fraction, seed)
        info, scores, sweep = _replay_split(emb, cap, mask, labels, list(models), split, cfg)
        report.splits.append(info)
        for name, metrics in scores.items():
            report.results.setdefault(name, []).append(metrics)
        for key, metrics in sweep.items():
            report.sweep.setdefault(key, []).append(metrics)
        if progress is not None:
            parts = [f"seed {seed}: {info.evaluated} test questions; top-1"]
            parts += [f"{name} {scores[name].top1:.4f}" for name in METHODS if name in scores]
            if info.shrunk is not None:
                parts.append(
                    f"(shrunk: N_sup_base={info.shrunk.n_sup_base}, "
                    f"temperature={info.shrunk.temperature}, strength={info.shrunk.strength:g})"
                )
            if info.hier is not None:
                parts.append(
                    f"(hier: temperature={info.hier.temperature:g}, "
                    f"strength={info.hier.strength:g})"
                )
            progress(" ".join(parts))
    return report


def _replay_split(
    emb: NDArray[np.float32],
    cap: NDArray[np.float64],
    mask: NDArray[np.bool_],
    labels: list[str],
    models: list[str],
    split: Split,
    cfg: ReplaySettings,
) -> tuple[SplitInfo, dict[str, Metrics], dict[tuple[int, float], Metrics]]:
    test = split.test[mask[:, split.test].sum(axis=0) >= 2]
    bank_cap, bank_mask = cap[:, split.bank], mask[:, split.bank]
    truth, truth_mask = cap[:, test].T, mask[:, test].T
    sims = similarity_matrix(emb[test], emb[split.bank])
    overall = core.global_accuracy(bank_cap, bank_mask)
    per_category = category_accuracy(bank_cap, bank_mask, [labels[i] for i in split.bank])

    def score(priors: NDArray[np.float64]) -> Metrics:
        return evaluate_rankings(priors, truth, truth_mask, cfg.coverage_k)

    scores: dict[str, Metrics] = {}
    choice: ShrunkChoice | None = None
    if "paper" in cfg.rules:
        scores["rps"] = score(
            rps_priors(sims, bank_cap, bank_mask, cfg.n_sup_base, cfg.gamma, rule=cfg.support_rule)
        )
    if "shrunk" in cfg.rules:
        choice = calibrate_shrunk(
            emb[split.bank],
            bank_cap,
            bank_mask,
            gamma=cfg.gamma,
            rule=cfg.support_rule,
            n_sup_grid=cfg.shrunk_n_sup_grid,
            temperature_grid=cfg.shrunk_temperature_grid,
            strength_grid=cfg.shrunk_strength_grid,
            queries=cfg.calibration_queries,
            seed=split.seed,
        )
        scores["rps-shrunk"] = score(
            shrunk_priors(
                sims,
                bank_cap,
                bank_mask,
                overall,
                choice.n_sup_base,
                cfg.gamma,
                choice.strength,
                temperature=choice.temperature,
                rule=cfg.support_rule,
            )
        )
    hier: HierChoice | None = None
    if "hier" in cfg.rules:
        bank_labels = [labels[i] for i in split.bank]
        hier = calibrate_hier(
            emb[split.bank],
            bank_cap,
            bank_mask,
            bank_labels,
            n_sup_base=cfg.n_sup_base,
            gamma=cfg.gamma,
            rule=cfg.support_rule,
            temperature_grid=cfg.hier_temperature_grid,
            strength_grid=cfg.hier_strength_grid,
            category_temperature=cfg.hier_category_temperature,
            category_strength=cfg.hier_category_strength,
            queries=cfg.hier_calibration_queries,
            seed=split.seed,
        )
        table = core.category_accuracy(bank_cap, bank_mask, bank_labels, hier.category_strength)
        scores["rps-hier"] = score(
            hier_priors(
                sims,
                bank_cap,
                bank_mask,
                bank_labels,
                table,
                overall,
                cfg.n_sup_base,
                cfg.gamma,
                hier.strength,
                temperature=hier.temperature,
                category_temperature=hier.category_temperature,
                rule=cfg.support_rule,
            )
        )
    scores["best-single"] = score(np.broadcast_to(overall, truth.shape).copy())
    scores["per-category"] = score(np.stack([per_category[labels[i]] for i in test]))
    scores["random"] = random_metrics(truth, truth_mask, cfg.coverage_k)
    scores["oracle"] = score(np.where(truth_mask, truth, 0.0))
    sweep = {
        (n_sup, gamma): score(
            rps_priors(sims, bank_cap, bank_mask, n_sup, gamma, rule=cfg.support_rule)
        )
        for n_sup in cfg.sweep_n_sup_base
        for gamma in cfg.sweep_gamma
    }
    info = SplitInfo(
        seed=split.seed,
        bank_questions=int(split.bank.shape[0]),
        test_questions=int(split.test.shape[0]),
        evaluated=int(test.shape[0]),
        skipped=int(split.test.shape[0] - test.shape[0]),
        with_unmeasured=int((~truth_mask).any(axis=1).sum()),
        best_single=models[int(np.argmax(overall))],
        shrunk=choice,
        hier=hier,
    )
    return info, scores, sweep

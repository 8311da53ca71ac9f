"""Prior rules beyond the paper, chosen by replay evaluation (smcs_graph.offline.evaluation).

`PriorRule` (declared in `smcs_graph.config`) names how priors are formed: "paper" (eq. 4,
`prior_scores`), "shrunk" (`shrunk_prior_scores`), "hier" (`hier_prior_scores`) or "learned"
(`smcs_graph.core.learned`, which blends its own estimate with "hier"). Both rules here
shrink each model's local accuracy on the support set toward a prior: its bank-wide accuracy
(shrunk), or the accuracy of the query's inferred category, itself shrunk toward the bank-wide
accuracy (hier).

Each rule is written once, for a batch: similarities (Q, n) and a `support` mask (Q, n) of each
row's support set give priors (Q, R); one query (n,) is a batch of one and gives (R,). The graph
passes one query's support-set columns, replay evaluation every test query against the whole
bank. The pieces (`support_weights`, `kernel_weights`, `category_share_matrix`, `shrink`) are
public for the leave-one-out calibration of replay evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph.config import PriorRule
from smcs_graph.core._common import reject_nan, rows, support_rows, vector

__all__ = [
    "PriorRule",
    "category_accuracy",
    "category_codes",
    "category_share_matrix",
    "category_shares",
    "global_accuracy",
    "hier_prior_scores",
    "kernel_weights",
    "shrink",
    "shrunk_category_table",
    "shrunk_prior_scores",
    "support_weights",
]


# --------------------------------------------------------------------------- bank-wide tables


def _bank_matrix(
    capability: ArrayLike, measured: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A whole bank's (R, N) capability matrix and its mask (None: all measured), checked."""
    cap = np.asarray(capability, dtype=np.float64)
    if cap.ndim != 2:
        raise ValueError(f"capability must be 2-D (R, N), got shape {cap.shape}")
    mask = np.ones(cap.shape, dtype=bool) if measured is None else np.asarray(measured, bool)
    if mask.shape != cap.shape:
        raise ValueError(f"measured has shape {mask.shape} but capability has shape {cap.shape}")
    return cap, mask


def global_accuracy(
    capability: ArrayLike, measured: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Each model's accuracy over its measured bank entries, (R,); 0.5 for a model with none.

    The prior that `shrunk_prior_scores` shrinks toward; compute it once per bank version.
    """
    cap, mask = _bank_matrix(capability, measured)
    counts = mask.sum(axis=1)
    correct = np.where(mask, cap, 0.0).sum(axis=1)
    acc: NDArray[np.float64] = np.where(counts > 0, correct / np.maximum(counts, 1), 0.5)
    return acc


def category_codes(labels: Sequence[str]) -> tuple[list[str], NDArray[np.intp]]:
    """The sorted distinct labels and each label's index among them."""
    names = sorted(set(labels))
    position = {name: j for j, name in enumerate(names)}
    codes = np.fromiter((position[c] for c in labels), dtype=np.intp, count=len(labels))
    return names, codes


def shrunk_category_table(
    correct: ArrayLike, counts: ArrayLike, strength: float
) -> NDArray[np.float64]:
    """A[m, c] = (correct[m, c] + b g_m) / (counts[m, c] + b) from per-category tallies (R, C),
    g_m = each model's accuracy over all its counted questions (0.5 with none); g_m where
    counts + b = 0. b = `strength` (a pseudo-count in questions)."""
    if not math.isfinite(strength) or strength < 0.0:
        raise ValueError(f"strength must be finite and >= 0, got {strength}")
    right = np.asarray(correct, dtype=np.float64)
    seen = np.asarray(counts, dtype=np.float64)
    total_right, total_seen = right.sum(axis=1), seen.sum(axis=1)
    g = np.where(total_seen > 0, total_right / np.maximum(total_seen, 1), 0.5)
    total = seen + strength
    table: NDArray[np.float64] = np.divide(
        right + strength * g[:, np.newaxis],
        total,
        out=np.broadcast_to(g[:, np.newaxis], total.shape).copy(),
        where=total > 0.0,
    )
    return table


def category_accuracy(
    capability: ArrayLike,
    measured: ArrayLike | None,
    categories: Sequence[str],
    strength: float = 0.0,
) -> dict[str, NDArray[np.float64]]:
    """Each model's accuracy per category, (R,) per label, shrunk toward its global accuracy.

    A[c, m] = (sum_{i in c} M[m,i] C[m,i] + b * g_m) / (sum_{i in c} M[m,i] + b), with g_m =
    `global_accuracy` over all columns and b = `strength` (a pseudo-count in questions). A
    model with no record in a category (and b = 0) gets g_m.
    """
    cap, mask = _bank_matrix(capability, measured)
    labels = [str(c) for c in categories]
    if len(labels) != cap.shape[1]:
        raise ValueError(f"categories has {len(labels)} entries for {cap.shape[1]} columns")
    names, codes = category_codes(labels)
    onehot = np.zeros((cap.shape[1], len(names)), dtype=np.float64)
    onehot[np.arange(cap.shape[1]), codes] = 1.0
    correct = np.where(mask, cap, 0.0) @ onehot  # (R, C)
    counts = mask.astype(np.float64) @ onehot
    table = shrunk_category_table(correct, counts, strength)
    return {name: table[:, j].copy() for j, name in enumerate(names)}


# --------------------------------------------------------------------------- the pieces


def support_weights(
    similarities: ArrayLike,
    temperature: float | None = None,
    *,
    support: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Weights of support questions for `shrunk_prior_scores`: max(S, 0), or exp((S - max S) / T).

    Works on one support set (n,) or on rows of many (Q, n), the maximum taken per row over its
    `support` (a mask of the same shape, zero weight outside it; None: every column).
    """
    sims = np.asarray(similarities, dtype=np.float64)
    mask = None if support is None else np.asarray(support, dtype=bool)
    if temperature is None:
        linear: NDArray[np.float64] = np.maximum(sims, 0.0)
        return linear if mask is None else np.where(mask, linear, 0.0)
    if sims.shape[-1] == 0:
        return np.zeros(sims.shape, dtype=np.float64)
    inside = sims if mask is None else np.where(mask, sims, -np.inf)
    peak = inside.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore"):  # outside the support only: zeroed below
        soft: NDArray[np.float64] = np.exp((sims - peak) / temperature)
    return soft if mask is None else np.where(mask, soft, 0.0)


def kernel_weights(
    similarities: ArrayLike, temperature: float, *, support: ArrayLike | None = None
) -> NDArray[np.float64]:
    """w_i = exp(-(1 - S_i) / T): a question identical to the query weighs 1 (0 outside `support`).

    Unlike `support_weights`, the scale is absolute: when even the nearest support questions
    are far from the query, their total weight is small and a prior dominates.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    weights: NDArray[np.float64] = np.exp((sims - 1.0) / temperature)
    if support is None:
        return weights
    masked: NDArray[np.float64] = np.where(np.asarray(support, dtype=bool), weights, 0.0)
    return masked


def category_share_matrix(
    similarities: ArrayLike,
    codes: ArrayLike,
    n_categories: int,
    temperature: float = 0.05,
    *,
    support: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """P(c | query) of each row, (Q, C) in code order (`category_codes`); one query: (C,).

    P(c | query) = sum_{i: code_i = c} u_i / sum_i u_i, u_i = exp((S_i - max S) / T) over the
    row's `support` (None: every column); a row without support is all 0.
    """
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"category temperature must be finite and > 0, got {temperature}")
    sims, single = rows(similarities, "similarities")
    labels = np.asarray(codes, dtype=np.intp)
    if labels.shape != (sims.shape[1],):
        raise ValueError(f"codes has shape {labels.shape} for {sims.shape[1]} columns")
    votes = support_weights(sims, temperature, support=support_rows(support, sims.shape))
    shares = np.zeros((sims.shape[0], n_categories), dtype=np.float64)
    for j in range(n_categories):
        shares[:, j] = votes[:, labels == j].sum(axis=1)
    total = shares.sum(axis=1, keepdims=True)
    out: NDArray[np.float64] = np.divide(
        shares, total, out=np.zeros_like(shares), where=total > 0.0
    )
    return out[0] if single else out


def category_shares(
    similarities: ArrayLike, categories: Sequence[str], temperature: float = 0.05
) -> dict[str, float]:
    """P(c | query) = sum_{i: c_i = c} u_i / sum_i u_i with u_i = exp((S_i - max S) / T).

    A similarity-weighted vote of the support questions' categories (the bank's categories are
    known; the query's is not). Empty support: an empty dict.
    """
    sims = vector(similarities, "similarities")
    reject_nan(sims, "similarities")
    labels = [str(c) for c in categories]
    if len(labels) != sims.shape[0]:
        raise ValueError(f"categories has {len(labels)} entries for {sims.shape[0]} similarities")
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"category temperature must be finite and > 0, got {temperature}")
    if sims.shape[0] == 0:
        return {}
    names, codes = category_codes(labels)
    row = category_share_matrix(sims, codes, len(names), temperature)
    return {name: float(row[j]) for j, name in enumerate(names)}


def shrink(
    correct: NDArray[np.float64],
    evidence: NDArray[np.float64],
    target: ArrayLike,
    strength: float,
) -> NDArray[np.float64]:
    """The shrunk accuracy (correct + a * t) / (evidence + a) of weighted support tallies.

    `correct` and `evidence` are (Q, R) (or (R,)); the target t (the prior accuracy) broadcasts
    to them. a = `strength` = 0 gives the local accuracy, and t for a model without evidence.
    """
    prior = np.broadcast_to(np.asarray(target, dtype=np.float64), correct.shape)
    if strength == 0.0:
        local: NDArray[np.float64] = np.divide(
            correct, evidence, out=np.array(prior, dtype=np.float64), where=evidence > 0.0
        )
        return local
    posterior: NDArray[np.float64] = (correct + strength * prior) / (evidence + strength)
    return posterior


def _support_outcomes(
    sims: NDArray[np.float64],
    capability: ArrayLike,
    measured: ArrayLike | None,
    prior: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """The capability (R, n) of the support columns and its measured mask, checked against
    `sims` (Q, n) and `prior` (R,): what the shrinkage rules weigh."""
    cap = np.asarray(capability, dtype=np.float64)
    if cap.ndim != 2 or cap.shape[1] != sims.shape[1]:
        raise ValueError(
            f"capability must be (R, {sims.shape[1]}) (the support-set columns), got {cap.shape}"
        )
    if prior.shape[0] != cap.shape[0]:
        raise ValueError(f"prior_accuracy has {prior.shape[0]} entries for {cap.shape[0]} models")
    mask = np.ones(cap.shape, dtype=bool) if measured is None else np.asarray(measured, bool)
    if mask.shape != cap.shape:
        raise ValueError(f"measured has shape {mask.shape} but capability has shape {cap.shape}")
    if not np.isfinite(cap[mask]).all():
        raise ValueError("capability has a non-finite value in a measured entry")
    return cap, mask


def _tallies(
    weights: NDArray[np.float64], cap: NDArray[np.float64], mask: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Weighted correct answers and weighted measured entries of each row, (Q, R) each."""
    correct: NDArray[np.float64] = weights @ np.where(mask, cap, 0.0).T
    evidence: NDArray[np.float64] = weights @ mask.T.astype(np.float64)
    return correct, evidence


def _check_strength(strength: float) -> None:
    if not math.isfinite(strength) or strength < 0.0:
        raise ValueError(f"strength must be finite and >= 0, got {strength}")


# --------------------------------------------------------------------------- the rules


def shrunk_prior_scores(
    similarities: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None,
    prior_accuracy: ArrayLike,
    strength: float,
    *,
    temperature: float | None = None,
    support: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Empirical-Bayes priors: V[m] = (sum_i w_i C[m,i] + a * g_m) / (sum_i w_i M[m,i] + a).

    The weighted accuracy of each model on the support set (measured entries M only), shrunk
    toward its bank-wide accuracy g_m with strength a (a pseudo-count in units of weight).
    Weights: temperature None gives w_i = max(S_i, 0); a temperature T gives
    w_i = exp((S_i - max S) / T), so the nearest question weighs 1 and the others decay.
    Unlike eq. 4, a model is not favoured for having more measured neighbours, and a thin
    local record does not override a strong global one. a = 0 is the plain local accuracy (a
    model without local evidence keeps g_m).

    One query: `similarities` (n,) of the support set, priors (R,). A batch: (Q, n) and
    `support` (Q, n) marking each row's support set (None: every column), priors (Q, R).
    """
    sims, single = rows(similarities, "similarities")
    reject_nan(sims, "similarities")
    g = vector(prior_accuracy, "prior_accuracy")
    _check_strength(strength)
    if temperature is not None and not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and > 0 (or None), got {temperature}")
    cap, mask = _support_outcomes(sims, capability, measured, g)
    weights = support_weights(sims, temperature, support=support_rows(support, sims.shape))
    priors = shrink(*_tallies(weights, cap, mask), g, strength)
    return priors[0] if single else priors


def _category_rows(
    names: Sequence[str], table: Mapping[str, ArrayLike], fallback: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The (C, R) accuracy of each category in `names` order; a label missing from `table`
    gets `fallback`."""
    out = np.empty((len(names), fallback.shape[0]), dtype=np.float64)
    for j, name in enumerate(names):
        row = table.get(name)
        acc = fallback if row is None else vector(row, f"category_table[{name!r}]")
        if acc.shape != fallback.shape:
            raise ValueError(
                f"category_table[{name!r}] has {acc.shape[0]} entries for "
                f"{fallback.shape[0]} models"
            )
        out[j] = acc
    return out


def hier_prior_scores(
    similarities: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None,
    categories: Sequence[str],
    category_table: Mapping[str, ArrayLike],
    prior_accuracy: ArrayLike,
    strength: float,
    *,
    temperature: float = 0.1,
    category_temperature: float = 0.05,
    support: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Hierarchical empirical-Bayes priors: local accuracy -> inferred category -> global.

        V[m]  = (sum_i w_i M[m,i] C[m,i] + a * pi_m) / (sum_i w_i M[m,i] + a)
        w_i   = exp(-(1 - S_i) / T)                                  (`kernel_weights`)
        pi_m  = sum_c P(c | query) * A[c, m]
        P(c | query) = sum_{i: c_i = c} u_i / sum_i u_i,  u_i = exp((S_i - max S) / T_c)
        A[c, m] = bank accuracy of model m in category c, shrunk toward g_m
                  (`category_accuracy`, passed in as `category_table`)

    over the support set i (its `categories` c_i). The query's category is never needed: it is
    inferred from its nearest bank questions. a = `strength` is a pseudo-count in kernel units
    (a question identical to the query weighs 1); a = 0 is the plain kernel-weighted local
    accuracy (a model without local evidence keeps pi_m). A category missing from the table,
    or an empty support set, falls back to `prior_accuracy` (g_m).

    One query: `similarities` (n,) of the support set, priors (R,). A batch: (Q, n) and
    `support` (Q, n) marking each row's support set (None: every column), priors (Q, R);
    `categories` label the n columns.
    """
    sims, single = rows(similarities, "similarities")
    reject_nan(sims, "similarities")
    g = vector(prior_accuracy, "prior_accuracy")
    _check_strength(strength)
    if not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    cap, mask = _support_outcomes(sims, capability, measured, g)
    labels = [str(c) for c in categories]
    if len(labels) != sims.shape[1]:
        raise ValueError(f"categories has {len(labels)} entries for {sims.shape[1]} similarities")
    chosen = support_rows(support, sims.shape)
    names, codes = category_codes(labels)
    accuracy = _category_rows(names, category_table, g)
    shares = category_share_matrix(sims, codes, len(names), category_temperature, support=chosen)
    pi = np.where(shares.sum(axis=1, keepdims=True) == 0.0, g, shares @ accuracy)
    weights = kernel_weights(sims, temperature, support=chosen)
    priors = shrink(*_tallies(weights, cap, mask), pi, strength)
    return priors[0] if single else priors

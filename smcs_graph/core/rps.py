"""Stage 1 of SMCS, Retrieval-based Prior Selection: similarities, eq. 3, eq. 4 and top-K.

Eq. 3 and eq. 4 take one query (n,) or a batch of queries (Q, n): the graph scores one
question, replay evaluation thousands, through the same functions.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph.core._common import Rule, reject_nan, rows, support_rows, unit_rows, vector

__all__ = [
    "cosine_similarities",
    "prior_scores",
    "select_top_k",
    "support_mask",
    "support_set",
    "support_threshold",
]


def cosine_similarities(query: ArrayLike, bank: ArrayLike) -> NDArray[np.float64]:
    """RPS step 1: S_i = cos(query, bank_i), the similarities eqs. 3-4 use (zero vectors -> 0)."""
    q = vector(query, "query")
    b = _matrix(bank, "bank", "(N, d)")
    if b.shape[1] != q.shape[0]:
        raise ValueError(
            f"query has dimension {q.shape[0]} but bank rows have dimension {b.shape[1]}"
        )
    sims: NDArray[np.float64] = unit_rows(b) @ unit_rows(q)
    # Rounding can push |cos| a hair past 1.
    return np.clip(sims, -1.0, 1.0)


def _matrix(value: ArrayLike, name: str, axes: str) -> NDArray[np.float64]:
    """`value` as a 2-D float array; ValueError naming its `axes` if it is not 2-D."""
    out = np.asarray(value, dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D {axes}, got shape {out.shape}")
    return out


def _thresholds(
    sims: NDArray[np.float64], n_sup_base: int, gamma: float, rule: Rule
) -> NDArray[np.float64]:
    """Eq. 3's threshold of each row of `sims` (Q, N), N > 0."""
    rank = n_sup_base if rule == "paper" else n_sup_base + 1
    n = sims.shape[1]
    if n < rank:  # fewer questions than the rank: the whole bank is the neighbourhood
        return gamma * sims.min(axis=1)
    out: NDArray[np.float64] = gamma * np.partition(sims, n - rank, axis=1)[:, n - rank]
    return out


def _check_support_args(n_sup_base: int, gamma: float, rule: Rule) -> None:
    if n_sup_base < 1:
        raise ValueError(f"n_sup_base must be >= 1, got {n_sup_base}")
    if not math.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    if rule not in ("paper", "authors"):
        raise ValueError(f"rule must be 'paper' or 'authors', got {rule!r}")


def support_threshold(
    similarities: ArrayLike,
    n_sup_base: int = 400,
    gamma: float = 0.95,
    *,
    rule: Rule = "paper",
) -> float:
    """Eq. 3's threshold gamma * S_(N_sup_base) (rule="authors": S_(N_sup_base+1)); NaN if empty."""
    sims = vector(similarities, "similarities")
    reject_nan(sims, "similarities")
    if sims.shape[0] == 0:
        return math.nan
    return float(_thresholds(sims[np.newaxis, :], n_sup_base, gamma, rule)[0])


def support_mask(
    similarities: ArrayLike,
    n_sup_base: int = 400,
    gamma: float = 0.95,
    rule: Rule = "paper",
) -> NDArray[np.bool_]:
    """Eq. 3 as a mask of each row: S_i >= gamma * S_(N_sup_base) (see `support_set`).

    `similarities` is one query's (N,) or a batch's (Q, N); the mask has the same shape.
    """
    sims, single = rows(similarities, "similarities")
    reject_nan(sims, "similarities")
    _check_support_args(n_sup_base, gamma, rule)
    if sims.shape[1] == 0:
        mask: NDArray[np.bool_] = np.zeros(sims.shape, dtype=bool)
    else:
        threshold = _thresholds(sims, n_sup_base, gamma, rule)[:, np.newaxis]
        mask = sims >= threshold if rule == "paper" else sims > threshold
    return mask[0] if single else mask


def support_set(
    similarities: ArrayLike,
    n_sup_base: int = 400,
    gamma: float = 0.95,
    *,
    rule: Rule = "paper",
) -> NDArray[np.intp]:
    """Eq. 3: I = {i : S_i >= gamma * S_(N_sup_base)}; rule="authors": '>' vs S_(N_sup_base+1).

    The reference S_(k) is the k-th largest similarity. The authors' code scales similarities by
    100 before thresholding; that scaling multiplies both sides of the comparison and cancels,
    so it is not reproduced. When the bank holds fewer than k questions, the reference is the
    smallest similarity (the whole bank is the neighbourhood).

    The formula is applied as written, so note:
    - with gamma < 1 the set can hold more than `n_sup_base` questions (all within the slack);
    - with a negative reference, gamma * S_(k) > S_(k): the threshold rises above the
      reference and the set can shrink, even to empty (e.g. `n_sup_base=1` and every
      similarity negative); the caller then has an all-zero prior.

    Returns indices sorted by similarity descending, ties by index ascending.
    """
    sims = vector(similarities, "similarities")
    idx = np.flatnonzero(support_mask(sims, n_sup_base, gamma, rule))
    # lexsort: last key is primary -> similarity descending, then index ascending.
    order = np.lexsort((idx, -sims[idx]))
    return idx[order].astype(np.intp, copy=False)


def prior_scores(
    similarities: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike | None = None,
    *,
    weighted: bool = True,
    support: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Eq. 4: V[m] = sum_i S_i * C[m, i] over the support set; weighted=False counts correct.

    One query: `similarities` (n,) and `capability` (R, n) hold the support-set columns, and
    the priors are (R,). A batch: `similarities` (Q, n), priors (Q, R); `support` (Q, n) marks
    each row's support set when the columns are the whole bank (None: every column counts). An
    entry whose `measured` mask is False contributes nothing (neither correct nor wrong), and
    its capability value is ignored, so NaN may stand for "not profiled" there.
    """
    sims, single = rows(similarities, "similarities")
    reject_nan(sims, "similarities")
    cap = _matrix(capability, "capability", "(R, n)")
    if cap.shape[1] != sims.shape[1]:
        raise ValueError(
            f"capability has {cap.shape[1]} columns but similarities has {sims.shape[1]} "
            "entries; pass the capability columns of the support set"
        )
    if measured is None:
        mask = np.ones(cap.shape, dtype=bool)
    else:
        mask = np.asarray(measured)
        if mask.shape != cap.shape:
            raise ValueError(
                f"measured has shape {mask.shape} but capability has shape {cap.shape}"
            )
        if mask.dtype != np.bool_:
            mask = mask.astype(bool)
    if not np.isfinite(cap[mask]).all():
        raise ValueError("capability has a non-finite value in a measured entry")
    contrib = np.where(mask, cap, 0.0)
    weights = sims if weighted else np.ones_like(sims)
    chosen = support_rows(support, sims.shape)
    if chosen is not None:
        weights = np.where(chosen, weights, 0.0)
    priors: NDArray[np.float64] = weights @ contrib.T
    return priors[0] if single else priors


def select_top_k(priors: ArrayLike, k: int) -> NDArray[np.intp]:
    """RPS step 4: the top-k positions by prior (eq. 4's V), descending; ties: lower index first.

    k is capped at the pool size.
    """
    v = vector(priors, "priors")
    reject_nan(v, "priors")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    # A stable sort of -V keeps pool order among equal priors.
    order = np.argsort(-v, kind="stable")[:k]
    return order.astype(np.intp, copy=False)

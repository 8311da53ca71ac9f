"""Evaluation of priors: eq. 8, the pairwise ranking score."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["pairwise_ranking_score"]

# Elements per broadcast chunk in `pairwise_ranking_score` (bounds memory at large Q x R x R).
_CHUNK_ELEMENTS = 1 << 22


def pairwise_ranking_score(
    priors: ArrayLike,
    correct: ArrayLike,
    measured: ArrayLike | None = None,
    *,
    ties: Literal["strict", "half"] = "strict",
) -> float:
    """Eq. 8: over all (j correct, k wrong) model pairs of each question, the share with V_j > V_k.

    `priors` and `correct` are (Q, R) (a 1-D pair is one question); only measured entries
    form pairs. ties="half" counts V_j == V_k as 0.5. No pair anywhere gives NaN.
    """
    v = np.asarray(priors, dtype=np.float64)
    c = np.asarray(correct)
    if v.ndim == 1:
        v = v[np.newaxis, :]
    if c.ndim == 1:
        c = c[np.newaxis, :]
    if v.ndim != 2:
        raise ValueError(f"priors must be 2-D (Q, R), got shape {v.shape}")
    if c.shape != v.shape:
        raise ValueError(f"correct has shape {c.shape} but priors has shape {v.shape}")
    if ties not in ("strict", "half"):
        raise ValueError(f"ties must be 'strict' or 'half', got {ties!r}")
    if measured is None:
        mask = np.ones(v.shape, dtype=bool)
    else:
        mask = np.asarray(measured)
        if mask.ndim == 1:
            mask = mask[np.newaxis, :]
        if mask.shape != v.shape:
            raise ValueError(f"measured has shape {mask.shape} but priors has shape {v.shape}")
        mask = mask.astype(bool)
    c_values = c[mask].astype(np.float64)
    if not np.isin(c_values, (0.0, 1.0)).all():
        raise ValueError("correct must hold only 0/1 (or bool) in measured entries")
    if np.isnan(v[mask]).any():
        raise ValueError("priors contains NaN in a measured entry")
    is_correct = mask & (np.where(mask, c, 0).astype(np.float64) == 1.0)
    is_wrong = mask & ~is_correct

    n_q, n_r = v.shape
    step = max(1, _CHUNK_ELEMENTS // max(1, n_r * n_r))
    wins = 0.0
    pairs = 0
    for start in range(0, n_q, step):
        sl = slice(start, start + step)
        # pair[q, j, k]: model j correct and model k wrong on question q.
        pair = is_correct[sl, :, np.newaxis] & is_wrong[sl, np.newaxis, :]
        vj = v[sl, :, np.newaxis]
        vk = v[sl, np.newaxis, :]
        pairs += int(pair.sum())
        wins += float((pair & (vj > vk)).sum())
        if ties == "half":
            wins += 0.5 * float((pair & (vj == vk)).sum())
    if pairs == 0:
        return math.nan
    return wins / pairs

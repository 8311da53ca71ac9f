"""Array checks and small numeric helpers shared by the stages of `smcs_graph.core`."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Rule = Literal["paper", "authors"]
"""Which form of a formula: the paper's, or the authors' released code's (see the package)."""


def vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """A 1-D float64 array, or ValueError naming the argument."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def rows(values: ArrayLike, name: str) -> tuple[NDArray[np.float64], bool]:
    """Float64 rows (Q, n) of one query (n,) or a batch (Q, n), and whether it was one query."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        return arr[np.newaxis, :], True
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D (n,) or 2-D (Q, n), got shape {arr.shape}")
    return arr, False


def support_rows(support: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    """The `support` mask as rows of `shape` (Q, n); None stays None (every column counts)."""
    if support is None:
        return None
    mask = np.asarray(support, dtype=bool)
    if mask.ndim == 1:
        mask = mask[np.newaxis, :]
    if mask.shape != shape:
        raise ValueError(f"support has shape {mask.shape} but similarities has shape {shape}")
    return mask


def reject_nan(arr: NDArray[np.float64], name: str) -> None:
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")


def unit_rows(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows scaled to unit length; zero rows stay zero (their similarities are then 0)."""
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    safe = np.where(norms > 0.0, norms, 1.0)
    out: NDArray[np.float64] = matrix / safe
    return out


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    """Numerically stable softmax (shifted by the maximum so exp never overflows)."""
    weights = np.exp(logits - logits.max())
    out: NDArray[np.float64] = weights / weights.sum()
    return out


def uniform(size: int) -> NDArray[np.float64]:
    return np.full(size, 1.0 / size, dtype=np.float64)

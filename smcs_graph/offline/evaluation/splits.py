"""Seeded bank/test splits of replay evaluation, stratified by category."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Split", "stratified_split"]


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

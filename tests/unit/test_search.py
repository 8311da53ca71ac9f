"""VectorIndex.support returns exactly core.support_set on the exact similarities."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank.index import Precision, VectorIndex

PRECISIONS: tuple[Precision, ...] = ("int8", "float32")


def clustered(n: int, d: int, clusters: int, seed: int, noise: float = 0.8) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, d))
    rows = centers[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d))
    return rows.astype(np.float32)


def check(
    index: VectorIndex, query: NDArray[np.float64], n_sup: int, gamma: float, rule: core.Rule
) -> None:
    got = index.support(query, n_sup, gamma, rule=rule)
    sims = index.similarities(query)
    want = core.support_set(sims, n_sup, gamma, rule=rule)
    np.testing.assert_array_equal(got.indices, want)
    np.testing.assert_array_equal(got.similarities, sims[want])
    assert got.threshold == core.support_threshold(sims, n_sup, gamma, rule=rule)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("seed", range(4))
def test_equals_core_support_set_on_random_banks(precision: Precision, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    bank = clustered(3000, 48, clusters=12, seed=seed)
    index = VectorIndex(bank, precision=precision)
    for _ in range(5):
        query = bank[rng.integers(0, 3000)] + rng.normal(0.0, 0.5, 48)
        for n_sup, gamma, rule in [
            (400, 0.95, "paper"),
            (50, 1.0, "paper"),
            (200, 0.9, "authors"),
            (1, 0.95, "paper"),
            (100, 1.2, "paper"),
        ]:
            check(index, query, n_sup, gamma, rule)  # type: ignore[arg-type]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_first_pass_rescoring_is_a_small_part_of_a_clustered_bank(precision: Precision) -> None:
    bank = clustered(20000, 64, clusters=50, seed=7, noise=0.5)
    index = VectorIndex(bank, precision=precision)
    result = index.support(bank[0], 400, 0.95)
    assert 400 <= result.indices.shape[0] <= result.rescored < 20000 // 2


@pytest.mark.parametrize("precision", PRECISIONS)
def test_ties_from_duplicate_rows_are_kept_whole_and_ordered_by_row(precision: Precision) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    # Every vector appears 5 times, scattered: the threshold falls inside groups of ties.
    bank = np.concatenate([base] * 5)[rng.permutation(200)]
    index = VectorIndex(bank, precision=precision)
    for n_sup in (1, 7, 12, 33, 200):
        for rule in ("paper", "authors"):
            query = base[n_sup % 40] + 0.3 * rng.standard_normal(16)
            check(index, query, n_sup, 1.0, rule)  # type: ignore[arg-type]
            got = index.support(query, n_sup, 1.0, rule=rule)  # type: ignore[arg-type]
            sims = got.similarities
            assert np.all(np.diff(sims) <= 0.0)
            for value in np.unique(sims):
                rows = got.indices[sims == value]
                assert np.all(np.diff(rows) > 0), "equal similarities must be ordered by row"
                # a tie group is never split by the threshold
                assert rows.shape[0] == int((index.similarities(query) == value).sum())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_edge_cases_match_the_reference(precision: Precision) -> None:
    rng = np.random.default_rng(5)
    bank = rng.standard_normal((60, 8)).astype(np.float32)
    bank[3] = 0.0  # a zero row: similarity 0 to everything
    index = VectorIndex(bank, precision=precision)
    query = rng.standard_normal(8)
    for n_sup, gamma in [(60, 0.95), (61, 0.95), (500, 0.5), (10, 0.0), (10, -0.5), (5, 3.0)]:
        for rule in ("paper", "authors"):
            check(index, query, n_sup, gamma, rule)  # type: ignore[arg-type]
    # a query pointing away from everything: negative similarities
    away = -bank.sum(axis=0)
    check(index, away, 1, 0.95, "paper")
    check(index, np.zeros(8), 5, 0.95, "paper")  # zero query: every similarity 0


def test_empty_index_and_bad_input() -> None:
    empty = VectorIndex(np.zeros((0, 4), dtype=np.float32))
    result = empty.support(np.ones(4))
    assert result.indices.shape == (0,) and np.isnan(result.threshold)
    index = VectorIndex(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="dimension"):
        index.support(np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        index.support(np.array([np.nan, 0, 0, 0]))
    with pytest.raises(ValueError, match="n_sup_base"):
        index.support(np.ones(4), 0)
    with pytest.raises(ValueError, match="precision"):
        VectorIndex(np.eye(4), precision="float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        VectorIndex(np.ones(4))


def test_int8_copy_saves_memory_and_rows_are_normalized() -> None:
    bank = clustered(1000, 32, clusters=4, seed=1) * 7.0
    int8 = VectorIndex(bank, precision="int8")
    plain = VectorIndex(bank, precision="float32")
    assert int8.size == 1000 and int8.dimension == 32
    assert int8.nbytes < 1.3 * plain.nbytes
    sims = plain.similarities(bank[0])
    assert sims[0] == pytest.approx(1.0)
    np.testing.assert_allclose(sims, core.cosine_similarities(bank[0], bank), atol=1e-6)

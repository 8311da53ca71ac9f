"""The selection rules beyond the paper: global_accuracy and shrunk_prior_scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smcs_graph import core


def test_global_accuracy_over_measured_entries() -> None:
    cap = np.array([[1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]], dtype=np.float64)
    measured = np.array([[True] * 4, [True, True, False, False], [False] * 4])
    np.testing.assert_allclose(core.global_accuracy(cap, measured), [0.75, 0.0, 0.5])
    np.testing.assert_allclose(core.global_accuracy(cap), [0.75, 0.25, 1.0])
    with pytest.raises(ValueError, match="2-D"):
        core.global_accuracy(np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        core.global_accuracy(cap, measured[:, :2])


def test_shrunk_priors_known_values() -> None:
    sims = np.array([0.8, 0.5, -0.2])
    cap = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=np.float64)
    measured = np.array([[True, True, True], [True, True, True], [False, True, True]])
    g = np.array([0.5, 0.9, 0.2])
    # weights (0.8, 0.5, 0); model 2 has only question 1 (wrong) and 2 (weight 0) measured
    got = core.shrunk_prior_scores(sims, cap, measured, g, 1.0)
    np.testing.assert_allclose(
        got, [(1.3 + 0.5) / 2.3, (0.8 + 0.9) / 2.3, (0.0 + 0.2) / 1.5], rtol=1e-12
    )
    local = core.shrunk_prior_scores(sims, cap, measured, g, 0.0)
    np.testing.assert_allclose(local, [1.0, 0.8 / 1.3, 0.0])


def test_temperature_weights_decay_from_the_nearest_question() -> None:
    sims = np.array([0.9, 0.8, 0.5])
    np.testing.assert_allclose(
        core.support_weights(sims, 0.1), np.exp(np.array([0.0, -1.0, -4.0])), rtol=1e-12
    )
    np.testing.assert_allclose(core.support_weights(np.array([-0.2, 0.3])), [0.0, 0.3])
    rows = core.support_weights(np.array([[0.9, 0.8], [0.2, 0.4]]), 0.1)
    np.testing.assert_allclose(rows.max(axis=1), [1.0, 1.0])  # the nearest per row weighs 1
    cap = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float64)
    g = np.array([0.5, 0.5])
    got = core.shrunk_prior_scores(sims, cap, None, g, 1.0, temperature=0.1)
    w = np.exp(np.array([0.0, -1.0, -4.0]))
    np.testing.assert_allclose(
        got, [(1.0 + 0.5) / (w.sum() + 1.0), (w[1] + w[2] + 0.5) / (w.sum() + 1.0)], rtol=1e-12
    )
    # a very low temperature follows the nearest question alone
    sharp = core.shrunk_prior_scores(sims, cap, None, g, 0.0, temperature=1e-3)
    np.testing.assert_allclose(sharp, [1.0, 0.0], atol=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        core.shrunk_prior_scores(sims, cap, None, g, 1.0, temperature=0.0)


def test_no_local_evidence_keeps_the_global_accuracy() -> None:
    sims = np.array([0.7, 0.6])
    cap = np.zeros((2, 2))
    measured = np.array([[True, True], [False, False]])
    g = np.array([0.4, 0.65])
    for strength in (0.0, 3.0):
        got = core.shrunk_prior_scores(sims, cap, measured, g, strength)
        assert got[1] == pytest.approx(0.65)
    empty = core.shrunk_prior_scores(np.empty(0), np.zeros((2, 0)), None, g, 0.0)
    np.testing.assert_allclose(empty, g)


def test_more_measured_neighbours_do_not_raise_the_prior() -> None:
    """Eq. 4 sums, so a model measured on more of the support set wins; the shrunk rule does not."""
    sims = np.full(4, 0.5)
    cap = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=np.float64)
    measured = np.array([[True] * 4, [True, False, False, False]])
    paper = core.prior_scores(sims, cap, measured)
    assert paper[0] > paper[1]
    shrunk = core.shrunk_prior_scores(sims, cap, measured, np.array([0.5, 0.5]), 0.0)
    assert shrunk[1] > shrunk[0]  # 1 of 1 correct beats 2 of 4


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=1, max_value=5),
    st.floats(min_value=0.0, max_value=1e6),
    st.integers(min_value=0, max_value=10_000),
)
def test_shrunk_priors_lie_between_local_and_global(
    n: int, r: int, strength: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    sims = rng.uniform(0.05, 1.0, n)
    cap = (rng.random((r, n)) < 0.5).astype(np.float64)
    g = rng.random(r)
    local = core.shrunk_prior_scores(sims, cap, None, g, 0.0)
    got = core.shrunk_prior_scores(sims, cap, None, g, strength)
    low, high = np.minimum(local, g), np.maximum(local, g)
    assert np.all(got >= low - 1e-12) and np.all(got <= high + 1e-12)


def test_bad_input_is_named() -> None:
    sims, cap, g = np.ones(2), np.ones((2, 2)), np.ones(2)
    with pytest.raises(ValueError, match="strength"):
        core.shrunk_prior_scores(sims, cap, None, g, -1.0)
    with pytest.raises(ValueError, match="support-set columns"):
        core.shrunk_prior_scores(sims, np.ones((2, 3)), None, g, 1.0)
    with pytest.raises(ValueError, match="prior_accuracy"):
        core.shrunk_prior_scores(sims, cap, None, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        core.shrunk_prior_scores(np.array([np.nan, 1.0]), cap, None, g, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        core.shrunk_prior_scores(sims, np.array([[np.nan, 1], [1, 1]]), None, g, 1.0)
    masked = np.array([[False, True], [True, True]])
    got = core.shrunk_prior_scores(sims, np.array([[np.nan, 1], [1, 1]]), masked, g, 1.0)
    assert np.isfinite(got).all()  # NaN may stand for "not profiled" where masked

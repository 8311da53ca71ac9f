"""The learned prior rule (`core.learned`), its calibration measures, and its replay choice."""

from __future__ import annotations

import numpy as np
import pytest

from smcs_graph.core import learned
from smcs_graph.offline.evaluation.comparison import paired
from smcs_graph.offline.evaluation.learned import calibrate_learned
from smcs_graph.offline.evaluation.metrics import Metrics
from smcs_graph.offline.evaluation.probability import (
    expected_calibration_error,
    platt,
    reliability,
)


def _planted(n: int = 6000, k: int = 3, r: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    theta = rng.normal(scale=1.5, size=(r, k))
    bias = rng.normal(scale=0.5, size=r)
    p = learned.sigmoid(x @ theta.T + bias)
    y = (rng.random((n, r)) < p).astype(np.float64).T  # (R, N)
    return x, theta, bias, y


def test_fit_recovers_planted_parameters() -> None:
    x, theta, bias, y = _planted()
    fit = learned.fit_models(x, y, None, penalty=1e-3)
    np.testing.assert_allclose(fit.theta, theta, atol=0.12)
    np.testing.assert_allclose(fit.bias, bias, atol=0.12)


def test_masked_cells_are_ignored_not_wrong() -> None:
    x, _, _, y = _planted(r=1)
    measured = np.random.default_rng(1).random(y.shape) < 0.5
    garbage = np.where(measured, y, 0.0)  # unmeasured cells set to "wrong"
    flipped = np.where(measured, y, 1.0)  # ... or to "right"
    a = learned.fit_model(x, garbage[0], measured[0], 1.0)
    b = learned.fit_model(x, flipped[0], measured[0], 1.0)
    c = learned.fit_model(x[measured[0]], y[0, measured[0]], None, 1.0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[0], c[0], atol=1e-9)
    # Counting them as wrong would move the fit: the mask is what keeps it.
    d = learned.fit_model(x, garbage[0], None, 1.0)
    assert abs(d[1] - a[1]) > 0.1


def test_refit_of_one_model_leaves_the_others_bit_identical() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(800, 12))
    cap = (rng.random((3, 800)) < 0.6).astype(np.float64)
    measured = rng.random((3, 800)) < 0.9
    prior = learned.LearnedPrior.fit(emb, cap, measured, ["a", "b", "c"], None, rank=4, penalty=1.0)
    new = (rng.random(800) < 0.3).astype(np.float64)
    grown = prior.refit_model("d", emb, new, np.ones(800, bool))
    changed = grown.refit_model("b", emb, new, np.ones(800, bool))
    for name in ("a", "c"):
        assert np.array_equal(prior.models[name][0], changed.models[name][0])
        assert prior.models[name][1] == changed.models[name][1]
    assert changed.question_map is prior.question_map and changed.blend == prior.blend
    assert not np.array_equal(changed.models["b"][0], prior.models["b"][0])
    # A refit on the same data is the fit itself (one code path): bit-identical.
    again = prior.refit_model("a", emb, cap[0], measured[0])
    assert np.array_equal(again.models["a"][0], prior.models["a"][0])
    assert set(grown.models) == {"a", "b", "c", "d"}
    probs = grown.p_correct(emb[:5], ["a", "d", "unknown"], np.full((5, 3), 0.5))
    assert probs.shape == (5, 3) and np.allclose(probs[:, 2], 0.5)


def test_question_map_is_whitened_pca() -> None:
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(500, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    qmap = learned.fit_question_map(emb, 3)
    f = qmap(emb)
    np.testing.assert_allclose(np.cov(f.T), np.eye(3), atol=1e-8)
    assert np.abs(qmap.components[0] * 5.0).argmax() == 0  # the widest axis first


def test_blend_is_fitted_on_held_out_predictions() -> None:
    rng = np.random.default_rng(4)
    truth = rng.random((4000, 1)) < 0.5
    good = np.where(truth, 0.8, 0.2)  # an informative kNN estimate
    noise = rng.normal(size=(4000, 1))  # an uninformative learned logit
    blend = learned.fit_blend(noise, good, truth.astype(float))
    assert blend.knn_weight > 0.9 and abs(blend.learned_weight) < 0.1


def test_ece_against_a_hand_example() -> None:
    # Bin [0.2, 0.3): P 0.25 twice, outcomes 0, 1 -> |0.5 - 0.25| = 0.25, weight 2/4.
    # Bin [0.9, 1.0]: P 0.9 and 1.0, outcomes 1, 1 -> |1 - 0.95| = 0.05, weight 2/4.
    p = np.array([[0.25, 0.25], [0.9, 1.0]])
    y = np.array([[0.0, 1.0], [1.0, 1.0]])
    assert expected_calibration_error(p, y) == pytest.approx(0.5 * 0.25 + 0.5 * 0.05)
    # An unmeasured entry is left out, not counted wrong.
    m = np.array([[True, True], [True, False]])
    assert expected_calibration_error(p, y, m) == pytest.approx(2 / 3 * 0.25 + 1 / 3 * 0.1)
    table = reliability(p, y)
    assert [(b.count, b.predicted, b.observed) for b in table] == [
        (2, 0.25, 0.5),
        (2, pytest.approx(0.95), 1.0),
    ]


def test_platt_calibrates_a_monotone_score() -> None:
    rng = np.random.default_rng(5)
    score = rng.normal(size=20000)
    y = (rng.random(20000) < learned.sigmoid(2.0 * score - 0.5)).astype(float)
    scaling = platt(score, y)
    assert scaling.scale == pytest.approx(2.0, abs=0.1)
    assert scaling.offset == pytest.approx(-0.5, abs=0.1)
    assert expected_calibration_error(scaling(score), y) < 0.02


def test_paired_uses_ddof_1_and_counts_wins() -> None:
    def m(top1: float) -> Metrics:
        return Metrics(top1=top1, coverage={}, pairwise=0.5, questions=10)

    results = {"a": [m(0.7), m(0.8), m(0.6)], "b": [m(0.6), m(0.8), m(0.7)]}
    p = paired(results, "a", "b")
    assert (p.wins, p.ties, p.losses) == (1, 1, 1)
    assert p.mean == pytest.approx(0.0, abs=1e-12)
    assert p.std == pytest.approx(np.std([0.1, 0.0, -0.1], ddof=1))


def test_calibrate_learned_chooses_on_the_bank_and_names_an_edge() -> None:
    rng = np.random.default_rng(6)
    emb = rng.normal(size=(900, 8))
    theta = rng.normal(scale=2.0, size=(3, 8))
    cap = (rng.random((3, 900)) < learned.sigmoid(emb @ theta.T).T).astype(np.float64)
    measured = np.ones(cap.shape, bool)
    rows = np.arange(900)
    knn = np.full((900, 3), 0.5)
    choice = calibrate_learned(
        emb, cap, measured, rows, knn, rank_grid=(2, 8), penalty_grid=(0.1, 10.0), folds=3
    )
    assert choice.rank == 8 and "rank" in choice.at_edge  # the signal needs all 8 dimensions
    assert choice.blend.learned_weight > 0.5 and choice.cv_top1 > 0.5

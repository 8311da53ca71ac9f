"""Replay evaluation on synthetic arrays: splits, vectorized priors, metrics, methods."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from smcs_graph import QuestionBank, core
from smcs_graph.core import category_accuracy, support_mask
from smcs_graph.core.learned import fit_question_map
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.errors import ConfigError
from smcs_graph.offline.evaluation import (
    ReplaySettings,
    load_replay_data,
    query_text,
    render_json,
    render_markdown,
    render_text,
    replay_data_from_bank,
    run_replay,
)
from smcs_graph.offline.evaluation.calibration import calibrate_hier, calibrate_shrunk
from smcs_graph.offline.evaluation.embeddings import cached_embeddings, texts_key
from smcs_graph.offline.evaluation.learned import calibrate_learned
from smcs_graph.offline.evaluation.metrics import evaluate_rankings, random_metrics
from smcs_graph.offline.evaluation.priors import (
    hier_priors,
    rps_priors,
    shrunk_priors,
    similarity_matrix,
)
from smcs_graph.offline.evaluation.replay import router_scores, stratified_split

# --------------------------------------------------------------------------- splits


def test_stratified_split_holds_out_a_tenth_of_each_category() -> None:
    categories = ["a"] * 100 + ["b"] * 35 + ["c"] * 7 + ["d"]
    split = stratified_split(categories, 0.1, seed=3)
    held = Counter(categories[i] for i in split.test)
    assert held == {"a": 10, "b": 4, "c": 1}  # round(3.5) = 4; "d" (one question) stays
    assert sorted(np.concatenate([split.bank, split.test]).tolist()) == list(range(143))
    assert not set(split.bank.tolist()) & set(split.test.tolist())
    again = stratified_split(categories, 0.1, seed=3)
    np.testing.assert_array_equal(split.test, again.test)
    other = stratified_split(categories, 0.1, seed=4)
    assert not np.array_equal(split.test, other.test)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(categories, 1.0, seed=0)


# --------------------------------------------------------------------------- priors


def random_sims(rng: np.random.Generator, q: int, n: int) -> NDArray[np.float64]:
    # Rounded values make exact ties common, so the threshold often lands on a tie.
    return np.round(rng.uniform(-0.3, 1.0, (q, n)), 2)


@pytest.mark.parametrize("rule", ["paper", "authors"])
def test_vectorized_support_and_priors_equal_core_per_query(rule: core.Rule) -> None:
    rng = np.random.default_rng(0)
    sims = random_sims(rng, 20, 150)
    cap = (rng.random((5, 150)) < 0.5).astype(np.float64)
    measured = rng.random((5, 150)) < 0.8
    g = core.global_accuracy(cap, measured)
    for n_sup, gamma in [(10, 0.95), (40, 1.0), (149, 0.9), (150, 0.95), (400, 0.95)]:
        mask = support_mask(sims, n_sup, gamma, rule)
        priors = rps_priors(sims, cap, measured, n_sup, gamma, rule=rule)
        shrunk = shrunk_priors(sims, cap, measured, g, n_sup, gamma, 7.0, rule=rule)
        soft = shrunk_priors(sims, cap, measured, g, n_sup, gamma, 0.5, temperature=0.1, rule=rule)
        for row in range(20):
            idx = core.support_set(sims[row], n_sup, gamma, rule=rule)
            assert sorted(np.flatnonzero(mask[row])) == sorted(idx.tolist())
            want = core.prior_scores(sims[row, idx], cap[:, idx], measured[:, idx])
            np.testing.assert_allclose(priors[row], want, rtol=1e-12, atol=1e-12)
            want_shrunk = core.shrunk_prior_scores(
                sims[row, idx], cap[:, idx], measured[:, idx], g, 7.0
            )
            np.testing.assert_allclose(shrunk[row], want_shrunk, rtol=1e-12, atol=1e-12)
            want_soft = core.shrunk_prior_scores(
                sims[row, idx], cap[:, idx], measured[:, idx], g, 0.5, temperature=0.1
            )
            np.testing.assert_allclose(soft[row], want_soft, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", ["paper", "authors"])
def test_vectorized_hier_priors_equal_core_per_query(rule: core.Rule) -> None:
    rng = np.random.default_rng(5)
    sims = random_sims(rng, 20, 150)
    cap = (rng.random((5, 150)) < 0.5).astype(np.float64)
    measured = rng.random((5, 150)) < 0.8
    labels = [f"c{i}" for i in rng.integers(0, 4, 150)]
    g = core.global_accuracy(cap, measured)
    table = core.category_accuracy(cap, measured, labels, strength=3.0)
    del table["c3"]  # a category missing from the table counts as g, in both
    for n_sup, gamma, strength in [(10, 0.95, 0.5), (40, 1.0, 0.0), (150, 0.9, 4.0)]:
        got = hier_priors(
            sims,
            cap,
            measured,
            labels,
            table,
            g,
            n_sup,
            gamma,
            strength,
            temperature=0.13,
            category_temperature=0.05,
            rule=rule,
        )
        for row in range(20):
            idx = core.support_set(sims[row], n_sup, gamma, rule=rule)
            want = core.hier_prior_scores(
                sims[row, idx],
                cap[:, idx],
                measured[:, idx],
                [labels[i] for i in idx],
                table,
                g,
                strength,
                temperature=0.13,
                category_temperature=0.05,
            )
            np.testing.assert_allclose(got[row], want, rtol=1e-12, atol=1e-12)


def test_batched_priors_match_the_formulas_worked_by_hand() -> None:
    """Two queries, three bank questions, two models; N_sup_base=2, gamma=1: each support set
    is the query's two nearest questions (S = 0.9 and 0.5). Expected values come straight from
    the formulas, so a change to a rule's arithmetic fails here, although the batched and the
    single-query priors share the rules' code (the tests above compare the two paths)."""
    sims = np.array([[0.9, 0.5, 0.1], [0.1, 0.5, 0.9]])
    cap = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    measured = np.ones((2, 3), dtype=bool)
    g = np.array([2 / 3, 2 / 3])
    # eq. 4: V[m] = sum of S over the support questions m got right
    np.testing.assert_allclose(rps_priors(sims, cap, measured, 2, 1.0), [[0.9, 0.5], [0.9, 1.4]])
    # shrunk, linear weights w = S: (sum w C + a g) / (sum w + a), a = 1
    expected = [[(0.9 + g[0]) / 2.4, (0.5 + g[1]) / 2.4], [(0.9 + g[0]) / 2.4, (1.4 + g[1]) / 2.4]]
    np.testing.assert_allclose(shrunk_priors(sims, cap, measured, g, 2, 1.0, 1.0), expected)
    # shrunk, w = exp((S - max S) / T), T = 0.1: the nearest weighs 1, the next e^-4
    w = np.exp(-4.0)
    soft = shrunk_priors(sims, cap, measured, g, 2, 1.0, 1.0, temperature=0.1)
    np.testing.assert_allclose(soft[0], [(1 + g[0]) / (2 + w), (w + g[1]) / (2 + w)])
    np.testing.assert_allclose(soft[1], [(1 + g[0]) / (2 + w), (1 + w + g[1]) / (2 + w)])
    # hier: kernel w = exp(-(1 - S) / T), category shares u = exp((S - max S) / T_c), a = 0.5
    table = {"a": np.array([0.8, 0.2]), "b": np.array([0.3, 0.9])}
    got = hier_priors(
        sims[:1],
        cap,
        measured,
        ["a", "b", "a"],
        table,
        g,
        2,
        1.0,
        0.5,
        temperature=0.1,
        category_temperature=0.05,
    )
    share_b = np.exp(-8.0) / (1 + np.exp(-8.0))
    pi = (1 - share_b) * table["a"] + share_b * table["b"]
    w0, w1 = np.exp(-1.0), np.exp(-5.0)
    want = [(w0 + 0.5 * pi[0]) / (w0 + w1 + 0.5), (w1 + 0.5 * pi[1]) / (w0 + w1 + 0.5)]
    np.testing.assert_allclose(got[0], want)


def test_category_accuracy_uses_measured_entries_and_falls_back_to_global() -> None:
    cap = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    measured = np.array([[True, True, True, True], [True, False, False, True]])
    acc = category_accuracy(cap, measured, ["x", "x", "y", "y"])
    np.testing.assert_allclose(acc["x"], [1.0, 0.0])
    # model 1 has no record in "y" except question 3 (correct)
    np.testing.assert_allclose(acc["y"], [0.0, 1.0])
    only_x = category_accuracy(
        cap, np.array([[True] * 4, [True, True, False, False]]), list("xxyy")
    )
    np.testing.assert_allclose(only_x["y"], [0.0, 0.0])  # no "y" record: global accuracy (0/2)


# --------------------------------------------------------------------------- metrics


def test_evaluate_rankings_known_answers() -> None:
    priors = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 0.0]])
    correct = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float64)
    measured = np.ones((3, 3), dtype=bool)
    m = evaluate_rankings(priors, correct, measured, coverage_k=(1, 2, 3))
    assert m.top1 == 0.0
    assert m.coverage == {1: 0.0, 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3)}
    # pairs (correct j, wrong k): q0: (1,0) lose, (1,2) win; q1: (1,0) win, (1,2) lose
    assert m.pairwise == pytest.approx(0.5)
    assert m.questions == 3


def test_unmeasured_top_model_is_skipped_never_counted_wrong() -> None:
    priors = np.array([[9.0, 2.0, 1.0]])
    correct = np.array([[0.0, 1.0, 0.0]])
    measured = np.array([[False, True, True]])
    m = evaluate_rankings(priors, correct, measured, coverage_k=(1, 3))
    assert m.top1 == 1.0  # model 0 has no record: model 1 is the top measured model
    assert m.coverage == {1: 1.0, 3: 1.0}
    assert m.pairwise == 1.0  # only the pair (1, 2) is formed
    with pytest.raises(ValueError, match="at least one measured"):
        evaluate_rankings(priors, correct, np.zeros((1, 3), dtype=bool))


def test_ties_in_priors_go_to_the_lower_model_index() -> None:
    m = evaluate_rankings(np.array([[1.0, 1.0]]), np.array([[0.0, 1.0]]), np.ones((1, 2), bool))
    assert m.top1 == 0.0  # select_top_k's order: equal priors keep pool order
    assert m.pairwise == 0.0  # strict eq. 8: a tie is not a win


def test_random_metrics_are_exact_expectations() -> None:
    correct = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=np.float64)
    measured = np.array([[True] * 4, [True, True, True, False]])
    m = random_metrics(correct, measured, coverage_k=(1, 2, 3))
    # row 0: 1 of 4 correct; row 1: 2 of 3 measured correct
    assert m.top1 == pytest.approx((1 / 4 + 2 / 3) / 2)
    assert m.coverage[2] == pytest.approx(((1 - 3 / 6) + 1.0) / 2)
    assert m.coverage[3] == pytest.approx(((1 - 1 / 4) + 1.0) / 2)
    assert m.pairwise == 0.5
    # Monte Carlo agrees with the formula
    rng = np.random.default_rng(0)
    draws = [
        evaluate_rankings(rng.random((2, 4)), correct, measured, coverage_k=(2,)).coverage[2]
        for _ in range(4000)
    ]
    assert float(np.mean(draws)) == pytest.approx(m.coverage[2], abs=0.02)


# --------------------------------------------------------------------------- whole replay


def two_topic_data(
    n: int = 600, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.bool_], list[str]]:
    """Topic A questions are solved by model 0, topic B by model 1; model 2 is right at random.

    Categories are assigned independently of topic, so only retrieval can tell the topics apart.
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 2, n)
    centers = np.eye(8)[:2] * 3.0
    emb = (centers[topic] + rng.normal(0.0, 0.5, (n, 8))).astype(np.float32)
    cap = np.stack([topic == 0, topic == 1, rng.random(n) < 0.55]).astype(np.float64)
    measured = np.ones((3, n), dtype=bool)
    categories = [f"c{i % 3}" for i in range(n)]
    return emb, cap, measured, categories


def test_replay_ranks_methods_as_the_synthetic_truth_says() -> None:
    emb, cap, measured, categories = two_topic_data()
    settings = ReplaySettings(
        seeds=(0, 1, 2),
        n_sup_base=40,
        sweep_n_sup_base=(20, 40),
        sweep_gamma=(0.95,),
        shrunk_n_sup_grid=(20, 40),
        shrunk_strength_grid=(0.0, 5.0, 1000.0),
        calibration_queries=300,
    )
    lines: list[str] = []
    report = run_replay(
        emb, cap, measured, categories, ["A", "B", "R"], settings, progress=lines.append
    )
    mean = {name: report.summary(name)["top1"]["mean"] for name in report.results}
    assert mean["oracle"] == 1.0
    assert mean["rps"] == 1.0 and mean["rps-shrunk"] == 1.0  # retrieval finds the topic
    assert report.summary("rps")["pairwise"]["mean"] == 1.0
    # no category signal: the router and the best single model are right about half the time
    assert 0.3 < mean["per-category"] < 0.75 and 0.3 < mean["best-single"] < 0.75
    # random: the share of models right on each held-out question, by hand from the split
    right_share = [
        cap[:, stratified_split(categories, 0.1, seed).test].mean() for seed in (0, 1, 2)
    ]
    assert mean["random"] == pytest.approx(np.mean(right_share))
    assert report.summary("oracle")["top3_coverage"]["mean"] == 1.0
    assert all(s.shrunk is not None and s.shrunk.strength < 1000.0 for s in report.splits)
    assert [s.evaluated for s in report.splits] == [60, 60, 60]
    assert len(lines) == 3 and "seed 0" in lines[0]
    assert set(report.sweep) == {(20, 0.95), (40, 0.95)}
    text, md = render_text(report), render_markdown(report, "smcs replay --seeds 3")
    assert "RPS, shrunk" in text and "per-category" in text
    assert "| N_sup_base |" in md and "smcs replay --seeds 3" in md
    payload = json.loads(render_json(report))
    assert payload["methods"]["rps"]["summary"]["top1"]["mean"] == 1.0
    assert len(payload["methods"]["oracle"]["per_seed"]) == 3
    # the learned rule: chosen on the bank, scored, calibrated; every rule paired with the
    # router and the paper's RPS
    assert mean["rps-learned"] > 0.9
    assert all(s.learned is not None and s.learned.rank >= 1 for s in report.splits)
    assert set(report.ece) == {"rps", "rps-shrunk", "rps-hier", "rps-learned", "per-category"}
    assert all(len(v) == 3 and all(0.0 <= e <= 1.0 for e in v) for v in report.ece.values())
    assert "ECE of P(correct)" in text and "vs per-category router" in text
    assert "Reliability" in md and "ddof=1" in md
    assert payload["methods"]["rps-learned"]["ece"] is not None


def test_router_ties_go_to_bank_accuracy_then_pool_order() -> None:
    accuracy = np.array([[0.5, 0.7, 0.7, 0.7], [0.9, 0.1, 0.9, 0.2]])
    overall = np.array([0.9, 0.6, 0.8, 0.6])
    scores = router_scores(accuracy, overall)
    # row 0: models 1-3 tie at 0.7; model 2 has the better bank accuracy; 1 and 3 tie again,
    # pool order puts 1 first. Row 1: 0 and 2 tie at 0.9; model 0 has the better bank accuracy.
    assert np.argsort(-scores[0], kind="stable").tolist() == [2, 1, 3, 0]
    assert np.argsort(-scores[1], kind="stable").tolist() == [0, 2, 3, 1]
    assert len(set(scores[0].tolist())) == 4  # a strict order: no tie left for eq. 8


def test_a_small_bank_question_map_is_the_covariance_pca_of_its_rows() -> None:
    """N <= d rows: the map comes from the (N, N) Gram matrix and spans N - 1 directions, the
    covariance's own (the others would be noise scaled by 1e6)."""
    rng = np.random.default_rng(11)
    emb = rng.normal(size=(20, 50)) * np.linspace(3.0, 0.1, 50)
    qmap = fit_question_map(emb, 64)
    assert qmap.rank == 19
    centred = emb - emb.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / 19)
    top = np.argsort(values)[::-1][:19]
    reference = vectors[:, top] / np.sqrt(values[top])
    reference *= np.sign(reference[np.abs(reference).argmax(axis=0), np.arange(19)])
    np.testing.assert_allclose(qmap.components, reference, atol=1e-8)
    np.testing.assert_allclose(np.cov(qmap(emb).T), np.eye(19), atol=1e-8)  # whitened
    assert fit_question_map(emb[:5], 3).rank == 3  # a rank the rows span is kept
    assert fit_question_map(rng.normal(size=(60, 50)), 64).rank == 50  # N > d: d


def test_learned_cross_validation_on_a_small_bank_searches_ranks_its_folds_span() -> None:
    rng = np.random.default_rng(12)
    emb = rng.normal(size=(30, 40))
    cap = (rng.random((3, 30)) < 0.5).astype(np.float64)
    measured = np.ones(cap.shape, bool)
    rows, knn = np.arange(30), np.full((30, 3), 0.5)
    # 3 folds of 10: each trains on 20 rows, whose map spans 19 directions at most.
    wide = calibrate_learned(emb, cap, measured, rows, knn, rank_grid=(64,), penalty_grid=(10.0,))
    assert wide.rank == 19 and wide.at_edge == ()
    both = calibrate_learned(
        emb, cap, measured, rows, knn, rank_grid=(2, 19, 32, 64), penalty_grid=(10.0,)
    )
    assert both.rank in (2, 19)
    same = calibrate_learned(emb, cap, measured, rows, knn, rank_grid=(19,), penalty_grid=(10.0,))
    if both.rank == 19:
        assert (both.cv_top1, both.cv_pairwise) == (same.cv_top1, same.cv_pairwise)
    with pytest.raises(ValueError, match="too few for the learned rule's 3-fold"):
        calibrate_learned(emb[:2], cap[:, :2], measured[:, :2], rows[:2], knn[:2])


def test_replay_counts_skipped_and_partially_measured_questions() -> None:
    emb, cap, measured, categories = two_topic_data(n=300, seed=1)
    measured[:2, :30] = False  # 30 questions: one model left -> skipped when in the test set
    measured[2, 30:60] = False  # 30 questions: two models left -> evaluated, flagged
    settings = ReplaySettings(
        rules=("paper",), seeds=(0,), n_sup_base=20, sweep_n_sup_base=(), sweep_gamma=()
    )
    report = run_replay(emb, cap, measured, categories, ["A", "B", "R"], settings)
    info = report.splits[0]
    test = stratified_split(categories, 0.1, 0).test
    assert info.skipped == int((test < 30).sum())
    assert info.with_unmeasured == int(((test >= 30) & (test < 60)).sum())
    assert info.evaluated == info.test_questions - info.skipped
    assert info.shrunk is None and "rps-shrunk" not in report.results


def test_calibration_prefers_global_evidence_when_local_evidence_is_noise() -> None:
    rng = np.random.default_rng(2)
    n = 1500
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    cap = np.stack([rng.random(n) < 0.8, rng.random(n) < 0.6]).astype(np.float64)
    choice = calibrate_shrunk(
        emb,
        cap,
        np.ones((2, n), dtype=bool),
        n_sup_grid=(10,),
        temperature_grid=(None, 0.1),
        strength_grid=(0.0, 1000.0),
        queries=800,
    )
    assert choice.strength == 1000.0  # 10 random neighbours are noise; the global rate is not
    assert choice.loo_top1 == pytest.approx(0.8, abs=0.05)


def category_data(
    n: int = 600, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.bool_], list[str]]:
    """Three categories, each a cluster; model k is right on 90% of category k, 30% elsewhere."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, 3, n)
    centers = np.eye(8)[:3] * 3.0
    emb = (centers[category] + rng.normal(0.0, 0.7, (n, 8))).astype(np.float32)
    best = np.eye(3, dtype=bool)[:, category]  # (3, n): model k on category k
    cap = np.where(best, rng.random((3, n)) < 0.9, rng.random((3, n)) < 0.3).astype(np.float64)
    measured = rng.random((3, n)) < 0.95
    measured[:, :2] = True
    return emb, cap, measured, [f"c{c}" for c in category]


def test_hier_calibration_is_exact_leave_one_out() -> None:
    """Each LOO query's priors equal `hier_priors` on the bank without that question: its row,
    its outcomes in the global and category accuracies, and never its own category."""
    emb, cap, measured, labels = category_data(n=90, seed=3)
    choice = calibrate_hier(
        emb,
        cap,
        measured,
        labels,
        n_sup_base=12,
        temperature_grid=(0.2,),
        strength_grid=(1.5,),
        category_temperature=0.1,
        category_strength=4.0,
        queries=1000,
    )
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    rows = np.flatnonzero(measured.sum(axis=0) >= 2)
    priors = []
    for q in rows:
        rest = np.delete(np.arange(90), q)
        rest_labels = [labels[i] for i in rest]
        sims = similarity_matrix(unit[[q]], unit[rest])
        priors.append(
            hier_priors(
                sims,
                cap[:, rest],
                measured[:, rest],
                rest_labels,
                core.category_accuracy(cap[:, rest], measured[:, rest], rest_labels, 4.0),
                core.global_accuracy(cap[:, rest], measured[:, rest]),
                12,
                0.95,
                1.5,
                temperature=0.2,
                category_temperature=0.1,
            )[0]
        )
    want = evaluate_rankings(
        np.stack(priors), np.where(measured, cap, 0.0)[:, rows].T, measured[:, rows].T, (1,)
    )
    assert (choice.temperature, choice.strength) == (0.2, 1.5)
    assert (choice.category_temperature, choice.category_strength) == (0.1, 4.0)
    assert choice.loo_top1 == pytest.approx(want.top1, abs=1e-12)
    assert choice.loo_pairwise == pytest.approx(want.pairwise, abs=1e-12)


def test_hier_rule_infers_the_category_the_router_is_told() -> None:
    emb, cap, measured, categories = category_data()
    settings = ReplaySettings(
        seeds=(0, 1),
        n_sup_base=40,
        sweep_n_sup_base=(),
        sweep_gamma=(),
        shrunk_n_sup_grid=(40,),
        hier_temperature_grid=(0.1, 0.3),
        hier_strength_grid=(0.5, 50.0),
    )
    lines: list[str] = []
    report = run_replay(
        emb, cap, measured, categories, ["A", "B", "C"], settings, progress=lines.append
    )
    mean = {name: report.summary(name)["top1"]["mean"] for name in report.results}
    assert mean["per-category"] > 0.8
    assert mean["rps-hier"] >= mean["per-category"] - 0.05  # without being told the category
    assert mean["rps-hier"] > mean["best-single"] + 0.2
    assert all(s.hier is not None and s.hier.temperature in (0.1, 0.3) for s in report.splits)
    assert "(hier: temperature=" in lines[0]
    text = render_text(report)
    assert "RPS, hier" in text and "Hier rule settings chosen on the bank" in text
    payload = json.loads(render_json(report))
    assert payload["splits"][0]["hier"]["category_temperature"] == 0.05
    only = run_replay(
        emb,
        cap,
        measured,
        categories,
        ["A", "B", "C"],
        ReplaySettings(rules=("hier",), seeds=(0,), sweep_n_sup_base=(), sweep_gamma=()),
    )
    assert "rps-hier" in only.results and "rps" not in only.results
    assert only.splits[0].shrunk is None and only.splits[0].hier is not None


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="hier rule's temperatures"):
        ReplaySettings(hier_temperature_grid=(0.0,))
    with pytest.raises(ValueError, match="hier rule's temperatures"):
        ReplaySettings(hier_category_temperature=-1.0)
    with pytest.raises(ValueError, match="strengths"):
        ReplaySettings(hier_strength_grid=(-1.0,))
    with pytest.raises(ValueError, match="grids"):
        ReplaySettings(hier_strength_grid=())
    with pytest.raises(ValueError, match="hier_calibration_queries"):
        ReplaySettings(hier_calibration_queries=0)
    with pytest.raises(ValueError, match="rules"):
        ReplaySettings(rules=("best",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seeds"):
        ReplaySettings(seeds=())
    with pytest.raises(ValueError, match="gamma"):
        ReplaySettings(gamma=-1.0)
    with pytest.raises(ValueError, match="temperatures"):
        ReplaySettings(shrunk_temperature_grid=(0.0,))
    emb, cap, measured, categories = two_topic_data(n=50)
    with pytest.raises(ValueError, match="0/1"):
        run_replay(emb, cap * 2, measured, categories, ["A", "B", "R"])
    with pytest.raises(ValueError, match="embeddings"):
        run_replay(emb[:10], cap, measured, categories, ["A", "B", "R"])


# --------------------------------------------------------------------------- inputs


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    questions = tmp_path / "q.jsonl"
    rows = [
        {"question_id": 1, "question": "What is 2+2?", "category": "math", "options": ["3", "4"]},
        {"question_id": 2, "question": "Capital of France?", "category": "geo"},
        {"question_id": 3, "question": "Unmatched", "category": "geo"},
    ]
    questions.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    matrix = tmp_path / "m.csv"
    matrix.write_text("question_id,m1,m2\n1,1,\n2,0,1\n9,1,1\n", encoding="utf-8")
    return questions, matrix


def test_load_replay_data_matches_ids_and_masks_empty_cells(tmp_path: Path) -> None:
    questions, matrix = write_inputs(tmp_path)
    data = load_replay_data(questions, matrix)
    assert data.question_ids == ["1", "2"] and data.models == ["m1", "m2"]
    np.testing.assert_array_equal(data.capability, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(data.measured, [[True, True], [False, True]])
    assert data.categories == ["math", "geo"]
    assert data.texts("question+options")[0] == "What is 2+2?\nA. 3\nB. 4"
    assert data.texts("question")[1] == "Capital of France?"
    assert query_text("Q", [], "question+options") == "Q"


def test_load_replay_data_says_what_is_wrong(tmp_path: Path) -> None:
    questions, matrix = write_inputs(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_replay_data(tmp_path / "missing.jsonl", matrix)
    bad = tmp_path / "bad.csv"
    bad.write_text("question_id,m1\n1,2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="1, 0 or empty"):
        load_replay_data(questions, bad)
    header = tmp_path / "header.csv"
    header.write_text("m1,qid\n1,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no id column 'id'"):
        load_replay_data(questions, header, id_column="id")
    other = tmp_path / "other.csv"
    other.write_text("question_id,m1\n77,1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no question id"):
        load_replay_data(questions, other)


def test_cached_embeddings_compute_once_and_key_by_embedder_and_texts(tmp_path: Path) -> None:
    embedder = HashingEmbedder(dimension=16)
    texts = [f"question number {i}" for i in range(10)]
    first = cached_embeddings(embedder, texts, tmp_path, chunk_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{texts_key(embedder.id, texts)}.npy"]
    np.testing.assert_array_equal(first, embedder.embed(texts))

    class Counting(HashingEmbedder):
        calls = 0

        def embed(self, items):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().embed(items)

    counting = Counting(dimension=16)
    np.testing.assert_array_equal(cached_embeddings(counting, texts, tmp_path), first)
    assert Counting.calls == 0  # same id and texts: read from the cache
    assert texts_key(embedder.id, ["ab", "c"]) != texts_key(embedder.id, ["a", "bc"])
    assert texts_key("other", texts) != texts_key(embedder.id, texts)


def test_cached_embeddings_resume_from_finished_chunks(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(10)]

    class Crashing(HashingEmbedder):
        calls = 0

        def embed(self, items):  # type: ignore[no-untyped-def]
            Crashing.calls += 1
            if Crashing.calls == 3:
                raise RuntimeError("crash")
            return super().embed(items)

    with pytest.raises(RuntimeError, match="crash"):
        cached_embeddings(Crashing(dimension=8), texts, tmp_path, chunk_size=4)
    assert len(list(tmp_path.glob("*.part*.npy"))) == 2
    Crashing.calls = 10  # no more crashes; count the chunks still to embed
    out = cached_embeddings(Crashing(dimension=8), texts, tmp_path, chunk_size=4)
    assert Crashing.calls == 11  # only the last chunk was embedded again
    np.testing.assert_array_equal(out, HashingEmbedder(dimension=8).embed(texts))
    assert not list(tmp_path.glob("*.part*.npy"))


def test_replay_data_from_a_question_bank(bank: QuestionBank, embedder: HashingEmbedder) -> None:
    data, embeddings = replay_data_from_bank(bank)
    assert data.models == ["histo", "mathy", "weak"]
    assert Counter(data.categories) == {"math": 6, "history": 6}
    texts = [q.question for q in bank.get(data.question_ids)]
    assert data.questions == texts
    np.testing.assert_allclose(embeddings, embedder.embed(texts), atol=1e-6)
    mathy = data.models.index("mathy")
    is_math = np.array([c == "math" for c in data.categories])
    np.testing.assert_array_equal(data.capability[mathy], is_math.astype(float))
    assert data.measured.all()
    settings = ReplaySettings(
        seeds=(0, 1),
        n_sup_base=3,
        sweep_n_sup_base=(),
        sweep_gamma=(),
        shrunk_n_sup_grid=(3,),
        shrunk_temperature_grid=(None,),
        shrunk_strength_grid=(0.0, 1.0),
    )
    report = run_replay(
        embeddings, data.capability, data.measured, data.categories, data.models, settings
    )
    assert report.summary("per-category")["top1"]["mean"] == 1.0
    assert report.summary("oracle")["top1"]["mean"] == 1.0
    only = replay_data_from_bank(bank, ["weak", "mathy"])[0]
    assert only.models == ["weak", "mathy"] and only.capability.shape == (2, 12)

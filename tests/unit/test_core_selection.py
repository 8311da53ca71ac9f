"""The selection rules beyond the paper (core.rules), and their graph and replay forms agree."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smcs_graph import core
from smcs_graph.config import PriorRule


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


# --------------------------------------------------------------------------- the hier rule


def test_category_accuracy_shrinks_toward_the_global_accuracy() -> None:
    cap = np.array([[1, 1, 0, 0, 1], [0, 0, 0, 1, 1]], dtype=np.float64)
    measured = np.array([[True] * 5, [True, True, False, False, True]])
    g = core.global_accuracy(cap, measured)  # [0.6, 1/3]
    plain = core.category_accuracy(cap, measured, ["x", "x", "y", "y", "z"])
    np.testing.assert_allclose(plain["x"], [1.0, 0.0])
    np.testing.assert_allclose(plain["y"], [0.0, g[1]])  # model 1: no "y" record -> g
    np.testing.assert_allclose(plain["z"], [1.0, 1.0])
    shrunk = core.category_accuracy(cap, measured, ["x", "x", "y", "y", "z"], strength=2.0)
    np.testing.assert_allclose(shrunk["x"], [(2 + 2 * 0.6) / 4, (0 + 2 * g[1]) / 4])
    np.testing.assert_allclose(shrunk["y"], [(0 + 2 * 0.6) / 4, g[1]])
    huge = core.category_accuracy(cap, measured, list("xxyyz"), strength=1e12)
    for row in huge.values():
        np.testing.assert_allclose(row, g, rtol=1e-9)
    with pytest.raises(ValueError, match="categories"):
        core.category_accuracy(cap, measured, ["x"])
    with pytest.raises(ValueError, match="strength"):
        core.category_accuracy(cap, measured, list("xxyyz"), strength=-1.0)


def test_category_shares_are_a_softmax_vote_of_the_support_categories() -> None:
    sims = np.array([0.9, 0.8, 0.85])
    shares = core.category_shares(sims, ["a", "b", "a"], temperature=0.05)
    u = np.exp(np.array([0.0, -0.1, -0.05]) / 0.05)
    assert shares == pytest.approx({"a": (u[0] + u[2]) / u.sum(), "b": u[1] / u.sum()})
    assert sum(shares.values()) == pytest.approx(1.0)
    assert core.category_shares(np.empty(0), []) == {}
    sharp = core.category_shares(sims, ["a", "b", "c"], temperature=1e-4)
    assert sharp["a"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        core.category_shares(sims, ["a", "b", "a"], temperature=0.0)
    with pytest.raises(ValueError, match="categories"):
        core.category_shares(sims, ["a"])


def test_kernel_weights_are_absolute() -> None:
    np.testing.assert_allclose(
        core.kernel_weights(np.array([1.0, 0.9, 0.5]), 0.1), np.exp([0.0, -1.0, -5.0])
    )
    # unlike support_weights, far neighbours stay light even when they are the nearest
    assert core.kernel_weights(np.array([0.5]), 0.1)[0] == pytest.approx(np.exp(-5.0))
    assert core.support_weights(np.array([0.5]), 0.1)[0] == 1.0


def test_hier_priors_known_values() -> None:
    sims = np.array([0.9, 0.8, 0.6])
    cats = ["math", "math", "law"]
    cap = np.array([[1, 0, 0], [0, 1, 1]], dtype=np.float64)
    measured = np.array([[True, True, True], [True, True, False]])
    table = {"math": np.array([0.7, 0.4]), "law": np.array([0.2, 0.9])}
    g = np.array([0.5, 0.5])
    got = core.hier_prior_scores(
        sims, cap, measured, cats, table, g, 2.0, temperature=0.1, category_temperature=0.05
    )
    u = np.exp((sims - 0.9) / 0.05)
    p_math = (u[0] + u[1]) / u.sum()
    pi = p_math * table["math"] + (1 - p_math) * table["law"]
    w = np.exp((sims - 1.0) / 0.1)
    want = [(w[0] + 2 * pi[0]) / (w.sum() + 2), (w[1] + 2 * pi[1]) / (w[0] + w[1] + 2)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # a = 0: the kernel-weighted local accuracy; no local evidence keeps the category prior
    local = core.hier_prior_scores(
        sims, cap, np.array([[True] * 3, [False] * 3]), cats, table, g, 0.0
    )
    np.testing.assert_allclose(local[0], w[0] / w.sum(), rtol=1e-12)
    shares = core.category_shares(sims, cats, 0.05)
    assert local[1] == pytest.approx(shares["math"] * 0.4 + shares["law"] * 0.9)
    # a huge strength gives the inferred-category prior itself
    prior_only = core.hier_prior_scores(sims, cap, measured, cats, table, g, 1e12)
    np.testing.assert_allclose(prior_only, pi, rtol=1e-9)


def test_hier_priors_fall_back_to_the_global_accuracy() -> None:
    g = np.array([0.3, 0.8])
    empty = core.hier_prior_scores(np.empty(0), np.zeros((2, 0)), None, [], {}, g, 1.0)
    np.testing.assert_allclose(empty, g)
    # a category missing from the table counts as the global accuracy
    sims, cap = np.array([0.95]), np.array([[1.0], [0.0]])
    got = core.hier_prior_scores(sims, cap, None, ["new"], {}, g, 1e12)
    np.testing.assert_allclose(got, g, rtol=1e-9)


def test_hier_rule_does_not_need_the_query_category() -> None:
    """The query's category is inferred: the same support set gives the same priors, whatever
    category the query really has, and a model strong on the neighbours' category wins when the
    local record is thin."""
    sims = np.array([0.55, 0.5])  # far neighbours: little local weight
    cap = np.array([[0.0, 0.0], [1.0, 1.0]])  # model 1 right on both, model 0 wrong
    table = {"physics": np.array([0.9, 0.6])}
    got = core.hier_prior_scores(sims, cap, None, ["physics"] * 2, table, np.full(2, 0.5), 1.0)
    assert got[0] > got[1]  # ~0.01 of local weight against a pseudo-count of 1
    close = core.hier_prior_scores(
        np.array([0.99, 0.98]), cap, None, ["physics"] * 2, table, np.full(2, 0.5), 1.0
    )
    assert close[1] > close[0]  # near-duplicates outweigh the category prior


def test_hier_bad_input_is_named() -> None:
    sims, cap, g = np.ones(2), np.ones((2, 2)), np.ones(2)
    cats, table = ["a", "a"], {"a": np.ones(2)}
    with pytest.raises(ValueError, match="strength"):
        core.hier_prior_scores(sims, cap, None, cats, table, g, -1.0)
    with pytest.raises(ValueError, match="temperature"):
        core.hier_prior_scores(sims, cap, None, cats, table, g, 1.0, temperature=0.0)
    with pytest.raises(ValueError, match="support-set columns"):
        core.hier_prior_scores(sims, np.ones((2, 3)), None, cats, table, g, 1.0)
    with pytest.raises(ValueError, match="prior_accuracy"):
        core.hier_prior_scores(sims, cap, None, cats, table, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="categories"):
        core.hier_prior_scores(sims, cap, None, ["a"], table, g, 1.0)
    with pytest.raises(ValueError, match="category_table"):
        core.hier_prior_scores(sims, cap, None, cats, {"a": np.ones(3)}, g, 1.0)


@pytest.mark.parametrize("prior_rule", get_args(PriorRule))
def test_graph_and_replay_give_the_same_priors(prior_rule: PriorRule) -> None:
    """The graph's prior selection (one question: the bank's support set, then core's rule) and
    replay's batch form (every query against the whole bank, support as a mask) agree on a
    random bank with missing records and several categories."""
    from smcs_graph import BankQuestion, QuestionBank
    from smcs_graph.config import SMCSConfig
    from smcs_graph.embedder import HashingEmbedder
    from smcs_graph.offline.evaluation import replay_data_from_bank
    from smcs_graph.offline.evaluation.priors import (
        hier_priors,
        rps_priors,
        shrunk_priors,
        similarity_matrix,
    )
    from smcs_graph.selection import prior_selection

    rng = np.random.default_rng(11)
    words = [f"w{i}" for i in range(40)]

    def text() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(3, 9))))

    embedder = HashingEmbedder(dimension=64)
    bank = QuestionBank.in_memory(embedder)
    families = ["math", "law", "bio", "chem"]
    bank.add_questions(
        [BankQuestion(id=f"q{i}", question=text(), family=families[i % 4]) for i in range(120)]
    )
    models = ["a", "b", "c", "d"]
    for model in models:
        seen = [f"q{i}" for i in range(120) if rng.random() < 0.8]
        bank.record_results(model, {qid: bool(rng.random() < 0.5) for qid in seen})
    settings = SMCSConfig(
        n_sup_base=15,
        gamma=0.9,
        prior_rule=prior_rule,
        shrink_strength=2.0,
        shrink_temperature=0.1,
        hier_strength=0.5,
    )
    data, embeddings = replay_data_from_bank(bank, models)
    g = core.global_accuracy(data.capability, data.measured)
    table = core.category_accuracy(
        data.capability, data.measured, data.categories, settings.hier_category_strength
    )
    queries = [text() for _ in range(5)]
    sims = similarity_matrix(embedder.embed(queries), embeddings)
    args = (sims, data.capability, data.measured)
    if prior_rule == "paper":
        batch = rps_priors(*args, settings.n_sup_base, settings.gamma)
    elif prior_rule == "shrunk":
        batch = shrunk_priors(*args, g, settings.n_sup_base, settings.gamma, 2.0, temperature=0.1)
    else:
        batch = hier_priors(
            *args,
            data.categories,
            table,
            g,
            settings.n_sup_base,
            settings.gamma,
            0.5,
            temperature=settings.hier_temperature,
            category_temperature=settings.hier_category_temperature,
        )
    if prior_rule == "learned":  # replay's fit from scratch, with the graph's blend
        from smcs_graph.offline.evaluation.learned import LearnedChoice, learned_priors
        from smcs_graph.selection import LEARNED_PENALTY, LEARNED_RANK, fitted_rule

        vectors = np.asarray(embedder.embed(queries), dtype=np.float64)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        blend = fitted_rule(bank, settings).shared.blend
        choice = LearnedChoice(LEARNED_RANK, LEARNED_PENALTY, blend, 0.0, 0.0)
        batch = learned_priors(embeddings, data.capability, data.measured, vectors, batch, choice)
    for row, question in enumerate(queries):
        _, one = prior_selection(question, models, bank, embedder, settings)
        np.testing.assert_allclose(one, batch[row], rtol=1e-9, atol=1e-12)


def test_learned_rule_fits_once_per_snapshot_and_refits_only_a_changed_model() -> None:
    from smcs_graph import BankQuestion, QuestionBank
    from smcs_graph.config import SMCSConfig
    from smcs_graph.embedder import HashingEmbedder
    from smcs_graph.selection import fitted_rule, prior_selection

    rng = np.random.default_rng(5)
    embedder = HashingEmbedder(dimension=32)
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions(
        [BankQuestion(id=f"q{i}", question=f"w{i % 7} w{i % 11} x{i}") for i in range(80)]
    )
    for model in ("a", "b"):
        bank.record_results(model, {f"q{i}": bool(rng.random() < 0.5) for i in range(80)})
    settings = SMCSConfig(n_sup_base=10, prior_rule="learned")
    first = fitted_rule(bank, settings)
    assert fitted_rule(bank, settings) is first  # cached for the snapshot
    _, priors = prior_selection("w1 w2 x3", ["a", "b", "new"], bank, embedder, settings)
    assert priors.shape == (3,) and ((priors > 0.0) & (priors < 1.0)).all()
    bank.record_results("new", {f"q{i}": i % 2 == 0 for i in range(80)})
    second = fitted_rule(bank, settings)
    assert second is not first and set(second.models) == {"a", "b", "new"}
    for name in ("a", "b"):  # untouched by the new model's results: the same objects
        assert second.models[name] is first.models[name]
        assert second.shared.knn.models[name] is first.shared.knn.models[name]
    assert second.shared.question_map is first.shared.question_map
    assert second.shared.blend == first.shared.blend

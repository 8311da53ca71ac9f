"""Unit tests of smcs_graph.core: hand-computed cases, then hypothesis properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from smcs_graph import core
from smcs_graph.core import (
    cosine_similarities,
    hybrid_scores,
    mean_pairwise_similarity,
    pairwise_ranking_score,
    perplexity,
    prior_drop_distribution,
    prior_drop_subsets,
    prior_scores,
    select_top_k,
    support_set,
    token_logprobs,
)

SQRT_HALF = 1.0 / math.sqrt(2.0)

# ============================================================================ hand-computed


class TestCosineSimilarities:
    def test_values(self) -> None:
        bank = [[1, 0], [0, 1], [1, 1], [0, 0], [-2, 0]]
        # [1,0]·rows / norms: 1, 0, 1/sqrt2, zero row -> 0, opposite -> -1
        got = cosine_similarities([3, 0], bank)
        np.testing.assert_allclose(got, [1.0, 0.0, SQRT_HALF, 0.0, -1.0])
        assert got.dtype == np.float64

    def test_zero_query_gives_zeros(self) -> None:
        np.testing.assert_array_equal(cosine_similarities([0, 0], [[1, 2], [3, 4]]), [0, 0])

    def test_empty_bank(self) -> None:
        assert cosine_similarities([1.0, 0.0], np.empty((0, 2))).shape == (0,)

    def test_shape_errors(self) -> None:
        with pytest.raises(ValueError, match="dimension"):
            cosine_similarities([1, 0, 0], [[1, 0]])
        with pytest.raises(ValueError, match="bank must be 2-D"):
            cosine_similarities([1, 0], [1, 0])
        with pytest.raises(ValueError, match="query must be 1-D"):
            cosine_similarities([[1, 0]], [[1, 0]])


class TestSupportSet:
    S = (0.9, 0.5, 0.8, 0.7, 0.85)

    def test_paper_rule(self) -> None:
        # 2nd largest = 0.85; 0.95 * 0.85 = 0.8075 -> keep 0.9 (0), 0.85 (4); 0.8 falls short
        np.testing.assert_array_equal(support_set(self.S, 2, 0.95), [0, 4])

    def test_slack_can_exceed_n_sup_base(self) -> None:
        # 0.9 * 0.85 = 0.765 -> 0.9, 0.85, 0.8: three items for n_sup_base = 2
        np.testing.assert_array_equal(support_set(self.S, 2, 0.9), [0, 4, 2])

    def test_authors_rule(self) -> None:
        # 3rd largest = 0.8; 0.95 * 0.8 = 0.76, strict '>' -> 0.9, 0.85, 0.8
        np.testing.assert_array_equal(support_set(self.S, 2, 0.95, rule="authors"), [0, 4, 2])
        # gamma = 1: strictly above 0.8 -> 0.9, 0.85 (the paper's set without ties)
        np.testing.assert_array_equal(support_set(self.S, 2, 1.0, rule="authors"), [0, 4])
        np.testing.assert_array_equal(support_set(self.S, 2, 1.0), [0, 4])

    def test_ties_order_by_index(self) -> None:
        # ref = 0.9, threshold 0.45 keeps all; equal similarities in index order
        np.testing.assert_array_equal(support_set([0.5, 0.9, 0.5, 0.9], 1, 0.5), [1, 3, 0, 2])

    def test_paper_ties_at_reference_all_kept(self) -> None:
        # 2nd largest is 0.7 (tied); '>=' keeps both ties
        np.testing.assert_array_equal(support_set([0.7, 0.9, 0.7, 0.1], 2, 1.0), [1, 0, 2])

    def test_bank_smaller_than_n_sup_base(self) -> None:
        s = [0.2, 0.6, 0.4]
        # N = 3 < 400: reference = min = 0.2 -> everything
        np.testing.assert_array_equal(support_set(s, 400, 1.0), [1, 2, 0])
        # authors: strict '>' 0.2 drops the minimum itself
        np.testing.assert_array_equal(support_set(s, 400, 1.0, rule="authors"), [1, 2])
        # with slack 0.95 * 0.2 = 0.19 the minimum is back
        np.testing.assert_array_equal(support_set(s, 400, 0.95, rule="authors"), [1, 2, 0])
        # authors need N >= n_sup_base + 1: N = 3, n_sup_base = 3 also uses the minimum
        np.testing.assert_array_equal(support_set(s, 3, 1.0, rule="authors"), [1, 2])

    def test_negative_reference(self) -> None:
        # ref = -0.2 (2nd largest); 0.5 * -0.2 = -0.1 > ref: only 0.5 survives
        np.testing.assert_array_equal(support_set([0.5, -0.2, -0.4], 2, 0.5), [0])
        # all negative with n_sup_base = 1: 0.95 * -0.59 = -0.5605 > -0.59 -> empty
        assert support_set([-0.59, -0.6], 1, 0.95).size == 0

    def test_empty(self) -> None:
        out = support_set([], 400)
        assert out.shape == (0,)
        assert out.dtype == np.intp

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="n_sup_base"):
            support_set([0.1], 0)
        with pytest.raises(ValueError, match="1-D"):
            support_set([[0.1]], 1)
        with pytest.raises(ValueError, match="NaN"):
            support_set([0.1, math.nan], 1)
        with pytest.raises(ValueError, match="rule"):
            support_set([0.1], 1, rule="code")  # type: ignore[arg-type]


class TestPriorScores:
    S = (0.5, 1.0, 0.25)
    C = ((1, 0, 1), (0, 1, 1), (1, 1, 1))
    M = ((True, True, True), (True, False, True), (True, True, False))

    def test_weighted(self) -> None:
        # 0.5 + 0.25, 1.0 + 0.25, 0.5 + 1.0 + 0.25
        np.testing.assert_allclose(prior_scores(self.S, self.C), [0.75, 1.25, 1.75])

    def test_measured_mask(self) -> None:
        # model 1 loses column 1 (1.0), model 2 loses column 2 (0.25)
        np.testing.assert_allclose(prior_scores(self.S, self.C, self.M), [0.75, 0.25, 1.5])

    def test_unweighted_counts(self) -> None:
        np.testing.assert_allclose(prior_scores(self.S, self.C, weighted=False), [2, 2, 3])
        np.testing.assert_allclose(prior_scores(self.S, self.C, self.M, weighted=False), [2, 1, 2])

    def test_bool_capability_and_nan_unmeasured(self) -> None:
        cap = np.array([[True, False], [False, True]])
        np.testing.assert_allclose(prior_scores([0.2, 0.4], cap), [0.2, 0.4])
        cap_nan = [[1.0, math.nan], [0.0, 1.0]]
        mask = [[True, False], [True, True]]
        np.testing.assert_allclose(prior_scores([0.2, 0.4], cap_nan, mask), [0.2, 0.4])
        with pytest.raises(ValueError, match="non-finite"):
            prior_scores([0.2, 0.4], cap_nan)

    def test_empty_support(self) -> None:
        np.testing.assert_array_equal(prior_scores([], np.zeros((3, 0))), [0, 0, 0])

    def test_shape_errors(self) -> None:
        with pytest.raises(ValueError, match="columns"):
            prior_scores([0.5, 1.0], self.C)
        with pytest.raises(ValueError, match="capability must be 2-D"):
            prior_scores(self.S, [1, 0, 1])
        with pytest.raises(ValueError, match="measured has shape"):
            prior_scores(self.S, self.C, [[True, True, True]])


class TestSelectTopK:
    def test_ties_by_pool_order(self) -> None:
        v = [0.3, 0.9, 0.3, 0.9, 0.1]
        np.testing.assert_array_equal(select_top_k(v, 3), [1, 3, 0])
        np.testing.assert_array_equal(select_top_k(v, 1), [1])

    def test_k_capped(self) -> None:
        np.testing.assert_array_equal(select_top_k([0.3, 0.9, 0.3, 0.9, 0.1], 10), [1, 3, 0, 2, 4])

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="k must be >= 1"):
            select_top_k([1.0], 0)
        with pytest.raises(ValueError, match="NaN"):
            select_top_k([1.0, math.nan], 1)


class TestPriorDropDistribution:
    def test_paper(self) -> None:
        # V = [0, 2]: mean 1, population std 1, z = [-1, 1]
        e2 = math.exp(2.0)
        np.testing.assert_allclose(prior_drop_distribution([0, 2]), [1 / (1 + e2), e2 / (1 + e2)])
        # V = [1, 2, 3]: std = sqrt(2/3), z = [-a, 0, a] with a = sqrt(3/2)
        a = math.sqrt(1.5)
        w = np.exp([-a, 0.0, a])
        np.testing.assert_allclose(prior_drop_distribution([1, 2, 3]), w / w.sum())

    def test_authors(self) -> None:
        # d = [0, 2], D = 4 / sqrt2 = 2 sqrt2, (d - 1) / D = -+1 / (2 sqrt2)
        x = 1 / (2 * math.sqrt(2.0))
        w = np.exp([-x, x])
        np.testing.assert_allclose(prior_drop_distribution([0, 2], mode="authors"), w / w.sum())

    def test_authors_nearly_uniform_at_realistic_sizes(self) -> None:
        # d = [0, 10, 20], D = 500 / sqrt3 ~ 288.7: logits within +-0.035
        p = prior_drop_distribution([100, 110, 120], mode="authors")
        np.testing.assert_allclose(p, 1 / 3, atol=0.015)
        assert p[0] < p[1] < p[2]
        # the paper's z-scoring is scale-free: same as [0, 1, 2]
        np.testing.assert_allclose(
            prior_drop_distribution([100, 110, 120]), prior_drop_distribution([0, 1, 2])
        )

    @pytest.mark.parametrize("mode", ["paper", "authors"])
    def test_degenerate_uniform(self, mode: core.Rule) -> None:
        np.testing.assert_array_equal(prior_drop_distribution([5.0], mode=mode), [1.0])
        np.testing.assert_allclose(prior_drop_distribution([0.1] * 3, mode=mode), [1 / 3] * 3)
        np.testing.assert_allclose(prior_drop_distribution([0, 0], mode=mode), [0.5, 0.5])

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            prior_drop_distribution([])
        with pytest.raises(ValueError, match="finite"):
            prior_drop_distribution([1.0, math.inf])
        with pytest.raises(ValueError, match="mode"):
            prior_drop_distribution([1.0], mode="x")  # type: ignore[arg-type]


class TestPriorDropSubsets:
    def test_sizes(self) -> None:
        subsets = prior_drop_subsets([1, 2, 3, 4, 5, 6, 7], 8, 1, rng=0)
        assert len(subsets) == 8
        assert all(len(s) == 6 and len(set(s)) == 6 for s in subsets)
        # K = 7, K_drop = 1: only 7 distinct subsets exist, so 8 draws repeat one
        assert len({frozenset(s) for s in subsets}) <= 7

    def test_k_drop_zero_is_a_permutation(self) -> None:
        for s in prior_drop_subsets([1, 2, 3], 5, 0, rng=1):
            assert sorted(s) == [0, 1, 2]

    def test_at_least_one(self) -> None:
        subsets = prior_drop_subsets([1, 2], 4, 5, rng=2)
        assert all(len(s) == 1 for s in subsets)

    def test_single_prior(self) -> None:
        assert prior_drop_subsets([3.0], 3, 1, rng=0) == [(0,), (0,), (0,)]

    def test_seeding(self) -> None:
        a = prior_drop_subsets([1, 5, 2, 8], 6, 1, rng=42)
        assert a == prior_drop_subsets([1, 5, 2, 8], 6, 1, rng=42)
        assert a == prior_drop_subsets([1, 5, 2, 8], 6, 1, rng=np.random.default_rng(42))
        assert all(isinstance(i, int) for s in a for i in s)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="n "):
            prior_drop_subsets([1, 2], 0)
        with pytest.raises(ValueError, match="k_drop"):
            prior_drop_subsets([1, 2], 1, -1)
        with pytest.raises(ValueError, match="empty"):
            prior_drop_subsets([], 1)


class TestMeanPairwiseSimilarity:
    E = ((1, 0), (0, 1), (2, 2))

    def test_paper(self) -> None:
        # cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/sqrt2; mean over the two others
        np.testing.assert_allclose(
            mean_pairwise_similarity(self.E), [SQRT_HALF / 2, SQRT_HALF / 2, SQRT_HALF]
        )

    def test_authors_include_self(self) -> None:
        # self term 1, divided by n = 3
        np.testing.assert_allclose(
            mean_pairwise_similarity(self.E, include_self=True),
            [(1 + SQRT_HALF) / 3, (1 + SQRT_HALF) / 3, (1 + 2 * SQRT_HALF) / 3],
        )

    def test_single_candidate(self) -> None:
        np.testing.assert_array_equal(mean_pairwise_similarity([[3, 4]]), [0.0])
        np.testing.assert_allclose(mean_pairwise_similarity([[3, 4]], include_self=True), [1.0])

    def test_zero_row(self) -> None:
        np.testing.assert_array_equal(mean_pairwise_similarity([[0, 0], [1, 0]]), [0, 0])
        np.testing.assert_allclose(
            mean_pairwise_similarity([[0, 0], [1, 0]], include_self=True), [0, 0.5]
        )

    def test_empty_and_errors(self) -> None:
        assert mean_pairwise_similarity(np.empty((0, 3))).shape == (0,)
        with pytest.raises(ValueError, match="2-D"):
            mean_pairwise_similarity([1, 2])


class TestTokenLogprobs:
    def test_drops_trailing_empty_token(self) -> None:
        content = [
            {"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []},
            {"token": "", "logprob": -0.1},  # an internal empty token is kept
            {"token": "b", "logprob": -1.0},
            {"token": "", "logprob": 0.0},
            {"token": "", "logprob": 0.0},
        ]
        assert token_logprobs(content) == [-0.5, -0.1, -1.0]

    def test_keeps_a_trailing_split_utf8_token_that_carries_bytes(self) -> None:
        # llama.cpp: a token cut inside a UTF-8 character shows token "" with non-empty bytes;
        # only the end-of-sequence entry has empty bytes.
        content = [
            {"token": "a", "logprob": -0.5, "bytes": [97]},
            {"token": "", "logprob": -2.0, "bytes": [226, 130]},
        ]
        assert token_logprobs(content) == [-0.5, -2.0]
        eos = {"token": "", "logprob": -0.01, "bytes": []}
        assert token_logprobs([*content, eos]) == [-0.5, -2.0]

    def test_unavailable(self) -> None:
        assert token_logprobs(None) is None
        assert token_logprobs([]) is None
        assert token_logprobs([{"token": "", "logprob": 0.0}]) is None

    @pytest.mark.parametrize("bad", [None, "x", math.nan, math.inf, True])
    def test_bad_logprob_gives_none(self, bad: object) -> None:
        assert (
            token_logprobs([{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": bad}])
            is None
        )

    def test_missing_logprob_key(self) -> None:
        assert token_logprobs([{"token": "a"}]) is None

    def test_keeps_minus_inf_and_ints(self) -> None:
        out = token_logprobs([{"token": "a", "logprob": -math.inf}, {"token": "b", "logprob": 0}])
        assert out == [-math.inf, 0.0]
        assert out is not None and all(type(x) is float for x in out)


class TestPerplexity:
    def test_exact_values(self) -> None:
        ln2 = math.log(2.0)
        assert perplexity([-ln2, -ln2, -ln2]) == pytest.approx(2.0)
        # mean = -(ln2 + ln8) / 2 = -2 ln2 -> 4
        assert perplexity([-ln2, -math.log(8.0)]) == pytest.approx(4.0)
        assert perplexity([0.0]) == 1.0
        assert perplexity([-1.0, -1.0]) == pytest.approx(math.e)

    def test_infinite(self) -> None:
        assert perplexity([-1.0, -math.inf]) == math.inf
        assert perplexity([-1000.0]) == math.inf  # exp(1000) overflows

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="no token logprobs"):
            perplexity([])
        with pytest.raises(ValueError, match="NaN"):
            perplexity([math.nan])


class TestHybridScores:
    def test_values(self) -> None:
        # 0.5 + (1 - 1.2) = 0.3; 0.8 + (1 - 1.5) = 0.3
        np.testing.assert_allclose(hybrid_scores([0.5, 0.8], [1.2, 1.5]), [0.3, 0.3])
        # lam 0.5: 0.5 - 0.1, 0.8 - 0.25
        np.testing.assert_allclose(hybrid_scores([0.5, 0.8], [1.2, 1.5], 0.5), [0.4, 0.55])

    def test_none_is_similarity_alone(self) -> None:
        np.testing.assert_array_equal(hybrid_scores([0.5, 0.8], None), [0.5, 0.8])

    def test_infinite_perplexity(self) -> None:
        got = hybrid_scores([0.9, 0.1], [math.inf, 2.0])
        assert got[0] == -math.inf
        assert int(np.argmax(got)) == 1
        np.testing.assert_array_equal(hybrid_scores([0.9, 0.1], [math.inf, 2.0], 0.0), [0.9, 0.1])

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="shape"):
            hybrid_scores([0.5, 0.8], [1.2])
        with pytest.raises(ValueError, match="lam"):
            hybrid_scores([0.5], [1.2], -1.0)
        with pytest.raises(ValueError, match="NaN"):
            hybrid_scores([0.5], [math.nan])


class TestPairwiseRankingScore:
    def test_one_question(self) -> None:
        # pairs (0 vs 1): 3 > 2 yes; (2 vs 1): 1 > 2 no
        assert pairwise_ranking_score([[3, 2, 1]], [[1, 0, 1]]) == 0.5
        assert pairwise_ranking_score([3, 2, 1], [1, 0, 1]) == 0.5  # 1-D: one question

    def test_ties(self) -> None:
        # pairs (0 vs 1) tie, (0 vs 2) win
        assert pairwise_ranking_score([[2, 2, 1]], [[1, 0, 0]]) == 0.5
        assert pairwise_ranking_score([[2, 2, 1]], [[1, 0, 0]], ties="half") == 0.75

    def test_pooled_over_questions(self) -> None:
        priors = [[3, 2, 1], [1, 5, 0]]
        correct = [[1, 0, 1], [0, 1, 0]]
        # q1: 1 of 2 pairs; q2: (1 vs 0) and (1 vs 2) both win -> 3 of 4
        assert pairwise_ranking_score(priors, correct) == 0.75
        # unmeasure model 1 on q1: q1 has no wrong model left -> q2 alone
        measured = [[True, False, True], [True, True, True]]
        assert pairwise_ranking_score(priors, correct, measured) == 1.0

    def test_no_pairs_is_nan(self) -> None:
        assert math.isnan(pairwise_ranking_score([[1, 2]], [[1, 1]]))
        assert math.isnan(pairwise_ranking_score(np.zeros((0, 3)), np.zeros((0, 3))))

    def test_chunked_matches_naive(self, monkeypatch: pytest.MonkeyPatch) -> None:
        rng = np.random.default_rng(3)
        priors = rng.integers(0, 4, size=(37, 5)).astype(float)
        correct = rng.integers(0, 2, size=(37, 5))
        measured = rng.random((37, 5)) < 0.8
        wins = half = pairs = 0.0
        for q in range(37):
            for j in range(5):
                for k in range(5):
                    if measured[q, j] and measured[q, k] and correct[q, j] and not correct[q, k]:
                        pairs += 1
                        wins += priors[q, j] > priors[q, k]
                        half += 0.5 * (priors[q, j] == priors[q, k])
        monkeypatch.setattr(core.ranking, "_CHUNK_ELEMENTS", 60)  # 2 questions per chunk
        assert pairwise_ranking_score(priors, correct, measured) == pytest.approx(wins / pairs)
        assert pairwise_ranking_score(priors, correct, measured, ties="half") == pytest.approx(
            (wins + half) / pairs
        )

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="correct has shape"):
            pairwise_ranking_score([[1, 2]], [[1, 0, 1]])
        with pytest.raises(ValueError, match="0/1"):
            pairwise_ranking_score([[1, 2]], [[2, 0]])
        with pytest.raises(ValueError, match="measured has shape"):
            pairwise_ranking_score([[1, 2]], [[1, 0]], [[True]])


# ============================================================================ properties

finite = st.floats(-100, 100, allow_nan=False, allow_subnormal=False)
prior_lists = st.lists(finite, min_size=1, max_size=9)


@settings(deadline=None, max_examples=150)
@given(prior_lists, st.floats(0.01, 100), st.floats(-100, 100, allow_subnormal=False))
def test_paper_distribution_invariant_to_scale_and_shift(
    priors: list[float], scale: float, shift: float
) -> None:
    v = np.array(priors)
    spread = float(np.ptp(v))
    # Skip spreads at float resolution of the shifted values (treated as ties by design).
    assume(spread == 0.0 or spread > 1e-6 * (1.0 + abs(shift) + float(np.abs(v).max())))
    base = prior_drop_distribution(v)
    np.testing.assert_allclose(prior_drop_distribution(v * scale), base, atol=1e-9)
    np.testing.assert_allclose(prior_drop_distribution(v + shift), base, atol=1e-9)


@settings(deadline=None, max_examples=150)
@given(prior_lists, st.sampled_from(["paper", "authors"]))
def test_distribution_sums_to_one(priors: list[float], mode: core.Rule) -> None:
    p = prior_drop_distribution(priors, mode=mode)
    assert p.shape == (len(priors),)
    assert (p >= 0).all()
    assert p.sum() == pytest.approx(1.0)


@settings(deadline=None, max_examples=50)
@given(finite, st.integers(1, 9), st.sampled_from(["paper", "authors"]))
def test_distribution_uniform_when_equal(value: float, k: int, mode: core.Rule) -> None:
    np.testing.assert_allclose(prior_drop_distribution([value] * k, mode=mode), 1 / k)


@settings(deadline=None, max_examples=100)
@given(
    prior_lists,
    st.integers(1, 6),
    st.integers(0, 10),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["paper", "authors"]),
)
def test_subsets_shape_and_determinism(
    priors: list[float], n: int, k_drop: int, seed: int, mode: core.Rule
) -> None:
    subsets = prior_drop_subsets(priors, n, k_drop, rng=seed, mode=mode)
    size = max(len(priors) - k_drop, 1)
    assert len(subsets) == n
    for s in subsets:
        assert len(s) == size
        assert len(set(s)) == size
        assert all(0 <= i < len(priors) for i in s)
    assert subsets == prior_drop_subsets(priors, n, k_drop, rng=seed, mode=mode)


def _within_sigma(counts: np.ndarray, expected_p: np.ndarray, draws: int, sigmas: float) -> None:
    expected = draws * expected_p
    sd = np.sqrt(draws * expected_p * (1 - expected_p))
    assert (np.abs(counts - expected) <= sigmas * sd + 1).all(), (counts, expected)


@pytest.mark.parametrize(
    ("priors", "mode"),
    [([0.0, 1.0, 3.0, 3.5], "paper"), ([2.0, 0.0, 5.0], "paper"), ([0.0, 1.0, 3.0], "authors")],
)
def test_first_draw_frequencies_match_distribution(priors: list[float], mode: core.Rule) -> None:
    draws = 4000
    p = prior_drop_distribution(priors, mode=mode)
    # k_drop = K - 1: one draw per subset, i.e. the first draw
    firsts = [s[0] for s in prior_drop_subsets(priors, draws, len(priors) - 1, rng=7, mode=mode)]
    counts = np.bincount(firsts, minlength=len(priors))
    _within_sigma(counts, p, draws, 5.0)


def test_second_draw_matches_renormalized_sampling() -> None:
    priors = [0.0, 1.0, 3.0]
    p = prior_drop_distribution(priors)
    # P(second = j) = sum_{i != j} p_i * p_j / (1 - p_i)
    second = np.array([sum(p[i] * p[j] / (1 - p[i]) for i in range(3) if i != j) for j in range(3)])
    draws = 6000
    subsets = prior_drop_subsets(priors, draws, 1, rng=11)
    counts = np.bincount([s[1] for s in subsets], minlength=3)
    _within_sigma(counts, second, draws, 5.0)
    # and it is not simply p (the test would be vacuous otherwise)
    assert np.abs(second - p).max() > 0.05


embeddings = st.integers(1, 6).flatmap(
    lambda n: st.integers(1, 5).flatmap(
        lambda d: arrays(np.float64, (n, d), elements=st.floats(-10, 10, allow_subnormal=False))
    )
)


@settings(deadline=None, max_examples=100)
@given(embeddings, st.booleans(), st.data())
def test_mean_pairwise_similarity_permutation_and_bounds(
    emb: np.ndarray, include_self: bool, data: st.DataObject
) -> None:
    perm = np.array(data.draw(st.permutations(range(emb.shape[0]))))
    out = mean_pairwise_similarity(emb, include_self=include_self)
    permuted = mean_pairwise_similarity(emb[perm], include_self=include_self)
    np.testing.assert_allclose(permuted, out[perm], atol=1e-9)
    assert ((out >= -1.0) & (out <= 1.0)).all()


sims_unit = st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=30)


@settings(deadline=None, max_examples=150)
@given(sims_unit, st.integers(1, 40), st.floats(0.5, 1.0))
def test_support_set_contains_argmax_and_all_above_threshold(
    sims: list[float], n_sup_base: int, gamma: float
) -> None:
    s = np.array(sims)
    out = support_set(s, n_sup_base, gamma)
    ordered = np.sort(s)[::-1]
    ref = ordered[n_sup_base - 1] if len(s) >= n_sup_base else ordered[-1]
    assert int(np.argmax(s)) in out
    np.testing.assert_array_equal(np.sort(out), np.flatnonzero(s >= gamma * ref))
    # sorted by similarity descending, ties by index ascending
    keys = list(zip(-s[out], out, strict=True))
    assert keys == sorted(keys)


@settings(deadline=None, max_examples=150)
@given(
    st.lists(st.floats(-1, 1, allow_subnormal=False), min_size=1, max_size=30),
    st.integers(1, 40),
    st.floats(0.5, 1.0),
)
def test_support_set_authors_rule_is_exact(
    sims: list[float], n_sup_base: int, gamma: float
) -> None:
    s = np.array(sims)
    ordered = np.sort(s)[::-1]
    ref = ordered[n_sup_base] if len(s) >= n_sup_base + 1 else ordered[-1]
    out = support_set(s, n_sup_base, gamma, rule="authors")
    np.testing.assert_array_equal(np.sort(out), np.flatnonzero(s > gamma * ref))


@settings(deadline=None, max_examples=100)
@given(
    st.integers(1, 5).flatmap(
        lambda r: st.integers(0, 8).flatmap(
            lambda n: st.tuples(
                arrays(np.float64, (n,), elements=st.floats(-1, 1)),
                arrays(np.float64, (r, n), elements=st.floats(-5, 5)),
                arrays(np.float64, (r, n), elements=st.floats(-5, 5)),
                arrays(np.bool_, (r, n)),
            )
        )
    ),
    st.floats(-3, 3),
    st.floats(-3, 3),
    st.booleans(),
)
def test_prior_scores_linear_in_capability(
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    a: float,
    b: float,
    weighted: bool,
) -> None:
    s, c1, c2, mask = data
    combined = prior_scores(s, a * c1 + b * c2, mask, weighted=weighted)
    separate = a * prior_scores(s, c1, mask, weighted=weighted) + b * prior_scores(
        s, c2, mask, weighted=weighted
    )
    np.testing.assert_allclose(combined, separate, atol=1e-9)


@settings(deadline=None, max_examples=100)
@given(
    st.integers(1, 20).flatmap(
        lambda q: st.integers(1, 8).flatmap(
            lambda r: st.tuples(
                arrays(np.float64, (q, r), elements=st.floats(0, 0.99)),
                arrays(np.bool_, (q, r)),
                arrays(np.bool_, (q, r)),
            )
        )
    ),
    st.sampled_from(["strict", "half"]),
)
def test_pairwise_ranking_score_bounds_and_perfect_ranking(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], ties: str
) -> None:
    noise, correct, measured = data
    score = pairwise_ranking_score(noise, correct, measured, ties=ties)  # type: ignore[arg-type]
    assert math.isnan(score) or 0.0 <= score <= 1.0
    # priors = correctness with a margin (noise < 1): every correct model outranks every wrong one
    perfect = pairwise_ranking_score(
        correct * 2.0 + noise,
        correct,
        measured,
        ties=ties,  # type: ignore[arg-type]
    )
    pairs_exist = any(
        (measured[q] & correct[q]).any() and (measured[q] & ~correct[q]).any()
        for q in range(correct.shape[0])
    )
    if pairs_exist:
        assert perfect == 1.0
    else:
        assert math.isnan(perfect)

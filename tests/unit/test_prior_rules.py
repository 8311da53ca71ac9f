"""The one prior-rule interface (`core.prior_rules`): registry, incremental refit, P(correct)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, get_args

import numpy as np
import pytest

from smcs_graph.config import PriorRule
from smcs_graph.core import prior_rules
from smcs_graph.core.learned import Blend
from smcs_graph.core.prior_rules import (
    RULES,
    BankArrays,
    Evidence,
    PriorRuleBase,
    make_rule,
    register,
)
from smcs_graph.offline.evaluation.probability import expected_calibration_error

DIM = 384


def _bank(n: int, models: int, seed: int = 0) -> tuple[BankArrays, np.ndarray]:
    """A planted bank: each model's P(right) a logistic function of the embedding, 5% of cells
    unmeasured, 8 categories; also the planted probabilities (R, N)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    labels = rng.integers(0, 8, size=n)
    emb = centres[labels] + 0.8 * rng.normal(size=(n, DIM))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    skill = rng.normal(scale=2.0, size=(models, DIM))
    p = 1.0 / (1.0 + np.exp(-(emb @ skill.T).T))
    cap = (rng.random((models, n)) < p).astype(np.float64)
    measured = rng.random((models, n)) > 0.05
    names = [f"m{i}" for i in range(models)]
    return BankArrays(emb, cap, measured, [f"c{c}" for c in labels], names), p


def _with_model(bank: BankArrays, name: str, seed: int) -> BankArrays:
    rng = np.random.default_rng(seed)
    outcomes = (rng.random(len(bank)) < 0.4).astype(np.float64)
    return BankArrays(
        bank.embeddings,
        np.vstack([bank.capability, outcomes]),
        np.vstack([bank.measured, np.ones(len(bank), bool)]),
        bank.categories,
        [*bank.names, name],
    )


def _rule(name: str) -> PriorRuleBase:
    """Small settings keep the 12k fits quick (the learned rule: a fixed blend, no folds)."""
    extra = {"rank": 16, "blend": Blend(0.6, 0.5, 0.0)} if name == "learned" else {}
    return make_rule(name, n_sup_base=50, calibration_queries=300, **extra)


def test_every_configurable_rule_is_registered() -> None:
    assert set(RULES) == set(get_args(PriorRule))
    with pytest.raises(ValueError, match="unknown prior rule 'nope'; choose one of hier,"):
        make_rule("nope")
    with pytest.raises(ValueError, match="not fitted: call fit"):
        make_rule("hier").priors(
            ["a"], Evidence(np.ones(1), np.ones((1, 1)), np.ones((1, 1), bool))
        )


def test_a_new_rule_is_one_class_and_one_registration() -> None:
    @register
    @dataclass(frozen=True, eq=False, kw_only=True)
    class MostMeasured(PriorRuleBase):
        """Toy rule: each model's count of measured support questions."""

        name: ClassVar[str] = "most-measured"

        def _fit_shared(self, bank: BankArrays) -> None:
            return None

        def _fit_model(self, outcomes: np.ndarray, measured: np.ndarray) -> None:
            return None

        def _priors(self, names, evidence):  # type: ignore[no-untyped-def]
            return np.where(evidence.support, 1.0, 0.0) @ evidence.measured.T

        def feature(self, priors, evidence):  # type: ignore[no-untyped-def]
            return priors

    try:
        bank, _ = _bank(600, 3)
        rule = make_rule("most-measured", n_sup_base=20, calibration_queries=200).fit(bank)
        sims = np.asarray(bank.embeddings[:4] @ bank.embeddings.T, dtype=np.float64)
        evidence = rule.bank_evidence(sims, bank)
        priors = rule.priors(bank.names, evidence)
        assert priors.shape == (4, 3)
        p = rule.p_correct(bank.names, evidence)
        assert p.shape == (4, 3) and ((p > 0.0) & (p < 1.0)).all()
        with pytest.raises(ValueError, match="already registered"):
            register(MostMeasured)
    finally:
        RULES.pop("most-measured", None)


@pytest.mark.parametrize("name", sorted(get_args(PriorRule)))
def test_adding_one_model_to_a_12k_bank_refits_only_that_model(name: str) -> None:
    bank, _ = _bank(12_000, 5)
    fitted = _rule(name).fit(bank)
    grown_bank = _with_model(bank, "new", seed=1)
    grown = fitted.refit_model("new", grown_bank)
    assert set(grown.models) == {*bank.names, "new"}
    assert grown.calibration == fitted.calibration
    if name == "learned":  # the shared map and blend kept; the kNN part refits "new" alone
        kept, moved = fitted.shared, grown.shared
        assert moved.question_map is kept.question_map and moved.blend is kept.blend
        assert moved.features is kept.features and moved.knn.shared is kept.knn.shared
        for model in bank.names:
            assert moved.knn.models[model] is kept.knn.models[model]
    else:
        assert grown.shared is fitted.shared
    for model in bank.names:  # every other model's parameters: kept, not recomputed
        before, after = fitted.models[model], grown.models[model]
        assert after is before
        if before is None:
            assert after is None
            continue
        flat_b = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in _parts(before)])
        flat_a = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in _parts(after)])
        assert np.array_equal(flat_b, flat_a)
        assert grown.accuracy[model] == fitted.accuracy[model]
    # The new model's state is what a fit of the grown bank gives it (one code path).
    scratch = _rule(name).fit(grown_bank, calibrate=False)
    new_refit, new_scratch = grown.models["new"], scratch.models["new"]
    if new_refit is not None:
        assert np.array_equal(
            np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in _parts(new_refit)]),
            np.concatenate(
                [np.ravel(np.asarray(x, dtype=np.float64)) for x in _parts(new_scratch)]
            ),
        )
    # It ranks: a query scored by the grown rule has a prior for the new model.
    sims = np.asarray(bank.embeddings[:3] @ bank.embeddings.T, dtype=np.float64)
    evidence = grown.bank_evidence(sims, grown_bank, bank.embeddings[:3])
    assert grown.priors(grown_bank.names, evidence).shape == (3, 6)


def _parts(state: object) -> list[object]:
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("name", sorted(get_args(PriorRule)))
def test_every_rule_gives_a_calibrated_p_correct(name: str) -> None:
    """Platt scaling fitted at `fit` on held-out bank rows: on fresh questions from the same
    distribution the expected calibration error is small."""
    full, _ = _bank(6000, 4, seed=3)
    bank = BankArrays(
        full.embeddings[:5000],
        full.capability[:, :5000],
        full.measured[:, :5000],
        full.categories[:5000],
        full.names,
    )
    fitted = _rule(name).fit(bank)
    assert fitted.calibration is not None
    sims = np.asarray(full.embeddings[5000:] @ bank.embeddings.T, dtype=np.float64)
    evidence = fitted.bank_evidence(sims, bank, full.embeddings[5000:])
    p = fitted.p_correct(full.names, evidence)
    truth, mask = full.capability[:, 5000:].T, full.measured[:, 5000:].T
    assert expected_calibration_error(p, truth, mask) < 0.05
    # An uncalibrated score would be far off for the paper's rule (a sum of similarities).
    if name == "paper":
        raw = np.clip(fitted.priors(full.names, evidence), 0.0, 1.0)
        assert expected_calibration_error(raw, truth, mask) > 0.2


def test_too_little_held_out_data_falls_back_to_the_shrunk_estimate() -> None:
    bank, _ = _bank(30, 2)
    fitted = make_rule("paper", n_sup_base=5).fit(bank)
    assert fitted.calibration is None  # 60 outcomes < MIN_CALIBRATION_OUTCOMES
    assert prior_rules.MIN_CALIBRATION_OUTCOMES > 60
    sims = np.asarray(bank.embeddings[:2] @ bank.embeddings.T, dtype=np.float64)
    evidence = fitted.bank_evidence(sims, bank)
    shrunk = make_rule("shrunk", n_sup_base=5).fit(bank, calibrate=False)
    np.testing.assert_array_equal(
        fitted.p_correct(bank.names, evidence), np.clip(shrunk.priors(bank.names, evidence), 0, 1)
    )

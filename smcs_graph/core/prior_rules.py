"""One interface for every prior rule: fit on a bank, refit one model, priors and P(correct).

A rule is a frozen dataclass of settings (`PriorRuleBase`); `fit(bank)` returns a fitted copy
holding a shared part (`shared`, fitted once from the whole bank) and one entry per model
(`models`, each fitted from that model's own outcomes alone), so `refit_model(name, bank)`
replaces one entry and nothing else. `priors(names, evidence)` scores one query or a batch
(`Evidence`); `p_correct(names, evidence)` is the calibrated probability that each model is
right: Platt scaling of the rule's `feature`, fitted at `fit` on seeded bank questions held out
of their own support sets (`held_out`). With too few held-out outcomes to fit it, P(correct)
is the shrunk estimate (support accuracy shrunk toward bank-wide accuracy).

Rules register by name (`register`, `RULES`, `make_rule`): a new rule is one subclass with
`name`, its settings as fields, `_fit_shared`, `_fit_model` and `_priors` (optionally
`feature`), plus `@register`. Pure numpy: the graph (`smcs_graph.selection`) and replay
evaluation build the same objects.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core  # the rules call core's functions through it (patchable seams)
from smcs_graph.core._common import Rule
from smcs_graph.core.learned import (
    Blend,
    QuestionMap,
    fit_held_blend,
    fit_model,
    fit_question_map,
    logit,
    sigmoid,
)
from smcs_graph.core.rps import support_mask
from smcs_graph.core.rules import category_codes, global_accuracy, shrunk_category_table

__all__ = [
    "MIN_CALIBRATION_OUTCOMES",
    "RULES",
    "BankArrays",
    "Evidence",
    "HierRule",
    "LearnedRule",
    "PaperRule",
    "Platt",
    "PriorRuleBase",
    "ShrunkRule",
    "held_rows",
    "make_rule",
    "platt",
    "register",
]

MIN_CALIBRATION_OUTCOMES = 100
"""Held-out measured outcomes (with both right and wrong among them) below which a rule's
Platt scaling is not fitted and P(correct) is the shrunk estimate."""
_EXCLUDED = -2.0  # below any cosine: a held-out question never supports itself
_BLOCK = 256  # held-out rows per similarity block (bounds the (block, N) matrix)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class BankArrays:
    """What a rule is fitted on: a bank's unit embeddings (N, d), the 0/1 `capability` and its
    `measured` mask (R, N) of models `names`, and each question's category (N,)."""

    embeddings: NDArray[np.floating]
    capability: NDArray[np.float64]
    measured: NDArray[np.bool_]
    categories: Sequence[str]
    names: Sequence[str]

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def row(self, name: str) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Model `name`'s outcomes and mask (N,); all unmeasured for a model not in the bank."""
        if name in self.names:
            m = list(self.names).index(name)
            return self.capability[m], self.measured[m]
        return np.zeros(len(self)), np.zeros(len(self), dtype=bool)


@dataclass(frozen=True, eq=False)
class Evidence:
    """Queries to score against n bank questions: `similarities` (Q, n) (one query: (n,)), the
    questions' `capability`/`measured` (R, n) in the scored names' order and `categories` (n,),
    each row's `support` mask (Q, n) (None: every column is in the support set), and the
    query `embeddings` (Q, d) or (d,) (only rules that read them need them)."""

    similarities: NDArray[np.float64]
    capability: NDArray[np.float64]
    measured: NDArray[np.bool_]
    categories: Sequence[str] = ()
    support: NDArray[np.bool_] | None = None
    embeddings: NDArray[np.floating] | None = None


@dataclass(frozen=True)
class Platt:
    """P = sigmoid(scale * x + offset) of a rule's feature x (identity on a logit: 1, 0)."""

    scale: float = 1.0
    offset: float = 0.0

    def __call__(self, feature: ArrayLike) -> NDArray[np.float64]:
        return sigmoid(self.scale * np.asarray(feature, dtype=np.float64) + self.offset)


def platt(feature: ArrayLike, outcomes: ArrayLike, measured: ArrayLike | None = None) -> Platt:
    """Platt scaling: the logistic fit of outcomes on one feature over the measured entries."""
    x = np.asarray(feature, dtype=np.float64).ravel()
    y = np.asarray(outcomes, dtype=np.float64).ravel()
    m = np.ones(y.shape, bool) if measured is None else np.asarray(measured, bool).ravel()
    theta, offset = fit_model(x[:, np.newaxis], y, m, penalty=1e-6)
    return Platt(float(theta[0]), offset)


def held_rows(measured: NDArray[np.bool_], queries: int, seed: int) -> NDArray[np.intp]:
    """Up to `queries` seeded bank rows with at least two measured models, sorted."""
    scorable = np.flatnonzero(np.asarray(measured, bool).sum(axis=0) >= 2)
    rng = np.random.default_rng(seed)
    picked: NDArray[np.intp] = np.sort(rng.permutation(scorable)[: min(queries, scorable.size)])
    return picked


# --------------------------------------------------------------------------- the interface

_R = TypeVar("_R", bound="PriorRuleBase")


@dataclass(frozen=True, eq=False, kw_only=True)
class PriorRuleBase(ABC):
    """A prior rule's settings and, once fitted, its state (see the module docstring)."""

    name: ClassVar[str]
    n_sup_base: int = 400
    gamma: float = 0.95
    support_rule: Rule = "paper"
    calibration_queries: int = 1000
    """Seeded bank questions held out to fit P(correct)'s Platt scaling."""
    calibration_seed: int = 0
    fallback_strength: float = 10.0
    """The shrunk estimate's pseudo-count, P(correct) when too little is held out."""
    fallback_temperature: float | None = 0.1
    # ---- fitted state (empty until `fit`)
    shared: Any = field(default=None, compare=False)
    models: Mapping[str, Any] = field(default_factory=dict, compare=False)
    accuracy: Mapping[str, float] = field(default_factory=dict, compare=False)
    calibration: Platt | None = field(default=None, compare=False)
    calibrated: bool = field(default=False, compare=False)
    """Whether `calibration` was fitted (it stays None when too little was held out)."""
    fitted: bool = field(default=False, compare=False)

    # ---- what a rule defines

    @abstractmethod
    def _fit_shared(self, bank: BankArrays) -> Any:
        """The part fitted once from the whole bank (None: nothing)."""

    @abstractmethod
    def _fit_model(self, outcomes: NDArray[np.float64], measured: NDArray[np.bool_]) -> Any:
        """One model's state from its own outcomes and mask (N,) alone (`self.shared` set)."""

    @abstractmethod
    def _priors(self, names: Sequence[str], evidence: Evidence) -> NDArray[np.float64]:
        """`priors` of the fitted rule."""

    def feature(self, priors: NDArray[np.float64], evidence: Evidence) -> NDArray[np.float64]:
        """What Platt scaling maps to P(correct): the logit of a rule that estimates an
        accuracy (override for one that does not)."""
        return logit(priors)

    # ---- the shared machinery

    def settings(self) -> tuple[Any, ...]:
        """The settings as a hashable key (state excluded): equal keys fit equal rules."""
        values: list[Any] = [self.name]
        for f in dataclasses.fields(self):
            if f.compare:
                value = getattr(self, f.name)
                values.append(value.settings() if isinstance(value, PriorRuleBase) else value)
        return tuple(values)

    def fit(self: _R, bank: BankArrays, *, calibrate: bool = True) -> _R:
        """A fitted copy: the shared part, every model of `bank`, and (`calibrate`) the Platt
        scaling of P(correct) on held-out bank questions."""
        fitted = replace(self, shared=self._fit_shared(bank), fitted=True)
        models = {name: fitted._fit_model(*bank.row(name)) for name in bank.names}
        fitted = replace(fitted, models=models, accuracy=_accuracies(bank, bank.names))
        return fitted.calibrate(bank) if calibrate else fitted

    def calibrate(self: _R, bank: BankArrays) -> _R:
        """A copy with P(correct)'s Platt scaling fitted on held-out rows of `bank` (the bank
        it was fitted on): what `fit` does unless told not to."""
        self._check_fitted()
        return replace(self, calibration=self._calibrate(bank), calibrated=True)

    def refit_model(self: _R, name: str, bank: BankArrays) -> _R:
        """A copy with model `name`'s state fitted (added or replaced) from its outcomes in
        `bank` (the bank it was fitted on, with that model's results changed); the shared part,
        the calibration and every other model's state are kept as they are."""
        self._check_fitted()
        return replace(
            self,
            models={**self.models, name: self._fit_model(*bank.row(name))},
            accuracy={**self.accuracy, **_accuracies(bank, [name])},
        )

    def priors(self, names: Sequence[str], evidence: Evidence) -> NDArray[np.float64]:
        """Priors of `names` (Q, R), or (R,) for one query: the scores selection ranks by."""
        self._check_fitted()
        return self._priors(names, evidence)

    def with_calibration(self: _R, calibration: Platt | None) -> _R:
        """A copy whose P(correct) uses `calibration` (e.g. fitted on other held-out data)."""
        return replace(self, calibration=calibration, calibrated=True)

    def p_correct(
        self,
        names: Sequence[str],
        evidence: Evidence,
        priors: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Calibrated P(correct) of `names`, shaped as `priors` (computed when not given); the
        shrunk estimate while no calibration is fitted (`calibrate`)."""
        self._check_fitted()
        if self.calibration is None:
            g = np.array([self.accuracy.get(n, 0.5) for n in names], dtype=np.float64)
            estimate = core.shrunk_prior_scores(
                evidence.similarities,
                evidence.capability,
                evidence.measured,
                g,
                self.fallback_strength,
                temperature=self.fallback_temperature,
                support=evidence.support,
            )
            return np.clip(estimate, 0.0, 1.0)
        values = self.priors(names, evidence) if priors is None else priors
        return self.calibration(self.feature(np.asarray(values, dtype=np.float64), evidence))

    def bank_evidence(
        self,
        similarities: NDArray[np.float64],
        bank: BankArrays,
        embeddings: NDArray[np.floating] | None = None,
    ) -> Evidence:
        """Evidence of queries against the whole bank: each row's support set (eq. 3 with this
        rule's settings) as a mask."""
        mask = support_mask(similarities, self.n_sup_base, self.gamma, self.support_rule)
        return Evidence(
            similarities, bank.capability, bank.measured, bank.categories, mask, embeddings
        )

    def held_out(
        self, bank: BankArrays
    ) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
        """Seeded bank rows (Q,) and their priors and features (Q, R) of `bank.names`, each
        row left out of its own support set (its outcomes stay in the bank-wide tallies: a 1/N
        leak, below the calibration's own noise on a bank of thousands)."""
        self._check_fitted()
        rows = held_rows(bank.measured, self.calibration_queries, self.calibration_seed)
        unit = np.asarray(bank.embeddings, dtype=np.float32)
        priors = np.zeros((rows.shape[0], len(bank.names)))
        features = np.zeros_like(priors)
        for start in range(0, rows.shape[0], _BLOCK):
            block = rows[start : start + _BLOCK]
            sims = np.clip((unit[block] @ unit.T).astype(np.float64), -1.0, 1.0)
            sims[np.arange(block.shape[0]), block] = _EXCLUDED
            evidence = self.bank_evidence(sims, bank, unit[block])
            part = self.priors(bank.names, evidence)
            priors[start : start + block.shape[0]] = part
            features[start : start + block.shape[0]] = self.feature(part, evidence)
        return rows, priors, features

    def _calibrate(self, bank: BankArrays) -> Platt | None:
        """Platt scaling of `feature` on held-out bank rows (None: too few outcomes)."""
        if len(bank) < 2 or not bank.names:
            return None
        rows, _, feature = self.held_out(bank)
        truth, mask = bank.capability[:, rows].T, bank.measured[:, rows].T
        seen = truth[mask]
        if seen.size < MIN_CALIBRATION_OUTCOMES or seen.min() == seen.max():
            return None
        return platt(feature, truth, mask)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(f"the {self.name!r} prior rule is not fitted: call fit(bank) first")


def _accuracies(bank: BankArrays, names: Sequence[str]) -> dict[str, float]:
    out = {}
    for name in names:
        outcomes, mask = bank.row(name)
        out[name] = float(global_accuracy(outcomes[np.newaxis], mask[np.newaxis])[0])
    return out


RULES: dict[str, type[PriorRuleBase]] = {}
"""Every registered rule class by its `name`."""


def register(cls: type[_R]) -> type[_R]:
    """Class decorator: make rule `cls` available by its `name` (`make_rule`, `RULES`)."""
    if cls.name in RULES:
        raise ValueError(f"a prior rule named {cls.name!r} is already registered")
    RULES[cls.name] = cls
    return cls


def make_rule(name: str, **settings: Any) -> PriorRuleBase:
    """An unfitted rule by name with `settings` (its dataclass fields)."""
    cls = RULES.get(name)
    if cls is None:
        raise ValueError(f"unknown prior rule {name!r}; choose one of {', '.join(sorted(RULES))}")
    return cls(**settings)


def _stack(models: Mapping[str, Any], names: Sequence[str], default: Any) -> NDArray[np.float64]:
    return np.array([models.get(n, default) for n in names], dtype=np.float64)


# --------------------------------------------------------------------------- the rules


@register
@dataclass(frozen=True, eq=False, kw_only=True)
class PaperRule(PriorRuleBase):
    """Eq. 4 (`core.prior_scores`): the similarity-weighted count of correct support answers.
    P(correct) is calibrated on V / the support set's total similarity (a per-query rescaling
    that keeps the ranking)."""

    name: ClassVar[str] = "paper"
    weighted: bool = True

    def _fit_shared(self, bank: BankArrays) -> None:
        return None

    def _fit_model(self, outcomes: NDArray[np.float64], measured: NDArray[np.bool_]) -> None:
        return None

    def _priors(self, names: Sequence[str], evidence: Evidence) -> NDArray[np.float64]:
        return core.prior_scores(
            evidence.similarities,
            evidence.capability,
            evidence.measured,
            weighted=self.weighted,
            support=evidence.support,
        )

    def feature(self, priors: NDArray[np.float64], evidence: Evidence) -> NDArray[np.float64]:
        sims = evidence.similarities
        inside = sims if evidence.support is None else np.where(evidence.support, sims, 0.0)
        total = inside.sum(axis=-1, keepdims=True)
        out: NDArray[np.float64] = np.divide(
            priors, total, out=np.zeros_like(priors), where=total > 0.0
        )
        return out


@register
@dataclass(frozen=True, eq=False, kw_only=True)
class ShrunkRule(PriorRuleBase):
    """`core.shrunk_prior_scores`: support accuracy shrunk toward bank-wide accuracy g_m (the
    per-model state)."""

    name: ClassVar[str] = "shrunk"
    strength: float = 10.0
    temperature: float | None = 0.1

    def _fit_shared(self, bank: BankArrays) -> None:
        return None

    def _fit_model(self, outcomes: NDArray[np.float64], measured: NDArray[np.bool_]) -> float:
        return float(global_accuracy(outcomes[np.newaxis], measured[np.newaxis])[0])

    def _priors(self, names: Sequence[str], evidence: Evidence) -> NDArray[np.float64]:
        return core.shrunk_prior_scores(
            evidence.similarities,
            evidence.capability,
            evidence.measured,
            _stack(self.models, names, 0.5),
            self.strength,
            temperature=self.temperature,
            support=evidence.support,
        )


@dataclass(frozen=True, eq=False)
class _Categories:
    """The hier rule's shared part: the bank's sorted category names and each row's index."""

    names: list[str]
    codes: NDArray[np.intp]


@register
@dataclass(frozen=True, eq=False, kw_only=True)
class HierRule(PriorRuleBase):
    """`core.hier_prior_scores`: support accuracy shrunk toward the inferred category's
    accuracy, itself shrunk toward g_m. Per model: (g_m, its per-category accuracy row)."""

    name: ClassVar[str] = "hier"
    strength: float = 0.5
    temperature: float = 0.1
    category_temperature: float = 0.05
    category_strength: float = 10.0

    def _fit_shared(self, bank: BankArrays) -> _Categories:
        names, codes = category_codes([str(c) for c in bank.categories])
        return _Categories(names, codes)

    def _fit_model(
        self, outcomes: NDArray[np.float64], measured: NDArray[np.bool_]
    ) -> tuple[float, NDArray[np.float64]]:
        cats: _Categories = self.shared
        size = len(cats.names)
        right = np.bincount(cats.codes[measured & (outcomes == 1)], minlength=size)
        seen = np.bincount(cats.codes[measured], minlength=size)
        row = shrunk_category_table(
            right[np.newaxis].astype(np.float64),
            seen[np.newaxis].astype(np.float64),
            self.category_strength,
        )[0]
        return float(global_accuracy(outcomes[np.newaxis], measured[np.newaxis])[0]), row

    def _priors(self, names: Sequence[str], evidence: Evidence) -> NDArray[np.float64]:
        cats: _Categories = self.shared
        default = (0.5, np.full(len(cats.names), 0.5))
        states = [self.models.get(n, default) for n in names]
        table = np.array([row for _, row in states], dtype=np.float64).reshape(
            len(names), len(cats.names)
        )
        return core.hier_prior_scores(
            evidence.similarities,
            evidence.capability,
            evidence.measured,
            evidence.categories,
            {c: table[:, j] for j, c in enumerate(cats.names)},
            np.array([g for g, _ in states], dtype=np.float64),
            self.strength,
            temperature=self.temperature,
            category_temperature=self.category_temperature,
            support=evidence.support,
        )


@dataclass(frozen=True, eq=False)
class _Learned:
    """The learned rule's shared part: the fitted kNN rule, the question map (None: a bank too
    small to learn from, the kNN rule alone) and the blend."""

    knn: HierRule
    question_map: QuestionMap | None
    blend: Blend
    features: NDArray[np.float64] | None
    """f of every bank question (N, k): what each model's parameters are fitted on."""


@register
@dataclass(frozen=True, eq=False, kw_only=True)
class LearnedRule(PriorRuleBase):
    """`core.learned`: P = blend(sigmoid(theta_m . f(q) + b_m), kNN) with the `knn` rule's priors
    as the kNN evidence. Shared: the map f (the bank's embeddings alone), the blend (`blend`,
    else fitted on `folds`-fold held-out logits against the kNN rule's held-out priors) and the
    fitted kNN rule; per model: (theta_m, b_m) and its kNN state. Its blend is fitted on
    held-out data, so P(correct) is the blended probability itself."""

    name: ClassVar[str] = "learned"
    rank: int = 32
    penalty: float = 1000.0
    knn: HierRule = field(default_factory=HierRule)
    blend: Blend | None = None
    folds: int = 3
    seed: int = 0

    def _fit_shared(self, bank: BankArrays) -> _Learned:
        knn = self.knn.fit(bank, calibrate=False)
        if len(bank) < 2:
            return _Learned(knn, None, Blend(), None)
        emb = np.asarray(bank.embeddings, dtype=np.float64)
        rank = max(1, min(self.rank, len(bank) - 1, emb.shape[1]))
        blend = self.blend
        if blend is None:
            held = knn.held_out(bank) if bank.names else None
            if held is not None and held[0].size:
                blend = fit_held_blend(
                    emb,
                    bank.capability,
                    bank.measured,
                    held[:2],
                    rank,
                    self.penalty,
                    folds=self.folds,
                    seed=self.seed,
                )
            else:
                blend = Blend()
        question_map = fit_question_map(emb, rank)
        return _Learned(knn, question_map, blend, question_map(emb))

    def _fit_model(
        self, outcomes: NDArray[np.float64], measured: NDArray[np.bool_]
    ) -> tuple[NDArray[np.float64], float] | None:
        shared: _Learned = self.shared
        if shared.features is None:
            return None
        return fit_model(shared.features, outcomes, measured, self.penalty)

    def calibrate(self, bank: BankArrays) -> LearnedRule:
        return self.with_calibration(Platt())  # the blend is already fitted on held-out folds

    def refit_model(self, name: str, bank: BankArrays) -> LearnedRule:
        shared: _Learned = self.shared
        knn = shared.knn.refit_model(name, bank)
        moved = replace(self, shared=replace(shared, knn=knn))
        return super(LearnedRule, moved).refit_model(name, bank)

    def _priors(self, names: Sequence[str], evidence: Evidence) -> NDArray[np.float64]:
        shared: _Learned = self.shared
        knn = shared.knn.priors(names, evidence)
        if shared.question_map is None:
            return knn
        if evidence.embeddings is None:
            raise ValueError("the 'learned' prior rule needs the query embeddings in Evidence")
        k = shared.question_map.rank
        zero = (np.zeros(k), 0.0)
        params = [self.models.get(n) or zero for n in names]
        theta = np.array([p[0] for p in params], dtype=np.float64).reshape(len(names), k)
        bias = np.array([p[1] for p in params], dtype=np.float64)
        logits = shared.question_map(evidence.embeddings) @ theta.T + bias
        return shared.blend(logits, knn)

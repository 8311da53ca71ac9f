"""Replay evaluation of prior selection: no LLM call, only recorded correctness.

The questions are split into a bank and a held-out test set (stratified by category, seeded).
Each method ranks the R models for every test question using the bank only; the ranking is
scored against the recorded correctness of the test question:

- top-1 routing accuracy: the top-ranked model is correct;
- top-K coverage: at least one of the K top-ranked models is correct;
- pairwise ranking score (eq. 8, `core.pairwise_ranking_score`).

Missing records (`measured` False) are never counted as wrong. In the bank they are no
evidence (the paper's prior ignores them; the shrunk and hier rules average over measured cells
only). The hier rule uses the bank questions' categories, never the test question's.
On a test question, each method ranks only the models that have a record there (an unmeasured
model cannot be scored, so it is skipped and the next-ranked model counts); test questions with
fewer than two measured models are left out, and the report counts both cases.

Each rule is the object the graph runs (`core.prior_rules`), fitted on the bank split and asked
for the test questions' priors and P(correct) in one batch (each row's support set a mask); the
shrunk and hier settings come from `calibration` (leave-one-out on the bank split), the learned
rule's from `learned` (cross-validation on the bank split), the scores from `metrics`. Every
rule's P(correct) is Platt-scaled on held-out bank questions (at its fit; hier's on its
leave-one-out priors; learned's blend is fitted on held-out folds) and its expected calibration
error measured on the test split. The told-category router ranks
by category accuracy, ties broken by bank-wide accuracy, then pool order (`router_scores`).
Everything works on numpy arrays: `embeddings` (N, d) unit rows,
`capability` and `measured` (R, N) (the layout of `QuestionBank.capability`), `categories`
(N,).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core
from smcs_graph.core import PriorRule
from smcs_graph.core.learned import logit as learned_logit
from smcs_graph.core.prior_rules import (
    BankArrays,
    HierRule,
    LearnedRule,
    PaperRule,
    PriorRuleBase,
    ShrunkRule,
)
from smcs_graph.offline.evaluation.calibration import (
    HierChoice,
    ShrunkChoice,
    calibrate_shrunk,
    hier_loo,
)
from smcs_graph.offline.evaluation.heldout import bank_queries, router_feature
from smcs_graph.offline.evaluation.learned import LearnedChoice, calibrate_learned
from smcs_graph.offline.evaluation.metrics import (
    Metrics,
    evaluate_rankings,
    random_metrics,
)
from smcs_graph.offline.evaluation.priors import rps_priors, similarity_matrix, unit_rows
from smcs_graph.offline.evaluation.probability import (
    Platt,
    ReliabilityBin,
    expected_calibration_error,
    platt,
    reliability,
)
from smcs_graph.offline.evaluation.settings import ReplaySettings
from smcs_graph.offline.evaluation.splits import Split, stratified_split

__all__ = [
    "METHODS",
    "ReplayReport",
    "ReplaySettings",
    "Split",
    "SplitInfo",
    "router_scores",
    "rule_method",
    "run_replay",
    "stratified_split",
]


def rule_method(rule: PriorRule) -> str:
    """The replay method that scores RPS with prior rule `rule`: "rps" (the paper's), or
    "rps-<rule>"."""
    return "rps" if rule == "paper" else f"rps-{rule}"


METHODS = (
    *(rule_method(rule) for rule in get_args(PriorRule)),
    "best-single",
    "per-category",
    "random",
    "oracle",
)
"""Method names in report order."""


# --------------------------------------------------------------------------- the replay


@dataclass(frozen=True)
class SplitInfo:
    """Counts of one split (how missing records were handled)."""

    seed: int
    bank_questions: int
    test_questions: int
    evaluated: int
    skipped: int
    """Test questions left out: fewer than two measured models."""
    with_unmeasured: int
    """Evaluated test questions where at least one model has no record (ranked without it)."""
    best_single: str
    shrunk: ShrunkChoice | None
    """The shrunk rule's calibrated settings (None when that rule is not scored)."""
    hier: HierChoice | None = None
    """The hier rule's settings (None when that rule is not scored)."""
    learned: LearnedChoice | None = None
    """The learned rule's settings (None when that rule is not scored)."""
    platt: dict[str, Platt] = field(default_factory=dict)
    """Each scored method's Platt scaling, fitted on held-out bank questions."""


@dataclass
class ReplayReport:
    """Per-seed metrics of every method, the paper-RPS sweep, and the split counts."""

    models: list[str]
    questions: int
    categories: int
    settings: ReplaySettings
    results: dict[str, list[Metrics]] = field(default_factory=dict)
    sweep: dict[tuple[int, float], list[Metrics]] = field(default_factory=dict)
    splits: list[SplitInfo] = field(default_factory=list)
    ece: dict[str, list[float]] = field(default_factory=dict)
    """Per method, the expected calibration error of its P(correct) on each split's test set."""
    reliability: dict[str, list[list[ReliabilityBin]]] = field(default_factory=dict)
    """Per method, each split's reliability table (`probability.reliability`)."""

    def summary(self, method: str) -> dict[str, dict[str, float]]:
        """Mean, std (population, ddof=0), min and max over the seeds of each metric."""
        return _summarize(self.results[method], self.settings.coverage_k)

    def sweep_summary(self) -> dict[tuple[int, float], dict[str, dict[str, float]]]:
        return {key: _summarize(runs, self.settings.coverage_k) for key, runs in self.sweep.items()}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, split counts, per-seed metrics and summaries."""
        return {
            "models": self.models,
            "questions": self.questions,
            "categories": self.categories,
            "settings": asdict(self.settings),
            "splits": [asdict(s) for s in self.splits],
            "methods": {
                name: {
                    "summary": self.summary(name),
                    "per_seed": [m.as_dict() for m in runs],
                    "ece": self.ece.get(name),
                    "reliability": [[asdict(b) for b in t] for t in self.reliability.get(name, [])],
                }
                for name, runs in self.results.items()
            },
            "sweep": [
                {"n_sup_base": n, "gamma": g, "summary": summary}
                for (n, g), summary in self.sweep_summary().items()
            ],
        }


def _metric_values(metrics: Metrics, coverage_k: Sequence[int]) -> dict[str, float]:
    values = {"top1": metrics.top1, "pairwise": metrics.pairwise}
    values.update({f"top{k}_coverage": metrics.coverage[k] for k in coverage_k})
    return values


def _summarize(runs: Sequence[Metrics], coverage_k: Sequence[int]) -> dict[str, dict[str, float]]:
    table = [_metric_values(m, coverage_k) for m in runs]
    out: dict[str, dict[str, float]] = {}
    for name in table[0]:
        values = np.array([row[name] for row in table], dtype=np.float64)
        out[name] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def run_replay(
    embeddings: ArrayLike,
    capability: ArrayLike,
    measured: ArrayLike,
    categories: Sequence[str],
    models: Sequence[str],
    settings: ReplaySettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ReplayReport:
    """Score every method of `METHODS` on each seeded split (see the module docstring)."""
    cfg = settings or ReplaySettings()
    emb = np.asarray(embeddings, dtype=np.float32)
    cap = np.asarray(capability, dtype=np.float64)
    mask = np.asarray(measured, dtype=bool)
    labels = list(categories)
    n = len(labels)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must be ({n}, d) for {n} questions, got {emb.shape}")
    if cap.shape != (len(models), n) or mask.shape != cap.shape:
        raise ValueError(
            f"capability and measured must be (models, questions) = ({len(models)}, {n}); got "
            f"{cap.shape} and {mask.shape}"
        )
    if not np.isin(cap[mask], (0.0, 1.0)).all():
        raise ValueError("capability must hold only 0/1 in measured entries")
    emb = unit_rows(emb)
    report = ReplayReport(
        models=list(models), questions=n, categories=len(set(labels)), settings=cfg
    )
    for seed in cfg.seeds:
        split = stratified_split(labels, cfg.test_fraction, seed)
        info, scores, sweep, calibrated = _replay_split(
            emb, cap, mask, labels, list(models), split, cfg
        )
        report.splits.append(info)
        for name, (ece, table) in calibrated.items():
            report.ece.setdefault(name, []).append(ece)
            report.reliability.setdefault(name, []).append(table)
        for name, metrics in scores.items():
            report.results.setdefault(name, []).append(metrics)
        for key, metrics in sweep.items():
            report.sweep.setdefault(key, []).append(metrics)
        if progress is not None:
            parts = [f"seed {seed}: {info.evaluated} test questions; top-1"]
            parts += [f"{name} {scores[name].top1:.4f}" for name in METHODS if name in scores]
            if info.shrunk is not None:
                parts.append(
                    f"(shrunk: N_sup_base={info.shrunk.n_sup_base}, "
                    f"temperature={info.shrunk.temperature}, strength={info.shrunk.strength:g})"
                )
            if info.hier is not None:
                parts.append(
                    f"(hier: temperature={info.hier.temperature:g}, "
                    f"strength={info.hier.strength:g})"
                )
            if info.learned is not None:
                edge = f", at the grid's edge: {'/'.join(info.learned.at_edge)}"
                parts.append(
                    f"(learned: rank={info.learned.rank}, penalty={info.learned.penalty:g}"
                    + (edge if info.learned.at_edge else "")
                    + ")"
                )
            progress(" ".join(parts))
    return report


def router_scores(
    accuracy: NDArray[np.float64], overall: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The told-category router's ranking as scores (Q, R): category accuracy descending, ties
    broken by bank-wide accuracy `overall` (R,) descending, then by pool order."""
    r = accuracy.shape[1]
    keys = np.broadcast_to(-overall, accuracy.shape)
    order = np.lexsort((np.broadcast_to(np.arange(r), accuracy.shape), keys, -accuracy), axis=1)
    scores = np.empty(accuracy.shape, dtype=np.float64)
    np.put_along_axis(scores, order, np.arange(r, 0, -1, dtype=np.float64)[np.newaxis, :], 1)
    return scores


_Calibrated = dict[str, tuple[float, list[ReliabilityBin]]]


def _replay_split(
    emb: NDArray[np.float32],
    cap: NDArray[np.float64],
    mask: NDArray[np.bool_],
    labels: list[str],
    models: list[str],
    split: Split,
    cfg: ReplaySettings,
) -> tuple[SplitInfo, dict[str, Metrics], dict[tuple[int, float], Metrics], _Calibrated]:
    test = split.test[mask[:, split.test].sum(axis=0) >= 2]
    bank_cap, bank_mask = cap[:, split.bank], mask[:, split.bank]
    bank_emb, bank_labels = emb[split.bank], [labels[i] for i in split.bank]
    truth, truth_mask = cap[:, test].T, mask[:, test].T
    sims = similarity_matrix(emb[test], bank_emb)
    overall = core.global_accuracy(bank_cap, bank_mask)
    per_category = core.category_accuracy(bank_cap, bank_mask, bank_labels)
    # Held-out bank queries for the router's Platt scaling (each rule fits its own at `fit`;
    # hier's comes from its leave-one-out priors, learned's blend from its folds).
    held = bank_queries(bank_mask, cfg.calibration_queries, split.seed)
    held_truth, held_mask = bank_cap[:, held].T, bank_mask[:, held].T

    def score(priors: NDArray[np.float64]) -> Metrics:
        return evaluate_rankings(priors, truth, truth_mask, cfg.coverage_k)

    scores: dict[str, Metrics] = {}
    calibrated: _Calibrated = {}

    def calibrate(method: str, test_feature: NDArray[np.float64], scaling: Platt) -> None:
        p = scaling(test_feature)
        calibrated[method] = (
            expected_calibration_error(p, truth, truth_mask, cfg.calibration_bins),
            reliability(p, truth, truth_mask, cfg.calibration_bins),
        )
        platts[method] = scaling

    platts: dict[str, Platt] = {}
    bank = BankArrays(bank_emb, bank_cap, bank_mask, bank_labels, models)
    support: dict[str, Any] = {
        "n_sup_base": cfg.n_sup_base,
        "gamma": cfg.gamma,
        "support_rule": cfg.support_rule,
        "calibration_queries": cfg.calibration_queries,
        "calibration_seed": split.seed,
    }

    def run(method: str, rule: PriorRuleBase, calibration: Platt | None = None) -> None:
        """Score a fitted rule's priors (the graph's one method) and its P(correct) on the test
        split, calibrated at its fit unless `calibration` is given."""
        if calibration is not None:
            rule = rule.with_calibration(calibration)
        evidence = rule.bank_evidence(sims, bank, emb[test])
        priors = rule.priors(models, evidence)
        scores[method] = score(priors)
        p = rule.p_correct(models, evidence, priors)
        calibrated[method] = (
            expected_calibration_error(p, truth, truth_mask, cfg.calibration_bins),
            reliability(p, truth, truth_mask, cfg.calibration_bins),
        )
        if rule.calibration is not None:
            platts[method] = rule.calibration

    if "paper" in cfg.rules:
        run(rule_method("paper"), PaperRule(**support).fit(bank))
    choice: ShrunkChoice | None = None
    if "shrunk" in cfg.rules:
        choice = calibrate_shrunk(
            bank_emb,
            bank_cap,
            bank_mask,
            gamma=cfg.gamma,
            rule=cfg.support_rule,
            n_sup_grid=cfg.shrunk_n_sup_grid,
            temperature_grid=cfg.shrunk_temperature_grid,
            strength_grid=cfg.shrunk_strength_grid,
            queries=cfg.calibration_queries,
            seed=split.seed,
        )
        shrunk = ShrunkRule(
            **{**support, "n_sup_base": choice.n_sup_base},
            strength=choice.strength,
            temperature=choice.temperature,
        )
        run(rule_method("shrunk"), shrunk.fit(bank))
    hier: HierChoice | None = None
    learned_choice: LearnedChoice | None = None
    if "hier" in cfg.rules or "learned" in cfg.rules:
        hier, hier_rows, hier_held = hier_loo(
            bank_emb,
            bank_cap,
            bank_mask,
            bank_labels,
            n_sup_base=cfg.n_sup_base,
            gamma=cfg.gamma,
            rule=cfg.support_rule,
            temperature_grid=cfg.hier_temperature_grid,
            strength_grid=cfg.hier_strength_grid,
            category_temperature=cfg.hier_category_temperature,
            category_strength=cfg.hier_category_strength,
            queries=cfg.hier_calibration_queries,
            seed=split.seed,
        )
        knn = HierRule(
            **support,
            strength=hier.strength,
            temperature=hier.temperature,
            category_temperature=hier.category_temperature,
            category_strength=hier.category_strength,
        )
        if "hier" in cfg.rules:
            # Platt on the leave-one-out priors (the category prior rebuilt without the query).
            held_truth_h = bank_cap[:, hier_rows].T
            held_mask_h = bank_mask[:, hier_rows].T
            scaling = platt(learned_logit(hier_held), held_truth_h, held_mask_h)
            run(rule_method("hier"), knn.fit(bank, calibrate=False), scaling)
        if "learned" in cfg.rules:
            learned_choice = calibrate_learned(
                bank_emb,
                bank_cap,
                bank_mask,
                hier_rows,
                hier_held,
                rank_grid=cfg.learned_rank_grid,
                penalty_grid=cfg.learned_penalty_grid,
                folds=cfg.learned_folds,
                seed=split.seed,
            )
            learned_rule = LearnedRule(
                **support,
                rank=learned_choice.rank,
                penalty=learned_choice.penalty,
                knn=knn,
                blend=learned_choice.blend,
            )
            # The blend is fitted on held-out folds already: its probability as it is.
            run(rule_method("learned"), learned_rule.fit(bank))
        if "hier" not in cfg.rules:
            hier = None
    scores["best-single"] = score(np.broadcast_to(overall, truth.shape).copy())
    router = router_feature(per_category, [labels[i] for i in test])
    scores["per-category"] = score(router_scores(router, overall))
    held_router = router_feature(per_category, [bank_labels[i] for i in held])
    scaling = platt(learned_logit(held_router), held_truth, held_mask)
    calibrate("per-category", learned_logit(router), scaling)
    scores["random"] = random_metrics(truth, truth_mask, cfg.coverage_k)
    scores["oracle"] = score(np.where(truth_mask, truth, 0.0))
    sweep = {
        (n_sup, gamma): score(
            rps_priors(sims, bank_cap, bank_mask, n_sup, gamma, rule=cfg.support_rule)
        )
        for n_sup in cfg.sweep_n_sup_base
        for gamma in cfg.sweep_gamma
    }
    info = SplitInfo(
        seed=split.seed,
        bank_questions=int(split.bank.shape[0]),
        test_questions=int(split.test.shape[0]),
        evaluated=int(test.shape[0]),
        skipped=int(split.test.shape[0] - test.shape[0]),
        with_unmeasured=int((~truth_mask).any(axis=1).sum()),
        best_single=models[int(np.argmax(overall))],
        shrunk=choice,
        hier=hier,
        learned=learned_choice,
        platt=platts,
    )
    return info, scores, sweep, calibrated

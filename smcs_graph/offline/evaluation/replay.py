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

The priors come from `smcs_graph.core` through `priors` (the code the graph runs, in batch
form), the shrunk and hier settings from `calibration` (leave-one-out on the bank split), the
scores from `metrics`. Everything works on numpy arrays: `embeddings` (N, d) unit rows,
`capability` and `measured` (R, N) (the layout of `QuestionBank.capability`), `categories`
(N,).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core
from smcs_graph.core import PriorRule
from smcs_graph.offline.evaluation.calibration import (
    DEFAULT_CALIBRATION_QUERIES,
    DEFAULT_HIER_CALIBRATION_QUERIES,
    DEFAULT_HIER_CATEGORY_STRENGTH,
    DEFAULT_HIER_CATEGORY_TEMPERATURE,
    DEFAULT_HIER_STRENGTH,
    DEFAULT_HIER_TEMPERATURE,
    DEFAULT_SHRUNK_N_SUP,
    DEFAULT_SHRUNK_STRENGTH,
    DEFAULT_SHRUNK_TEMPERATURE,
    HierChoice,
    ShrunkChoice,
    calibrate_hier,
    calibrate_shrunk,
)
from smcs_graph.offline.evaluation.metrics import (
    DEFAULT_COVERAGE_K,
    Metrics,
    evaluate_rankings,
    random_metrics,
)
from smcs_graph.offline.evaluation.priors import (
    hier_priors,
    rps_priors,
    shrunk_priors,
    similarity_matrix,
    unit_rows,
)

__all__ = [
    "METHODS",
    "ReplayReport",
    "ReplaySettings",
    "Split",
    "SplitInfo",
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


# --------------------------------------------------------------------------- splits


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


# --------------------------------------------------------------------------- the replay


@dataclass(frozen=True)
class ReplaySettings:
    """What `run_replay` measures; the defaults are the paper's (section A.3) and split."""

    rules: tuple[PriorRule, ...] = get_args(PriorRule)
    """Which RPS prior rules to score, each as method `rule_method(rule)`: "paper" ("rps"),
    "shrunk" ("rps-shrunk"), "hier" ("rps-hier")."""
    seeds: tuple[int, ...] = tuple(range(10))
    test_fraction: float = 0.1
    n_sup_base: int = 400
    gamma: float = 0.95
    support_rule: core.Rule = "paper"
    coverage_k: tuple[int, ...] = DEFAULT_COVERAGE_K
    sweep_n_sup_base: tuple[int, ...] = (50, 100, 200, 400, 800)
    sweep_gamma: tuple[float, ...] = (0.9, 0.95, 1.0)
    shrunk_n_sup_grid: tuple[int, ...] = DEFAULT_SHRUNK_N_SUP
    shrunk_temperature_grid: tuple[float | None, ...] = DEFAULT_SHRUNK_TEMPERATURE
    shrunk_strength_grid: tuple[float, ...] = DEFAULT_SHRUNK_STRENGTH
    calibration_queries: int = DEFAULT_CALIBRATION_QUERIES
    hier_temperature_grid: tuple[float, ...] = DEFAULT_HIER_TEMPERATURE
    hier_strength_grid: tuple[float, ...] = DEFAULT_HIER_STRENGTH
    hier_category_temperature: float = DEFAULT_HIER_CATEGORY_TEMPERATURE
    hier_category_strength: float = DEFAULT_HIER_CATEGORY_STRENGTH
    hier_calibration_queries: int = DEFAULT_HIER_CALIBRATION_QUERIES

    def __post_init__(self) -> None:
        known = get_args(PriorRule)
        if not self.rules or any(r not in known for r in self.rules):
            raise ValueError(
                f"rules must name {', '.join(map(repr, known))} (one or more), got {self.rules!r}"
            )
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        for name in ("n_sup_base", "calibration_queries", "hier_calibration_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(n < 1 for n in (*self.sweep_n_sup_base, *self.shrunk_n_sup_grid)):
            raise ValueError("support sizes in the sweeps must be >= 1")
        if any(g < 0.0 or not math.isfinite(g) for g in (self.gamma, *self.sweep_gamma)):
            raise ValueError("gamma values must be finite and >= 0")
        if any(
            a < 0.0 or not math.isfinite(a)
            for a in (*self.shrunk_strength_grid, *self.hier_strength_grid)
        ) or not (
            self.hier_category_strength >= 0.0 and math.isfinite(self.hier_category_strength)
        ):
            raise ValueError("shrinkage strengths must be finite and >= 0")
        if any(
            not (t > 0.0 and math.isfinite(t))
            for t in (*self.hier_temperature_grid, self.hier_category_temperature)
        ):
            raise ValueError("the hier rule's temperatures must be finite and > 0")
        if not (self.hier_temperature_grid and self.hier_strength_grid):
            raise ValueError("the hier rule's calibration grids must not be empty")
        if any(t is not None and not t > 0.0 for t in self.shrunk_temperature_grid):
            raise ValueError("temperatures must be > 0 (or None for linear weights)")
        if not (
            self.shrunk_n_sup_grid and self.shrunk_temperature_grid and self.shrunk_strength_grid
        ):
            raise ValueError("the shrunk rule's calibration grids must not be empty")
        if any(k < 1 for k in self.coverage_k):
            raise ValueError("coverage_k values must be >= 1")


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

    def summary(self, method: str) -> dict[str, dict[str, float]]:
        """Mean, std (population), min and max over the seeds of each metric of `method`."""
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
        info, scores, sweep = _replay_split(emb, cap, mask, labels, list(models), split, cfg)
        report.splits.append(info)
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
            progress(" ".join(parts))
    return report


def _replay_split(
    emb: NDArray[np.float32],
    cap: NDArray[np.float64],
    mask: NDArray[np.bool_],
    labels: list[str],
    models: list[str],
    split: Split,
    cfg: ReplaySettings,
) -> tuple[SplitInfo, dict[str, Metrics], dict[tuple[int, float], Metrics]]:
    test = split.test[mask[:, split.test].sum(axis=0) >= 2]
    bank_cap, bank_mask = cap[:, split.bank], mask[:, split.bank]
    truth, truth_mask = cap[:, test].T, mask[:, test].T
    sims = similarity_matrix(emb[test], emb[split.bank])
    overall = core.global_accuracy(bank_cap, bank_mask)
    per_category = core.category_accuracy(bank_cap, bank_mask, [labels[i] for i in split.bank])

    def score(priors: NDArray[np.float64]) -> Metrics:
        return evaluate_rankings(priors, truth, truth_mask, cfg.coverage_k)

    scores: dict[str, Metrics] = {}
    choice: ShrunkChoice | None = None
    if "paper" in cfg.rules:
        scores[rule_method("paper")] = score(
            rps_priors(sims, bank_cap, bank_mask, cfg.n_sup_base, cfg.gamma, rule=cfg.support_rule)
        )
    if "shrunk" in cfg.rules:
        choice = calibrate_shrunk(
            emb[split.bank],
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
        scores[rule_method("shrunk")] = score(
            shrunk_priors(
                sims,
                bank_cap,
                bank_mask,
                overall,
                choice.n_sup_base,
                cfg.gamma,
                choice.strength,
                temperature=choice.temperature,
                rule=cfg.support_rule,
            )
        )
    hier: HierChoice | None = None
    if "hier" in cfg.rules:
        bank_labels = [labels[i] for i in split.bank]
        hier = calibrate_hier(
            emb[split.bank],
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
        table = core.category_accuracy(bank_cap, bank_mask, bank_labels, hier.category_strength)
        scores[rule_method("hier")] = score(
            hier_priors(
                sims,
                bank_cap,
                bank_mask,
                bank_labels,
                table,
                overall,
                cfg.n_sup_base,
                cfg.gamma,
                hier.strength,
                temperature=hier.temperature,
                category_temperature=hier.category_temperature,
                rule=cfg.support_rule,
            )
        )
    scores["best-single"] = score(np.broadcast_to(overall, truth.shape).copy())
    scores["per-category"] = score(np.stack([per_category[labels[i]] for i in test]))
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
    )
    return info, scores, sweep

"""What a replay measures (`ReplaySettings`): rules, splits, and each rule's search grids."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

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
)
from smcs_graph.offline.evaluation.learned import (
    DEFAULT_LEARNED_FOLDS,
    DEFAULT_LEARNED_PENALTY,
    DEFAULT_LEARNED_RANK,
)
from smcs_graph.offline.evaluation.metrics import DEFAULT_COVERAGE_K
from smcs_graph.offline.evaluation.probability import DEFAULT_BINS

__all__ = ["ReplaySettings"]


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
    learned_rank_grid: tuple[int, ...] = DEFAULT_LEARNED_RANK
    learned_penalty_grid: tuple[float, ...] = DEFAULT_LEARNED_PENALTY
    learned_folds: int = DEFAULT_LEARNED_FOLDS
    calibration_bins: int = DEFAULT_BINS

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
        if not self.learned_rank_grid or any(k < 1 for k in self.learned_rank_grid):
            raise ValueError("the learned rule's ranks must be >= 1 (one or more)")
        if not self.learned_penalty_grid or any(
            not (a >= 0.0 and math.isfinite(a)) for a in self.learned_penalty_grid
        ):
            raise ValueError("the learned rule's penalties must be finite and >= 0 (one or more)")
        if self.learned_folds < 2 or self.calibration_bins < 1:
            raise ValueError("learned_folds must be >= 2 and calibration_bins >= 1")

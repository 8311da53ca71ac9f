"""Routing from priors, shared by the router middleware and the decision model.

One question's priors over the candidate models (`prior_selection`, as the graph computes them),
their normalisation into choice probabilities, and the prior gate that says when the priors are
too close to trust one model. Pure apart from the embedding and the bank read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.errors import ConfigError
from smcs_graph.selection import prior_selection
from smcs_graph.state import TRACE_DIGITS

__all__ = ["PriorGate", "RoutePriors", "candidate_names", "route_priors", "shares"]


@dataclass(frozen=True)
class RoutePriors:
    """One question's priors over candidate models: raw (as the graph's), in candidate order."""

    names: tuple[str, ...]
    priors: tuple[float, ...]

    @property
    def order(self) -> list[int]:
        """Candidate positions best first (SMCS's own order: ties by candidate order)."""
        return [int(i) for i in core.select_top_k(np.asarray(self.priors), len(self.names))]

    @property
    def top(self) -> str:
        """The candidate with the highest prior."""
        return self.names[self.order[0]]

    @property
    def probabilities(self) -> dict[str, float]:
        """The priors normalised to sum to 1 (uniform when no candidate has any support)."""
        return dict(zip(self.names, shares(np.asarray(self.priors)).tolist(), strict=True))

    def for_trace(self) -> dict[str, float]:
        """The raw priors rounded for display (as in the SMCS trace)."""
        return {n: round(p, TRACE_DIGITS) for n, p in zip(self.names, self.priors, strict=True)}


def shares(priors: NDArray[np.float64]) -> NDArray[np.float64]:
    """`priors` as a distribution: each prior's share of their sum; uniform when all are 0."""
    v = np.clip(np.asarray(priors, dtype=np.float64), 0.0, None)
    total = float(v.sum())
    if total <= 0.0 or not np.isfinite(total):
        return np.full(v.shape, 1.0 / len(v))
    return v / total


def route_priors(
    question: str,
    names: Sequence[str],
    bank: QuestionBank,
    embedder: Embedder,
    settings: SMCSConfig,
) -> RoutePriors:
    """`names`' priors for `question`, by the run's prior rule (exactly as the graph selects)."""
    _, priors = prior_selection(question, names, bank, embedder, settings)
    return RoutePriors(tuple(names), tuple(float(p) for p in priors))


@dataclass(frozen=True)
class PriorGate:
    """When the priors do not single out one model, so that `escalate` runs the ensemble.

    Uncertain when any holds: no candidate has support (every prior is 0); the top model's
    share of the priors (the decision model's confidence) is below `threshold`; or the
    runner-up's prior is within `margin` of the top's, relatively: (top - second) / top <
    `margin`. Both are scale-free, so they mean the same under every prior rule. Defaults:
    `threshold` 0 (off: a share depends on the pool's size), `margin` 0.1.
    """

    threshold: float = 0.0
    margin: float = 0.1

    def __post_init__(self) -> None:
        for label, value in (
            ("escalate_threshold", self.threshold),
            ("escalate_margin", self.margin),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ConfigError(f"{label} must be a number in [0, 1] (got {value!r})")

    def decide(self, priors: RoutePriors) -> dict[str, Any]:
        """The gate's verdict as a record: `uncertain`, the measured values and the reason."""
        order = priors.order
        top = priors.priors[order[0]]
        second = priors.priors[order[1]] if len(order) > 1 else 0.0
        share = priors.probabilities[priors.names[order[0]]]
        margin = (top - second) / top if top > 0 else 0.0
        if top <= 0:
            reason = "no candidate has support in the bank"
        elif share < self.threshold:
            reason = f"top share {share:.3f} < threshold {self.threshold:g}"
        elif len(order) > 1 and margin < self.margin:
            reason = f"runner-up within {margin:.3f} of the top (margin {self.margin:g})"
        else:
            reason = ""
        return {
            "uncertain": bool(reason),
            "reason": reason or "the top prior stands out",
            "top_share": round(share, TRACE_DIGITS),
            "margin": round(margin, TRACE_DIGITS),
            "threshold": self.threshold,
            "min_margin": self.margin,
        }


def candidate_names(labels: Sequence[str], routes: Mapping[str, str]) -> list[str]:
    """Pool names of a router's labels (`routes` maps a label to its pool name; default: the
    label itself)."""
    return [routes.get(label, label) for label in labels]

"""The prior gate's threshold chosen on the bank alone, from held-out bank questions.

`heldout` gives, per bank question, what the gate would see in the graph with that question
out of the bank (the top model by the run's prior rule and its calibrated P(correct), exactly
`selection.p_correct`) and what the bank recorded: whether that model, and whether any of the
top-K, answered it correctly (`HeldOut`).

A question is answered alone when P(correct) >= threshold (one call), else escalated (K + n
calls, the pool file's K and n). The chosen threshold is the highest whose escalation rate
meets the target (`--max-calls`: expected calls per question; `--escalation-rate`). The bank
holds no SMCS outcome, so the accuracy it expects is a band: lower, the top model's recorded
correctness on every question; upper, an escalated question counted right when any of the
top-K was right (the oracle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from smcs_graph.errors import ConfigError
from smcs_graph.offline.evaluation.probability import (
    ReliabilityBin,
    expected_calibration_error,
    reliability,
)

__all__ = [
    "CurvePoint",
    "GateCalibration",
    "HeldOut",
    "choose_threshold",
    "curve",
]

THRESHOLD_DIGITS = 4
"""Decimals of a chosen threshold (rounded down: never more escalation than chosen)."""
CURVE_GRID = tuple(i / 20 for i in range(21))
"""Thresholds of the printed and plotted curve (the chosen one is added)."""


@dataclass(frozen=True)
class HeldOut:
    """Per bank question (Q of them), what the gate sees and what the bank recorded."""

    question_ids: list[str]
    top: list[str]
    """The top model by the prior rule."""
    p_top: NDArray[np.float64]
    """Its P(correct), from the other bank questions."""
    top_right: NDArray[np.bool_]
    """Whether it answered correctly (unmeasured: False)."""
    any_right: NDArray[np.bool_]
    """Whether any of the top-K answered correctly (the oracle of an escalated question)."""
    top_measured: NDArray[np.bool_]
    k: int
    n: int
    rule: str = "shrunk"
    """The prior rule that ranked the models and gave P(correct)."""
    scheme: str = "leave-one-out"
    """How the questions were held out (leave-one-out, or F-fold cross-fitting)."""
    fits: int = 0
    """Rules fitted (one per fold)."""
    platt_fits: int = 0
    """Of those, how many had enough held-out outcomes for the Platt map (the rest: the shrunk
    estimate, as the gate falls back)."""
    referencers: list[tuple[str, ...]] = field(default_factory=list)
    """Per question, the top-K by prior, highest first (the references the gate compares)."""
    nearest: list[str] = field(default_factory=list)
    """Per question, the id of its nearest bank question in the bank without it (the first
    support example: the agreement gate takes its family)."""
    alone_cost: NDArray[np.float64] | None = None
    """Per question, the calls when answered alone, follow-ups included (`with_followups`);
    None: 1."""
    escalated_cost: NDArray[np.float64] | None = None
    """Per question, the calls when escalated, follow-ups included; None: K + n."""
    followup_rate: float | None = None
    """Follow-up calls per answer in the profiled replies (None: not measured)."""

    @property
    def escalated_calls(self) -> int:
        """Calls of an escalated question: K + n."""
        return self.k + self.n

    def costs(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per question, the calls alone and escalated."""
        size = len(self.question_ids)
        alone = self.alone_cost if self.alone_cost is not None else np.ones(size)
        full = (
            self.escalated_cost
            if self.escalated_cost is not None
            else np.full(size, float(self.escalated_calls))
        )
        return alone, full


@dataclass(frozen=True)
class CurvePoint:
    """The expected outcome at one threshold."""

    threshold: float
    escalation_rate: float
    calls: float
    """Expected calls per question: 1 alone, K + n escalated (each with the follow-ups the
    profiled replies needed, when measured)."""
    accuracy_low: float
    accuracy_high: float
    calls_bound: float = 0.0
    """The one-sided upper confidence bound of `calls` (`GateCalibration.confidence`): the
    mean over questions like the bank's stays below it with that confidence."""
    rate_bound: float = 0.0
    """The same bound of `escalation_rate`."""


@dataclass(frozen=True)
class GateCalibration:
    """The chosen threshold, what it expects, and the evidence."""

    threshold: float
    chosen: CurvePoint
    target: str
    curve: list[CurvePoint]
    reliability: list[ReliabilityBin]
    ece: float
    held: HeldOut
    confidence: float = 0.5
    """The target is met by the upper bound of this one-sided confidence (0.5: the mean)."""


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0


def _bound(values: NDArray[np.float64], z: float) -> float:
    """The mean of `values` plus `z` standard errors."""
    if values.size < 2 or z == 0.0:
        return float(values.mean())
    return float(values.mean() + z * values.std(ddof=1) / math.sqrt(values.size))


def point(held: HeldOut, threshold: float, confidence: float = 0.5) -> CurvePoint:
    """The expected outcome when questions with P(correct) < `threshold` escalate."""
    escalate = held.p_top < threshold
    alone, full = held.costs()
    calls = np.where(escalate, full, alone)
    z = _z(confidence)
    return CurvePoint(
        threshold=threshold,
        escalation_rate=float(escalate.mean()),
        calls=float(calls.mean()),
        accuracy_low=float(held.top_right.mean()),
        accuracy_high=float(np.where(escalate, held.any_right, held.top_right).mean()),
        calls_bound=_bound(calls, z),
        rate_bound=_bound(escalate.astype(np.float64), z),
    )


def curve(held: HeldOut, extra: Sequence[float] = (), confidence: float = 0.5) -> list[CurvePoint]:
    """The expected outcome at each threshold of `CURVE_GRID` and `extra`, by threshold."""
    return [point(held, t, confidence) for t in sorted({*CURVE_GRID, *extra})]


def choose_threshold(
    held: HeldOut,
    *,
    max_calls: float | None = None,
    escalation_rate: float | None = None,
    confidence: float = 0.5,
) -> GateCalibration:
    """The highest threshold whose escalation meets the target (exactly one of `max_calls`,
    expected calls per question, and `escalation_rate`): its mean over the held-out questions
    or, with `confidence` above 0.5, the one-sided upper bound of that mean (normal
    approximation: the mean plus z standard errors), so that the target holds on new questions
    like the bank's with that confidence, not only on the bank's average."""
    if (max_calls is None) == (escalation_rate is None):
        raise ConfigError("give one target: --max-calls N or --escalation-rate R")
    if not (math.isfinite(confidence) and 0.5 <= confidence < 1.0):
        raise ConfigError(f"--confidence {confidence:g} is impossible: give a value in [0.5, 1)")
    full = held.escalated_calls
    if full == 1:
        raise ConfigError(
            "the pool file's K + n is 1 (a single call per question): there is nothing for the "
            "gate to save; raise k or n_aggregations"
        )
    alone, escalated = held.costs()
    if max_calls is not None:
        if not (math.isfinite(max_calls) and max_calls >= 1):
            raise ConfigError(
                f"--max-calls {max_calls:g} is impossible: every question takes at least one "
                "call; give a number >= 1"
            )
        target = f"at most {max_calls:g} calls per question on average (K + n = {full})"
        limit = max_calls
    else:
        assert escalation_rate is not None
        if not (math.isfinite(escalation_rate) and 0.0 <= escalation_rate <= 1.0):
            raise ConfigError(
                f"--escalation-rate {escalation_rate:g} is impossible: give a fraction in [0, 1]"
            )
        target = f"at most {100 * escalation_rate:g} % of questions escalated"
        alone, escalated = np.zeros_like(alone), np.ones_like(escalated)
        limit = escalation_rate
    if confidence > 0.5:
        target += f", at {100 * confidence:g} % confidence"
    allowed = _most_escalated(held.p_top, alone, escalated, limit, _z(confidence))
    threshold = _threshold_for(held.p_top, allowed)
    chosen = point(held, threshold, confidence)
    bins = reliability(held.p_top, held.top_right, held.top_measured)
    ece = expected_calibration_error(held.p_top, held.top_right, held.top_measured)
    return GateCalibration(
        threshold=threshold,
        chosen=chosen,
        target=target,
        curve=curve(held, [threshold], confidence),
        reliability=bins,
        ece=ece,
        held=held,
        confidence=confidence,
    )


def _most_escalated(
    p_top: NDArray[np.float64],
    alone: NDArray[np.float64],
    escalated: NDArray[np.float64],
    limit: float,
    z: float,
) -> int:
    """The most questions that may escalate, the least probable first, with the mean cost (plus
    `z` standard errors) within `limit`."""
    size = p_top.shape[0]
    order = np.argsort(p_top, kind="stable")
    extra = np.concatenate([[0.0], np.cumsum((escalated - alone)[order])])
    extra_sq = np.concatenate([[0.0], np.cumsum((escalated**2 - alone**2)[order])])
    mean = (alone.sum() + extra) / size
    if z > 0.0 and size >= 2:
        var = np.maximum(((alone**2).sum() + extra_sq) - size * mean**2, 0.0) / (size - 1)
        mean = mean + z * np.sqrt(var / size)
    over = np.flatnonzero(mean > limit + 1e-9)  # the first m over the limit, and every later
    return max(int(over[0]) - 1, 0) if over.size else size


def _threshold_for(p_top: NDArray[np.float64], allowed: int) -> float:
    """The highest threshold t in [0, 1] with at most `allowed` questions at p_top < t, rounded
    down to `THRESHOLD_DIGITS` decimals (rounding down escalates no more)."""
    values = np.sort(p_top)
    if allowed >= values.shape[0]:
        return 1.0
    # Escalating the `allowed` lowest: t up to the next value keeps the rest alone.
    scale = 10**THRESHOLD_DIGITS
    return math.floor(float(values[allowed]) * scale) / scale

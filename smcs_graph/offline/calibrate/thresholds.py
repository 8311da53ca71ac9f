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

    @property
    def escalated_calls(self) -> int:
        """Calls of an escalated question: K + n."""
        return self.k + self.n


@dataclass(frozen=True)
class CurvePoint:
    """The expected outcome at one threshold."""

    threshold: float
    escalation_rate: float
    calls: float
    """Expected calls per question: 1 alone, K + n escalated."""
    accuracy_low: float
    accuracy_high: float


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


def point(held: HeldOut, threshold: float) -> CurvePoint:
    """The expected outcome when questions with P(correct) < `threshold` escalate."""
    escalate = held.p_top < threshold
    rate = float(escalate.mean())
    return CurvePoint(
        threshold=threshold,
        escalation_rate=rate,
        calls=1.0 + rate * (held.escalated_calls - 1),
        accuracy_low=float(held.top_right.mean()),
        accuracy_high=float(np.where(escalate, held.any_right, held.top_right).mean()),
    )


def curve(held: HeldOut, extra: Sequence[float] = ()) -> list[CurvePoint]:
    """The expected outcome at each threshold of `CURVE_GRID` and `extra`, by threshold."""
    return [point(held, t) for t in sorted({*CURVE_GRID, *extra})]


def choose_threshold(
    held: HeldOut, *, max_calls: float | None = None, escalation_rate: float | None = None
) -> GateCalibration:
    """The highest threshold whose escalation rate meets the target (exactly one of
    `max_calls`, expected calls per question, and `escalation_rate`)."""
    if (max_calls is None) == (escalation_rate is None):
        raise ConfigError("give one target: --max-calls N or --escalation-rate R")
    full = held.escalated_calls
    if max_calls is not None:
        if not (math.isfinite(max_calls) and max_calls >= 1):
            raise ConfigError(
                f"--max-calls {max_calls:g} is impossible: every question takes at least one "
                "call; give a number >= 1"
            )
        rate = 1.0 if full == 1 else min((max_calls - 1) / (full - 1), 1.0)
        target = f"at most {max_calls:g} calls per question on average (K + n = {full})"
    else:
        assert escalation_rate is not None
        if not (math.isfinite(escalation_rate) and 0.0 <= escalation_rate <= 1.0):
            raise ConfigError(
                f"--escalation-rate {escalation_rate:g} is impossible: give a fraction in [0, 1]"
            )
        rate = escalation_rate
        target = f"at most {100 * escalation_rate:g} % of questions escalated"
    if full == 1:
        raise ConfigError(
            "the pool file's K + n is 1 (a single call per question): there is nothing for the "
            "gate to save; raise k or n_aggregations"
        )
    threshold = _highest_within(held.p_top, rate)
    chosen = point(held, threshold)
    bins = reliability(held.p_top, held.top_right, held.top_measured)
    ece = expected_calibration_error(held.p_top, held.top_right, held.top_measured)
    return GateCalibration(
        threshold=threshold,
        chosen=chosen,
        target=target,
        curve=curve(held, [threshold]),
        reliability=bins,
        ece=ece,
        held=held,
    )


def _highest_within(p_top: NDArray[np.float64], rate: float) -> float:
    """The highest threshold t in [0, 1] with mean(p_top < t) <= rate, rounded down to
    `THRESHOLD_DIGITS` decimals (rounding down escalates no more)."""
    values = np.sort(p_top)
    allowed = math.floor(rate * values.shape[0] + 1e-9)  # questions that may escalate
    if allowed >= values.shape[0]:
        return 1.0
    # Escalating the `allowed` lowest: t up to the next value keeps the rest alone.
    scale = 10**THRESHOLD_DIGITS
    return math.floor(float(values[allowed]) * scale) / scale

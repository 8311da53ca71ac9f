"""Adaptive collaboration: the gates that spend K + n calls only where they may pay.

Pure decisions, called by the nodes; each returns the trace's `gate` record.

- Prior gate (`collaboration="adaptive"`, in `select_priors`): before any call, the top-prior
  model answers alone when its P(correct) >= `prior_gate_threshold`, or when the expected gain
  of collaborating, P(some referencer right) - P(top right) with the models taken as
  independent (a proxy: errors correlate, so it overstates the gain), is below
  `min_collaboration_gain`.
- Budget (`max_calls`, in `select_priors`): K + n is cut to fit before the fan-out, n first.
- Agreement gate (`agreement_gate`, in `drop_subsets`): when the references agree, the top-prior
  reference is the answer and no fusion runs.
- Deadline (`deadline_s`): every call's timeout is cut to what is left of it; past it,
  `drop_subsets` sends no fusion and `score` scores what arrived and fails over no more.

The graph routes on the record: `answers_alone(state)` sends `drop_subsets` straight to `score`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.state import TRACE_DIGITS, SMCSState

ALONE = "alone"
COLLABORATE = "collaborate"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MIN_TIMEOUT_S = 0.001  # a call sent at the deadline fails at once, as a timeout


def answers_alone(state: SMCSState) -> bool:
    """Whether a gate decided that the top-prior reference is the answer (no fusion)."""
    gate = state.get("gate")
    return bool(gate) and gate is not None and gate["decision"] == ALONE


def deadline_at(started: float, settings: SMCSConfig) -> float | None:
    """The deadline of a run started at `started` (`time.time()` seconds; None: no
    `deadline_s`)."""
    return None if settings.deadline_s is None else started + settings.deadline_s


def passed(deadline: float | None) -> bool:
    """Whether the run's deadline (None: none) has passed."""
    return deadline is not None and time.time() >= deadline


def call_timeout(stage_timeout: float | None, deadline: float | None) -> float | None:
    """A call's timeout: the stage's, cut to what is left before the deadline."""
    if deadline is None:
        return stage_timeout
    left = max(deadline - time.time(), _MIN_TIMEOUT_S)
    return left if stage_timeout is None else min(stage_timeout, left)


def deadline_gate(
    gate: Mapping[str, Any] | None, top: str, state: SMCSState, settings: SMCSConfig
) -> dict[str, Any]:
    """The record when the deadline passed before any fusion: the top-prior reference."""
    cut = [f"{f['stage']} {f['model']}" for f in state.get("failures") or []]
    return {
        **(gate or {}),
        "decision": ALONE,
        "stage": "deadline",
        "model": top,
        "reason": f"deadline {settings.deadline_s:g} s reached after the references: "
        f"answered with {top}'s, the top-prior reference; no fusion"
        + (f" (cut or failed: {', '.join(cut)})" if cut else ""),
    }


def fit_budget(k: int, n: int, max_calls: int | None) -> tuple[int, int]:
    """(K, n) within `max_calls` planned calls: n shrinks first, then K, never below one
    referencer; n = 0 means the top model alone."""
    if max_calls is None or k + n <= max_calls:
        return k, n
    if max_calls - k >= 1:
        return k, max_calls - k
    if max_calls >= 2:
        return max_calls - 1, 1
    return 1, 0


def prior_gate(
    p_correct: Mapping[str, float], referencers: Sequence[str], settings: SMCSConfig
) -> dict[str, Any]:
    """The prior gate's record for referencers chosen by prior (the first is the top model)."""
    top = referencers[0]
    p_top = float(p_correct[top])
    p_any = 1.0 - float(np.prod([1.0 - p_correct[m] for m in referencers]))
    gain = p_any - p_top
    threshold, min_gain = settings.prior_gate_threshold, settings.min_collaboration_gain
    if p_top >= threshold:
        decision = ALONE
        reason = f"answered by {top} alone: P(correct) {p_top:.2f} >= {threshold:g}"
    elif gain < min_gain:
        decision = ALONE
        reason = (
            f"answered by {top} alone: expected gain of collaborating {gain:.2f} < {min_gain:g}"
        )
    else:
        decision = COLLABORATE
        reason = (
            f"collaborating: {top}'s P(correct) {p_top:.2f} < {threshold:g}, "
            f"expected gain {gain:.2f}"
        )
    return {
        "decision": decision,
        "stage": "prior",
        "model": top,
        "reason": reason,
        "p_correct": {m: round(float(p), TRACE_DIGITS) for m, p in p_correct.items()},
        "threshold": threshold,
        "gain": round(gain, TRACE_DIGITS),
        "min_gain": min_gain,
    }


def budget_gate(top: str, max_calls: int) -> dict[str, Any]:
    """The record when `max_calls` leaves a single call: the top model alone."""
    return {
        "decision": ALONE,
        "stage": "budget",
        "model": top,
        "reason": f"answered by {top} alone: max_calls={max_calls} leaves one call",
    }


def _number(text: str) -> str | None:
    from smcs_graph.grading.numeric import extract_final_number, parse_number

    found = extract_final_number(text)
    value = parse_number(found) if found is not None else None
    return None if value is None else repr(value)


def _boxed(text: str) -> str | None:
    from smcs_graph.grading.math_answer import extract_final_answer

    found = extract_final_answer(text)
    return None if found is None else "".join(found.split())


def _letter(text: str) -> str | None:
    from smcs_graph.grading.multiple_choice import extract_letter

    return extract_letter(text, _LETTERS)[0]


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "multiple_choice": _letter,
    "numeric": _number,
    "math": _boxed,
}
"""Final-answer extractors by bank family (the graders'), for the agreement gate."""


def agreement(
    texts: Sequence[str], family: str | None, embedder: Embedder, threshold: float
) -> dict[str, Any]:
    """Whether the references agree: the same extracted final answer where `family` has an
    extractor, else every pair at embedding cosine >= `threshold`."""
    extract = _EXTRACTORS.get(family or "")
    if extract is not None:
        answers = [extract(text) for text in texts]
        agree = None not in answers and len(set(answers)) == 1
        return {"method": f"{family} answer", "answers": answers, "agree": agree}
    vectors = np.asarray(embedder.embed(list(texts)), dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosines = vectors @ vectors.T
    lowest = float(cosines[np.triu_indices(len(texts), 1)].min())
    return {
        "method": "embedding similarity",
        "min_similarity": round(lowest, TRACE_DIGITS),
        "threshold": threshold,
        "agree": lowest >= threshold,
    }


def agreement_gate(
    gate: Mapping[str, Any] | None,
    references: Sequence[Mapping[str, Any]],
    family: str | None,
    embedder: Embedder,
    settings: SMCSConfig,
) -> dict[str, Any] | None:
    """The gate record after the references (sorted by rank): unchanged unless the agreement
    gate is on and at least two references answered."""
    if not settings.agreement_gate or len(references) < 2:
        return dict(gate) if gate else None
    found = agreement(
        [r["text"] for r in references], family, embedder, settings.agreement_similarity
    )
    top = references[0]["model"]
    record: dict[str, Any] = dict(gate or {})
    record["agreement"] = found
    if found["agree"]:
        record.update(
            decision=ALONE,
            stage="agreement",
            model=top,
            reason=f"the {len(references)} references agree ({found['method']}): "
            f"answered with {top}'s, the top-prior reference; no fusion",
        )
    else:
        record.setdefault("decision", COLLABORATE)
        record.setdefault("stage", "agreement")
        record["reason"] = (
            record["reason"] + "; " if "reason" in record else ""
        ) + f"the references differ ({found['method']}): fusing"
    return record

"""Adaptive collaboration: the gates that spend K + n calls only where they may pay.

Pure decisions, called by the nodes; each returns the trace's `gate` record.

- Prior gate (`collaboration="adaptive"`, in `select_priors`): before any call, the top-prior
  model answers alone when its P(correct) >= `prior_gate_threshold`, or when the expected gain
  of collaborating, P(some referencer right) - P(top right) with the models taken as
  independent (a proxy: errors correlate, so it overstates the gain), is below
  `min_collaboration_gain`.
- Budget (`max_calls`, `max_cost`, in `select_priors`): K and n are cut to fit before the
  fan-out, n first, then K, never below one call (`plan_budget`). The cost of a plan is
  estimated from the pool entries' per-Mtok prices, the prompt's characters / 4 as its tokens
  and the largest output-token limit (`max_tokens`, `max_tokens_*`) as each call's output
  (`CostModel`).
- Agreement gate (`agreement_gate`, in `drop_subsets`): when the references agree, the top-prior
  reference is the answer and no fusion runs.
- Deadline (`deadline_s`): every call's timeout is cut to what is left of it; past it,
  `drop_subsets` sends no fusion and `score` scores what arrived and fails over no more.

The graph routes on the record: `answers_alone(state)` sends `drop_subsets` straight to `score`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.models import Pool
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


CHARS_PER_TOKEN = 4
"""Prompt tokens are estimated as characters / 4 (`max_cost`): no tokenizer is loaded."""


def prompt_tokens(messages: Sequence[Any]) -> int:
    """Estimated prompt tokens of a conversation: its text's characters / `CHARS_PER_TOKEN`."""
    chars = 0
    for message in messages:
        content = getattr(message, "content", message)
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(
                len(str(part.get("text", ""))) if isinstance(part, Mapping) else len(str(part))
                for part in content
            )
    return -(-chars // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class CostModel:
    """What `max_cost` plans with: per-Mtok (input, output) prices of the referencers in rank
    order and of the aggregator (None: the top referencer aggregates), the prompt's estimated
    tokens, each call's output bound (`max_tokens`) and `k_drop`. A fusion reads the prompt,
    its subset's references (each at the output bound) and the instructions."""

    referencers: Sequence[tuple[float, float]]
    aggregator: tuple[float, float] | None
    prompt_tokens: int
    max_tokens: int
    k_drop: int

    def cost(self, k: int, n: int) -> float:
        """Planned cost of K referencers and n fusions."""
        out = sum(self._call(price, self.prompt_tokens) for price in self.referencers[:k])
        if n:
            size = max(k - self.k_drop, 1)
            fusion_in = self.prompt_tokens + size * self.max_tokens + _FUSION_OVERHEAD
            price = self.aggregator if self.aggregator is not None else self.referencers[0]
            out += n * self._call(price, fusion_in)
        return out

    def _call(self, price: tuple[float, float], input_tokens: int) -> float:
        return (input_tokens * price[0] + self.max_tokens * price[1]) / 1e6


def _fusion_overhead() -> int:
    from smcs_graph.prompts import AGGREGATION_INSTRUCTIONS

    return -(-len(AGGREGATION_INSTRUCTIONS) // CHARS_PER_TOKEN)


_FUSION_OVERHEAD = _fusion_overhead()
"""Estimated tokens of the aggregation instructions around the references."""


_FAMILIES = (None, "multiple_choice", "math", "numeric", "code")
"""The families with their own output-token limit (`SMCSConfig.max_tokens_*`); None: the rest."""


def cost_model(
    pool: Pool, referencers: Sequence[str], settings: SMCSConfig, messages: Sequence[Any]
) -> CostModel:
    """The `CostModel` of a run: `referencers` in rank order, the pool's prices."""

    def price(name: str) -> tuple[float, float]:
        member = pool[name]
        return (member.input_cost_per_mtok, member.output_cost_per_mtok)

    return CostModel(
        referencers=[price(name) for name in referencers],
        aggregator=(
            price(settings.aggregator)
            if settings.aggregator is not None and settings.aggregator in pool
            else None
        ),
        prompt_tokens=prompt_tokens(messages),
        # The largest output limit of any family: the plan never assumes a shorter answer.
        max_tokens=max(settings.tokens_for(family) for family in _FAMILIES),
        k_drop=settings.k_drop,
    )


def fit_cost(k: int, n: int, max_cost: float | None, costs: CostModel) -> tuple[int, int]:
    """(K, n) whose planned cost is within `max_cost`: n shrinks first (to 1), then K, then the
    top model alone (1, 0), which stands even when it is estimated over the cap."""
    if max_cost is None:
        return k, n
    while n > 1 and costs.cost(k, n) > max_cost:
        n -= 1
    while k > 1 and n and costs.cost(k, n) > max_cost:
        k -= 1
    if n and costs.cost(k, n) > max_cost:
        return 1, 0
    return k, n


def plan_budget(
    k: int, n: int, settings: SMCSConfig, costs: CostModel | None
) -> tuple[int, int, dict[str, Any] | None]:
    """(K, n) within `max_calls` and `max_cost`, and the caps' record for the trace (None:
    neither is set): what each cap allowed and the planned cost."""
    if settings.max_calls is None and settings.max_cost is None:
        return k, n, None
    k_fit, n_fit = fit_budget(k, n, settings.max_calls)
    if settings.max_cost is not None and costs is not None:
        k_fit, n_fit = fit_cost(k_fit, n_fit, settings.max_cost, costs)
    caps: dict[str, Any] = {"k": k_fit, "n_aggregations": n_fit}
    if settings.max_calls is not None:
        caps["max_calls"] = settings.max_calls
    if settings.max_cost is not None:
        caps["max_cost"] = settings.max_cost
        if costs is not None:
            caps["planned_cost"] = round(costs.cost(k_fit, n_fit), 9)
            caps["full_cost"] = round(costs.cost(k, n), 9)
    return k_fit, n_fit, caps


def budget_reason(caps: Mapping[str, Any]) -> str:
    """One line for the trace: the caps and the (K, n) they allow."""
    parts = []
    if "max_calls" in caps:
        parts.append(f"max_calls={caps['max_calls']}")
    if "max_cost" in caps:
        planned = caps.get("planned_cost")
        parts.append(
            f"max_cost={caps['max_cost']:g}"
            + (
                f" (planned {planned:.6g} of {caps['full_cost']:.6g} for the full plan)"
                if planned is not None
                else ""
            )
        )
    return f"{', '.join(parts)}: k={caps['k']}, n_aggregations={caps['n_aggregations']}"


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
            f"expected gain {gain:.2f} >= {min_gain:g}"
        )
    return {
        "decision": decision,
        "stage": "prior",
        "model": top,
        "reason": reason,
        "p_correct": {m: round(float(p), TRACE_DIGITS) for m, p in p_correct.items()},
        "rule": settings.gate_rule or settings.prior_rule,
        "threshold": threshold,
        "gain": round(gain, TRACE_DIGITS),
        "min_gain": min_gain,
    }


def budget_gate(top: str, caps: Mapping[str, Any]) -> dict[str, Any]:
    """The record when the budget leaves a single call: the top model alone."""
    return {
        "decision": ALONE,
        "stage": "budget",
        "model": top,
        "reason": f"answered by {top} alone: {budget_reason(caps)} leaves one call",
        "caps": dict(caps),
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
    if "answers" in found:
        inputs = f"{found['method']}s: {', '.join(str(a) for a in found['answers'])}"
    else:
        sign = ">=" if found["agree"] else "<"
        inputs = f"lowest cosine {found['min_similarity']:.2f} {sign} {found['threshold']:g}"
    if found["agree"]:
        record.update(
            decision=ALONE,
            stage="agreement",
            model=top,
            reason=f"the {len(references)} references agree ({inputs}): "
            f"answered with {top}'s, the top-prior reference; no fusion",
        )
    else:
        record.setdefault("decision", COLLABORATE)
        record.setdefault("stage", "agreement")
        record["reason"] = (
            record["reason"] + "; " if "reason" in record else ""
        ) + f"the references differ ({inputs}): fusing"
    return record

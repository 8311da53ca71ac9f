"""`score`: hybrid scoring (exploitation): mean pairwise similarity + lambda * (1 - PPL).

When no aggregation came back it degrades instead: it hands the subsets to the next aggregator
candidate (`failing_over`: the graph sends the subsets back to `aggregate`), and when none
is left it answers with the top-prior reference and says so in the trace (`fallback`), unless
`require_fusion` is set, which fails the run naming every failure. When a gate answered alone
(`nodes/gates.py`) it answers with the top-prior reference, and the trace's `gate` says why.

The trace's `recoveries` lists the replies finished by a recovery follow-up
(`nodes/_recovery.py`); the answer keeps `response_metadata["smcs_recovery"]` when the chosen
one was.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata

from smcs_graph import core
from smcs_graph._input import message_text
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import SMCSError
from smcs_graph.feedback.keep import keeping
from smcs_graph.feedback.runs import RunStore
from smcs_graph.nodes import gates
from smcs_graph.nodes._common import (
    Services,
    failure_summary,
    next_aggregator,
    progress,
    run_settings,
    threaded_node,
)
from smcs_graph.nodes.gates import answers_alone
from smcs_graph.state import TRACE_DIGITS, CallRecord, Candidate, Reference, Skip, SMCSState

COST_DIGITS = 8
"""Decimals of the run's cost: a call at a few cents per million tokens stays visible."""
SECONDS_DIGITS = 3
"""Decimals of the run's wall time: milliseconds."""


_CUT = "deadline reached: no failover to the next aggregator"
"""The trace's note when the deadline stopped a failover."""


class PerplexityUnavailableWarning(UserWarning):
    """The aggregator returned no token logprobs: candidates were scored by similarity alone."""


def candidate_text(message: AIMessage) -> str:
    """What a candidate says, for embedding: its text, or its tool calls when it has no text."""
    text = message_text(message).strip()
    if text or not message.tool_calls:
        return text
    return json.dumps(
        [{"name": c["name"], "args": c["args"]} for c in message.tool_calls], sort_keys=True
    )


def total_usage(calls: Sequence[CallRecord]) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=sum(c["input_tokens"] for c in calls),
        output_tokens=sum(c["output_tokens"] for c in calls),
        total_tokens=sum(c["total_tokens"] for c in calls),
    )


def _usage_by_model(calls: Sequence[CallRecord]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for call in calls:
        row = out.setdefault(
            call["model"], {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}
        )
        row["calls"] += 1
        row["input_tokens"] += call["input_tokens"]
        row["output_tokens"] += call["output_tokens"]
        row["cost"] += call["cost"]
    return out


def _finite(value: float) -> float | None:
    return round(float(value), TRACE_DIGITS) if np.isfinite(value) else None


def _degrade(settings: SMCSConfig, state: SMCSState) -> dict[str, Any]:
    """No aggregation came back: fail over to the next aggregator candidate, else answer with
    the top-prior reference (or fail, under `require_fusion`)."""
    current = state.get("aggregator") or state["selection"]["aggregator"]
    following, skipped = next_aggregator(state, current)
    if following is not None and gates.passed(state.get("deadline")):
        following = None
        state = {**state, "run_notes": [*(state.get("run_notes") or []), _CUT]}
    if following is not None:
        note = f"aggregator {current!r} gave no fusion: failing over to {following!r}"
        progress({"stage": "score", "failover": following, "from": current})
        return {
            "aggregator": following,
            "failing_over": True,
            "skipped": skipped,
            "run_notes": [note],
        }
    if settings.require_fusion:
        raise SMCSError(
            "every aggregation failed, so there is no answer to score (require_fusion is "
            f"set). Failures: {failure_summary(state)}. Check the aggregator endpoints "
            f"({', '.join(state['selection']['aggregators'])}), or choose another aggregator."
        )
    top = min(state.get("references") or [], key=lambda r: r["rank"])
    fallback = (
        f"no aggregation gave an answer (aggregators tried: {_tried(state, skipped)}): "
        f"answered with the top-prior reference, {top['model']!r}'s"
    )
    progress({"stage": "score", "fallback": top["model"]})
    trace = _trace(settings, state, skipped, [], fallback=fallback)
    return _answer(_reference_message(top), trace)


def _tried(state: SMCSState, skipped: Sequence[Skip]) -> str:
    failed = {f["model"] for f in state.get("failures") or [] if f["stage"] == "aggregate"}
    tried = [name for name in state["selection"]["aggregators"] if name in failed]
    return ", ".join(tried) or "none"


def _reference_message(reference: Reference) -> AIMessage:
    """A reference as a message (its recovery, if any, in `smcs_recovery`)."""
    recovery = reference.get("recovery")
    metadata = {"smcs_recovery": recovery} if recovery else {}
    return AIMessage(content=reference["text"], response_metadata=metadata)


def _answer(source: AIMessage, trace: dict[str, Any]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"model_name": "smcs", "smcs_trace": trace}
    if "smcs_recovery" in source.response_metadata:  # the chosen answer was finished
        metadata["smcs_recovery"] = source.response_metadata["smcs_recovery"]
    answer = AIMessage(
        content=source.content,
        tool_calls=source.tool_calls,
        usage_metadata=total_usage(trace["calls"]),
        response_metadata=metadata,
        name=None,
    )
    return {
        "messages": [answer],
        "answer": message_text(source),
        "trace": trace,
        "failing_over": False,
    }


def _trace(
    settings: SMCSConfig,
    state: SMCSState,
    skipped: Sequence[Skip],
    scored: list[dict[str, Any]],
    *,
    fallback: str | None = None,
    chosen: int | None = None,
    perplexity_available: bool = False,
    warning_texts: Sequence[str] = (),
) -> dict[str, Any]:
    calls: list[CallRecord] = list(state.get("calls") or [])
    selection = state["selection"]
    started = state.get("started_at")
    return {
        "run_id": uuid.uuid4().hex,  # what feedback names the run by (`smcs_graph.feedback`)
        "question": selection["question"],
        "bank_size": selection["bank_size"],
        "support_size": selection["support_size"],
        "threshold": selection["threshold"],
        "support_examples": selection["support_examples"],
        "priors": {name: round(p, TRACE_DIGITS) for name, p in selection["priors"].items()},
        "referencers": selection["referencers"],
        # The model whose fusions were scored (the selection's, unless it failed over).
        "aggregator": state.get("aggregator") or selection["aggregator"],
        "aggregators": selection["aggregators"],
        "k_requested": selection["k_requested"],
        "k_used": selection["k_used"],
        "notes": [
            *selection["notes"],
            *(state.get("run_notes") or []),
            *([fallback] if fallback else []),
        ],
        "skipped": [*selection["skipped"], *(state.get("skipped") or []), *skipped],
        "fallback": fallback,
        "gate": state.get("gate"),
        "references": [
            {
                "model": r["model"],
                "rank": r["rank"],
                "text": r["text"],
                **({"recovered": True} if r.get("recovery") else {}),
            }
            for r in sorted(state.get("references") or [], key=lambda r: r["rank"])
        ],
        "answer_family": state.get("answer_family"),
        "recoveries": list(state.get("recoveries") or []),
        "failures": list(state.get("failures") or []),
        "subsets": state.get("subsets") or [],
        "candidates": scored,
        "chosen": chosen,
        "perplexity_available": perplexity_available,
        "warnings": list(warning_texts),
        "calls": calls,
        "usage": dict(total_usage(calls)),
        "usage_by_model": _usage_by_model(calls),
        "cost": round(sum(c["cost"] for c in calls), COST_DIGITS),
        "seconds": round(time.time() - started, SECONDS_DIGITS) if started else None,
        "config": {  # the trace's key predates the `settings` name; clients read it
            "k": settings.k,
            "n_sup_base": settings.n_sup_base,
            "gamma": settings.gamma,
            "k_drop": settings.k_drop,
            "n_aggregations": settings.n_aggregations,
            "lam": settings.lam,
            "drop_mode": settings.drop_mode,
            "similarity_mode": settings.similarity_mode,
            "support_rule": settings.support_rule,
        },
    }


def _alone(settings: SMCSConfig, state: SMCSState) -> dict[str, Any]:
    """A gate answered alone: the top-prior reference is the answer (see `nodes/gates.py`)."""
    top = min(state.get("references") or [], key=lambda r: r["rank"])
    progress({"stage": "score", "alone": top["model"]})
    return _answer(_reference_message(top), _trace(settings, state, [], []))


def _reference_candidates(state: SMCSState, start: int) -> list[Candidate]:
    """The references as hybrid-score candidates (`references_as_candidates`), numbered from
    `start`, each its own subset and "aggregator"."""
    references = sorted(state.get("references") or [], key=lambda r: r["rank"])
    return [
        Candidate(
            index=start + i,
            subset=[r["model"]],
            aggregator=r["model"],
            message=_reference_message(r),
            logprobs=r.get("logprobs"),
        )
        for i, r in enumerate(references)
    ]


def _score(services: Services, state: SMCSState) -> dict[str, Any]:
    settings = run_settings(services)
    if answers_alone(state):
        return _alone(settings, state)
    candidates: list[Candidate] = sorted(state.get("candidates") or [], key=lambda c: c["index"])
    if not candidates:
        return _degrade(settings, state)
    if gates.passed(state.get("deadline")):
        cut = sum(f["stage"] == "aggregate" for f in state.get("failures") or [])
        note = f"deadline {settings.deadline_s:g} s reached: scored the fusions that arrived"
        state = {**state, "run_notes": [*(state.get("run_notes") or []), f"{note} ({cut} cut)"]}
    fusions, mixed = len(candidates), settings.references_as_candidates
    if mixed:
        candidates += _reference_candidates(state, start=max(c["index"] for c in candidates) + 1)
    texts = [candidate_text(c["message"]) for c in candidates]
    similarity = core.mean_pairwise_similarity(
        services.embedder.embed(texts), include_self=settings.similarity_mode == "authors"
    )

    warning_texts: list[str] = []
    missing = [c["index"] for c in candidates if not c["logprobs"]]
    perplexities: np.ndarray | None = None
    if missing:
        tool_only = all(c["message"].tool_calls for c in candidates if c["index"] in missing)
        reason = (
            f"the aggregator {candidates[0]['aggregator']!r} returned no token logprobs "
            f"for candidate(s) {missing}"
            + (" (tool calls: OpenAI-style APIs give logprobs for text only)" if tool_only else "")
        )
        warning_texts.append(
            f"perplexity unavailable: {reason}; candidates were scored by mean pairwise "
            "similarity alone. Serve the aggregator from an endpoint that returns logprobs "
            "(logprobs: true in the pool file) to use the full hybrid score."
        )
        warnings.warn(warning_texts[-1], PerplexityUnavailableWarning, stacklevel=2)
    else:
        perplexities = np.array([core.perplexity(c["logprobs"] or []) for c in candidates])
    totals = core.hybrid_scores(similarity, perplexities, settings.lam)
    best = int(np.argmax(totals))
    winner = candidates[best]
    scored = [
        {
            "index": c["index"],
            "subset": c["subset"],
            "aggregator": c["aggregator"],
            "text": texts[i],
            "similarity": round(float(similarity[i]), TRACE_DIGITS),
            "perplexity": None if perplexities is None else _finite(perplexities[i]),
            "total": _finite(totals[i]),
            "chosen": i == best,
            **({"recovered": True} if "smcs_recovery" in c["message"].response_metadata else {}),
            # Only when references compete, so the default trace keeps its shape.
            **({"source": "fusion" if i < fusions else "reference"} if mixed else {}),
        }
        for i, c in enumerate(candidates)
    ]
    trace = _trace(
        settings,
        state,
        [],
        scored,
        chosen=winner["index"],
        perplexity_available=perplexities is not None,
        warning_texts=warning_texts,
    )
    progress({"stage": "score", "chosen": winner["index"], "totals": trace["candidates"]})
    return _answer(winner["message"], trace)


def make_score(services: Services, runs: RunStore | None = None) -> Any:
    """The score node; `runs`: where finished runs are kept for feedback (None: nowhere)."""
    return threaded_node("score", _score if runs is None else keeping(_score, runs), services)

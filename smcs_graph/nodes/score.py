"""`score`: hybrid scoring (exploitation): mean pairwise similarity + lambda * (1 - PPL)."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.messages import AIMessage
from langchain_core.messages.ai import UsageMetadata

from smcs_graph import core
from smcs_graph._input import message_text
from smcs_graph.errors import SMCSError
from smcs_graph.nodes._common import Services, dual_node, progress, run_config
from smcs_graph.nodes.drop_subsets import failure_summary
from smcs_graph.state import CallRecord, Candidate, SMCSState


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
    return round(float(value), 6) if np.isfinite(value) else None


def _score(services: Services, state: SMCSState) -> dict[str, Any]:
    config = run_config(services)
    candidates: list[Candidate] = sorted(state.get("candidates") or [], key=lambda c: c["index"])
    if not candidates:
        raise SMCSError(
            "every aggregation failed, so there is no answer to score. Failures: "
            f"{failure_summary(state)}. Check the aggregator "
            f"({state['selection']['aggregator']!r}) endpoint, or choose another aggregator."
        )
    texts = [candidate_text(c["message"]) for c in candidates]
    similarity = core.mean_pairwise_similarity(
        services.embedder.embed(texts), include_self=config.similarity_mode == "authors"
    )

    warning_texts: list[str] = []
    missing = [c["index"] for c in candidates if not c["logprobs"]]
    perplexities: np.ndarray | None = None
    if missing:
        tool_only = all(c["message"].tool_calls for c in candidates if c["index"] in missing)
        reason = (
            f"the aggregator {state['selection']['aggregator']!r} returned no token logprobs "
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
    totals = core.hybrid_scores(similarity, perplexities, config.lam)
    best = int(np.argmax(totals))
    winner = candidates[best]

    calls: list[CallRecord] = list(state.get("calls") or [])
    usage = total_usage(calls)
    selection = state["selection"]
    started = state.get("started_at")
    trace: dict[str, Any] = {
        "question": selection["question"],
        "bank_size": selection["bank_size"],
        "support_size": selection["support_size"],
        "threshold": selection["threshold"],
        "support_examples": selection["support_examples"],
        "priors": selection["priors"],
        "referencers": selection["referencers"],
        "aggregator": selection["aggregator"],
        "k_requested": selection["k_requested"],
        "k_used": selection["k_used"],
        "notes": selection["notes"],
        "references": [
            {"model": r["model"], "rank": r["rank"], "text": r["text"]}
            for r in sorted(state.get("references") or [], key=lambda r: r["rank"])
        ],
        "failures": list(state.get("failures") or []),
        "subsets": state.get("subsets") or [],
        "candidates": [
            {
                "index": c["index"],
                "subset": c["subset"],
                "text": texts[i],
                "similarity": round(float(similarity[i]), 6),
                "perplexity": None if perplexities is None else _finite(perplexities[i]),
                "total": _finite(totals[i]),
                "chosen": i == best,
            }
            for i, c in enumerate(candidates)
        ],
        "chosen": winner["index"],
        "perplexity_available": perplexities is not None,
        "warnings": warning_texts,
        "calls": calls,
        "usage": dict(usage),
        "usage_by_model": _usage_by_model(calls),
        "cost": round(sum(c["cost"] for c in calls), 8),
        "seconds": round(time.time() - started, 3) if started else None,
        "config": {
            "k": config.k,
            "n_sup_base": config.n_sup_base,
            "gamma": config.gamma,
            "k_drop": config.k_drop,
            "n_aggregations": config.n_aggregations,
            "lam": config.lam,
            "drop_mode": config.drop_mode,
            "similarity_mode": config.similarity_mode,
            "support_rule": config.support_rule,
        },
    }
    source = winner["message"]
    answer = AIMessage(
        content=source.content,
        tool_calls=source.tool_calls,
        usage_metadata=usage,
        response_metadata={"model_name": "smcs", "smcs_trace": trace},
        name=None,
    )
    progress({"stage": "score", "chosen": winner["index"], "totals": trace["candidates"]})
    return {"messages": [answer], "answer": message_text(source), "trace": trace}


def make_score(services: Services) -> Any:
    def score(state: SMCSState) -> dict[str, Any]:
        return _score(services, state)

    async def ascore(state: SMCSState) -> dict[str, Any]:
        return await asyncio.to_thread(_score, services, state)

    return dual_node(score, ascore, "score")

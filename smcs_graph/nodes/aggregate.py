"""`aggregate`: the aggregator fuses one subset of references, keeping its token logprobs."""

from __future__ import annotations

import dataclasses
from typing import Any

from langchain_core.runnables import RunnableConfig

from smcs_graph import core
from smcs_graph.nodes import gates
from smcs_graph.nodes._common import (
    CallOutcome,
    ModelCall,
    Services,
    answer_call,
    model_call_node,
    progress,
    run_settings,
)
from smcs_graph.prompts import aggregation_messages
from smcs_graph.state import AggregationTask, Candidate

STAGE = "aggregate"
SEED_OFFSET = 1000
"""Aggregation i is seeded `seed + SEED_OFFSET + i`, apart from referencer r's `seed + r`
(r < K): with a seed, no aggregation repeats a referencer's sample."""


def _call(services: Services, task: AggregationTask, config: RunnableConfig) -> ModelCall:
    settings = run_settings(services)
    member = services.pool[task["aggregator"]]
    model: Any = member.chat_model
    if task["tools"]:
        model = model.bind_tools(task["tools"], tool_choice=task.get("tool_choice"))
    messages = aggregation_messages(task["messages"], [r["text"] for r in task["references"]])
    call = answer_call(
        STAGE,
        member,
        task["index"],
        messages,
        settings,
        gates.call_timeout(settings.aggregation_timeout_s, task.get("deadline")),
        config,
        family=task.get("family"),
        seed_offset=SEED_OFFSET + task["index"],
        model=model,
        fusion=True,
    )
    if member.logprobs:
        # Whenever the pool entry says the model has them, sampling kwargs or not: the hybrid
        # score's perplexity term needs them (a recovery follow-up is asked for them too).
        call = dataclasses.replace(call, kwargs={**call.kwargs, "logprobs": True})
    return call


def _update(task: AggregationTask, outcome: CallOutcome) -> dict[str, Any]:
    update: dict[str, Any] = {"calls": outcome.records}
    if outcome.recovery is not None:
        update["recoveries"] = [outcome.recovery]
    if outcome.failure is not None or outcome.message is None:
        update["failures"] = [outcome.failure]
        progress({"stage": STAGE, "index": task["index"], "model": task["aggregator"], "ok": False})
        return update
    message = outcome.message
    logprobs = core.token_logprobs((message.response_metadata.get("logprobs") or {}).get("content"))
    update["candidates"] = [
        Candidate(
            index=task["index"],
            subset=task["subset"],
            aggregator=task["aggregator"],
            message=message,
            logprobs=logprobs,
        )
    ]
    progress({"stage": STAGE, "index": task["index"], "model": task["aggregator"], "ok": True})
    return update


def make_aggregate(services: Services) -> Any:
    return model_call_node(STAGE, services, _call, _update)

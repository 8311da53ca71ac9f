"""`aggregate`: the aggregator fuses one subset of references, keeping its token logprobs."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from smcs_graph import core
from smcs_graph.nodes._common import (
    CallOutcome,
    Services,
    acall_model,
    call_model,
    child_config,
    dual_node,
    progress,
    run_config,
)
from smcs_graph.pool import PoolModel
from smcs_graph.prompts import aggregation_messages
from smcs_graph.state import AggregationTask, Candidate

STAGE = "aggregate"


def _prepare(
    services: Services, task: AggregationTask
) -> tuple[PoolModel, Any, dict[str, Any], list[Any]]:
    config = run_config(services)
    member = services.pool[task["aggregator"]]
    model: Any = member.chat_model
    if task["tools"]:
        model = model.bind_tools(task["tools"], tool_choice=task.get("tool_choice"))
    kwargs = member.call_kwargs(config, seed_offset=1000 + task["index"])
    if member.logprobs and member.sampling_kwargs:
        kwargs["logprobs"] = True
    messages = aggregation_messages(task["messages"], [r["text"] for r in task["references"]])
    return member, model, kwargs, messages


def _update(task: AggregationTask, outcome: CallOutcome) -> dict[str, Any]:
    update: dict[str, Any] = {"calls": [outcome.record]}
    if outcome.failure is not None or outcome.message is None:
        update["failures"] = [outcome.failure]
        progress({"stage": STAGE, "index": task["index"], "ok": False})
        return update
    message = outcome.message
    logprobs = core.token_logprobs((message.response_metadata.get("logprobs") or {}).get("content"))
    update["candidates"] = [
        Candidate(index=task["index"], subset=task["subset"], message=message, logprobs=logprobs)
    ]
    progress({"stage": STAGE, "index": task["index"], "ok": True})
    return update


def make_aggregate(services: Services) -> Any:
    def aggregate(task: AggregationTask, config: RunnableConfig) -> dict[str, Any]:
        member, model, kwargs, messages = _prepare(services, task)
        outcome = call_model(
            STAGE,
            member,
            task["index"],
            messages,
            kwargs,
            run_config(services).aggregation_timeout_s,
            child_config(config, STAGE, member.name),
            model=model,
        )
        return _update(task, outcome)

    async def aaggregate(task: AggregationTask, config: RunnableConfig) -> dict[str, Any]:
        member, model, kwargs, messages = _prepare(services, task)
        outcome = await acall_model(
            STAGE,
            member,
            task["index"],
            messages,
            kwargs,
            run_config(services).aggregation_timeout_s,
            child_config(config, STAGE, member.name),
            model=model,
        )
        return _update(task, outcome)

    return dual_node(aggregate, aaggregate, "aggregate")

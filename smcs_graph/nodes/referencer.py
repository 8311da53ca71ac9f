"""`referencer`: one selected pool model answers the conversation (one `Send` per model)."""

from __future__ import annotations

import dataclasses
from typing import Any

from langchain_core.runnables import RunnableConfig

from smcs_graph import core
from smcs_graph._input import message_text
from smcs_graph.nodes import gates
from smcs_graph.nodes._common import (
    EMPTY_ANSWER,
    CallOutcome,
    ModelCall,
    Services,
    answer_call,
    model_call_node,
    progress,
    run_settings,
)
from smcs_graph.state import Reference, ReferencerTask

STAGE = "referencer"
PREVIEW_CHARS = 160
"""Characters of each answer in its progress event: about two lines of a terminal."""


def _update(task: ReferencerTask, outcome: CallOutcome) -> dict[str, Any]:
    update: dict[str, Any] = {"calls": outcome.records}
    if outcome.recovery is not None:
        update["recoveries"] = [outcome.recovery]
    text = message_text(outcome.message).strip() if outcome.message is not None else ""
    if outcome.failure is None and not text:
        outcome = dataclasses.replace(
            outcome,
            record={**outcome.record, "ok": False, "error": "empty answer"},
            failure={
                "stage": STAGE,
                "model": task["model"],
                "index": task["rank"],
                "error": EMPTY_ANSWER,
            },
        )
        update["calls"] = outcome.records
    if outcome.failure is not None:
        update["failures"] = [outcome.failure]
        progress(
            {"stage": STAGE, "model": task["model"], "ok": False, "error": outcome.failure["error"]}
        )
    else:
        reference = Reference(model=task["model"], rank=task["rank"], text=text)
        metadata = outcome.message.response_metadata if outcome.message is not None else {}
        if metadata.get("logprobs"):
            reference["logprobs"] = core.token_logprobs(metadata["logprobs"].get("content"))
        if "smcs_recovery" in metadata:
            reference["recovery"] = dict(metadata["smcs_recovery"])
        update["references"] = [reference]
        progress(
            {
                "stage": STAGE,
                "model": task["model"],
                "rank": task["rank"],
                "ok": True,
                "output_tokens": outcome.record["output_tokens"],
                "seconds": round(outcome.record["seconds"], 1),
                # A first look at the answer while the aggregations run (the top-prior
                # referencer's, rank 0, is usually a usable answer already).
                "preview": " ".join(text.split())[:PREVIEW_CHARS],
            }
        )
    return update


def _call(services: Services, task: ReferencerTask, config: RunnableConfig) -> ModelCall:
    settings = run_settings(services)
    member = services.pool[task["model"]]
    call = answer_call(
        STAGE,
        member,
        task["rank"],
        task["messages"],
        settings,
        gates.call_timeout(settings.referencer_timeout_s, task.get("deadline")),
        config,
        family=task.get("family"),
        seed_offset=task["rank"],
    )
    if settings.references_as_candidates and member.logprobs:
        # The reference is a candidate of the hybrid score.
        call = dataclasses.replace(call, kwargs={**call.kwargs, "logprobs": True})
    return call


def make_referencer(services: Services) -> Any:
    return model_call_node(STAGE, services, _call, _update)

"""`drop_subsets`: prior drop (exploration): n prior-weighted subsets of the references."""

from __future__ import annotations

from typing import Any

import numpy as np
from langgraph.types import Send

from smcs_graph import core
from smcs_graph._input import conversation
from smcs_graph.errors import SMCSError
from smcs_graph.nodes._common import Services, progress, run_config
from smcs_graph.state import AggregationTask, SMCSState


def failure_summary(state: SMCSState) -> str:
    failures = state.get("failures") or []
    if not failures:
        return "no failure was recorded"
    return "; ".join(f"{f['stage']} {f['model']}#{f['index']}: {f['error']}" for f in failures)


def make_drop_subsets(services: Services) -> Any:
    def drop_subsets(state: SMCSState) -> dict[str, Any]:
        config = run_config(services)
        references = sorted(state.get("references") or [], key=lambda r: r["rank"])
        needed = min(config.min_referencers, len(state["selection"]["referencers"]))
        if len(references) < max(needed, 1):
            raise SMCSError(
                f"only {len(references)} of {len(state['selection']['referencers'])} "
                f"referencers answered (quorum: {needed}). Failures: {failure_summary(state)}. "
                "Check that the endpoints are reachable, raise the timeouts, or lower "
                "min_referencers."
            )
        priors = np.array([state["selection"]["priors"][r["model"]] for r in references])
        subsets = core.prior_drop_subsets(
            priors, config.n_aggregations, config.k_drop, rng=config.seed, mode=config.drop_mode
        )
        named = [[references[i]["model"] for i in subset] for subset in subsets]
        progress({"stage": "drop_subsets", "subsets": named})
        return {"subsets": named}

    return drop_subsets


def send_aggregations(state: SMCSState) -> list[Send]:
    """Fan out: one `Send` per subset, each fused by the aggregator in parallel."""
    by_model = {r["model"]: r for r in state.get("references") or []}
    messages = conversation(state)
    aggregator = state["selection"]["aggregator"]
    return [
        Send(
            "aggregate",
            AggregationTask(
                index=index,
                aggregator=aggregator,
                subset=subset,
                references=[by_model[m] for m in subset],
                messages=messages,
                tools=list(state.get("tools") or []),
                tool_choice=state.get("tool_choice"),
            ),
        )
        for index, subset in enumerate(state.get("subsets") or [])
    ]

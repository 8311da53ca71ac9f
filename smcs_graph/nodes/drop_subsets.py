"""`drop_subsets`: prior drop (exploration): n prior-weighted subsets of the references.

`subset_draws="distinct"` (the default) gives the n fusions n different subsets while enough
exist; "independent" is the paper's i.i.d. draws (`core.prior_drop_subsets`). The trace's
`subsets` names them.

It also settles who fuses them: the first aggregator candidate that did not fail as a
referencer in this run (a fixed aggregator is always tried), and `send_aggregations` sends the
subsets to it, again for each next candidate when `score` fails over. When a gate answers alone
(the prior gate or `max_calls` in `select_priors`, or the agreement gate here: see
`nodes/gates.py`) it draws no subsets and the graph goes straight to `score`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from langgraph.types import Send

from smcs_graph import core
from smcs_graph._input import conversation
from smcs_graph.errors import SMCSError
from smcs_graph.nodes import gates
from smcs_graph.nodes._common import (
    Services,
    failure_summary,
    next_aggregator,
    progress,
    run_settings,
)
from smcs_graph.state import AggregationTask, SMCSState


def make_drop_subsets(services: Services) -> Any:
    def drop_subsets(state: SMCSState) -> dict[str, Any]:
        settings = run_settings(services)
        references = sorted(state.get("references") or [], key=lambda r: r["rank"])
        needed = min(settings.min_referencers, len(state["selection"]["referencers"]))
        if len(references) < max(needed, 1):
            raise SMCSError(
                f"only {len(references)} of {len(state['selection']['referencers'])} "
                f"referencers answered (quorum: {needed}). Failures: {failure_summary(state)}. "
                "Check that the endpoints are reachable, raise the timeouts, or lower "
                "min_referencers."
            )
        selection = state["selection"]
        examples = selection["support_examples"]
        gate = gates.agreement_gate(
            state.get("gate"),
            references if not gates.answers_alone(state) else [],
            examples[0]["family"] if examples else None,
            services.embedder,
            settings,
        )
        alone = gate is not None and gate["decision"] == gates.ALONE
        if not alone and gates.passed(state.get("deadline")):
            gate = gates.deadline_gate(gate, references[0]["model"], state, settings)
            alone = True
        if alone and gate is not None:
            progress({"stage": "drop_subsets", "gate": gate["reason"]})
            return {"subsets": [], "gate": gate}
        # The selection's priors at full precision (the trace shows them rounded).
        priors = np.array([state["selection"]["priors"][r["model"]] for r in references])
        subsets = core.prior_drop_subsets(
            priors,
            selection.get("n_used", settings.n_aggregations),
            settings.k_drop,
            rng=settings.seed,
            mode=settings.drop_mode,
            distinct=settings.subset_draws == "distinct",
        )
        named = [[references[i]["model"] for i in subset] for subset in subsets]
        aggregator, skipped = next_aggregator(state, None)
        progress({"stage": "drop_subsets", "subsets": named, "aggregator": aggregator})
        # Quorum holds, so a referencer answered: some candidate is left (`or`: for typing).
        return {
            "subsets": named,
            "aggregator": aggregator or state["aggregator"],
            "skipped": skipped,
            "gate": gate,
        }

    return drop_subsets


def send_aggregations(state: SMCSState) -> list[Send]:
    """Fan out: one `Send` per subset, each fused by the aggregator in parallel."""
    by_model = {r["model"]: r for r in state.get("references") or []}
    messages = conversation(state)
    aggregator = state["aggregator"]
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
                deadline=state.get("deadline"),
                family=state.get("answer_family"),
            ),
        )
        for index, subset in enumerate(state.get("subsets") or [])
    ]

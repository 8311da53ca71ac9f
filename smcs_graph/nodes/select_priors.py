"""`select_priors`: Retrieval-based Prior Selection (embed, support set, priors, top-K).

The top-K are chosen among the models the circuit breaker does not pass over (`PoolModel.health`:
a model whose last calls failed within `breaker_cooldown_s`); the trace names each one passed
over and why. When every model is passed over, the breaker is ignored for the run.

It also records the run's answer family (the contract the question states,
`answers.detect_family`): the referencers' and fusions' token limit and recovery follow it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from langgraph.types import Overwrite, Send
from numpy.typing import NDArray

from smcs_graph import answers, core
from smcs_graph._input import conversation, retrieval_query
from smcs_graph.bank import Support
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError
from smcs_graph.nodes import gates
from smcs_graph.nodes._common import Services, progress, run_settings, threaded_node
from smcs_graph.selection import gate_settings, p_correct, prior_selection
from smcs_graph.state import ReferencerTask, Selection, Skip, SMCSState, SupportExample

SUPPORT_EXAMPLES = 5
"""Support questions kept in the trace, to show why the models were picked."""
EXAMPLE_DIGITS = 4
"""Decimals of a support example's similarity in the trace: enough to see the ordering."""


def _select(services: Services, state: SMCSState) -> dict[str, Any]:
    started = time.time()
    settings = run_settings(services)
    messages = conversation(state)
    question = retrieval_query(messages)
    pool_names = services.pool.names
    notes: list[str] = []

    query = services.embedder.embed([question])[0]  # kept for feedback (`smcs_graph.feedback`)
    support, priors = prior_selection(
        question, pool_names, services.bank, services.embedder, settings, query
    )
    unmeasured = [m for m, row in zip(pool_names, support.measured, strict=True) if not row.any()]
    if support.bank_size == 0:
        notes.append("the question bank is empty: every prior is 0 and pool order decides")
    elif unmeasured:
        notes.append(
            "no bank results on this support set for: "
            + ", ".join(unmeasured)
            + " (prior 0; profile them to give them evidence)"
        )

    if settings.aggregator is not None and settings.aggregator not in services.pool:
        raise ConfigError(
            f"aggregator {settings.aggregator!r} is not in the pool; choose one of "
            f"{', '.join(pool_names)} or leave it unset to use the top-prior model"
        )
    skipped: list[Skip] = []
    for name in pool_names:
        member = services.pool[name]
        reason = member.health.open_reason(settings.breaker_failures, settings.breaker_cooldown_s)
        if reason is not None:
            skipped.append(Skip(model=name, stage="select_priors", reason=reason))
    passed_over = {skip["model"] for skip in skipped}
    available = [i for i, name in enumerate(pool_names) if name not in passed_over]
    if not available:
        notes.append(
            "every pool model failed within its cool-down: the circuit breaker is ignored "
            "for this run"
        )
        skipped, available = [], list(range(len(pool_names)))

    k_used = min(settings.k, len(available))
    if k_used < settings.k:
        where = "the pool size" if not skipped else "the models not passed over"
        notes.append(f"k={settings.k} capped at {where} ({len(available)})")
    chosen = core.select_top_k(priors[available], k_used)
    referencers = [pool_names[available[i]] for i in chosen]

    gate, n_used = _gate(services, settings, support, priors, referencers, messages, query)
    if gate is not None and gate["decision"] == gates.ALONE:
        referencers, k_used, n_used = [gate["model"]], 1, 0
        notes.append(gate["reason"])
    elif gate is not None:
        if "caps" in gate:
            referencers, k_used = referencers[: gate["caps"]["k"]], gate["caps"]["k"]
        notes.append(gate["reason"])

    if settings.aggregator is not None:
        aggregator = settings.aggregator
        aggregators = [aggregator]
    else:
        aggregator = referencers[0]
        aggregators = list(referencers)
        notes.append(f"aggregator {aggregator!r}: highest prior on the support set")

    examples = [
        SupportExample(
            id=support.question_ids[i],
            question=support.questions[i],
            family=support.families[i],
            similarity=round(float(support.similarities[i]), EXAMPLE_DIGITS),
        )
        for i in range(min(SUPPORT_EXAMPLES, len(support.question_ids)))
    ]
    selection = Selection(
        question=question,
        bank_size=support.bank_size,
        support_size=len(support.question_ids),
        threshold=float(support.threshold) if np.isfinite(support.threshold) else 0.0,
        # Full precision: prior drop samples from these (the trace rounds them).
        priors={name: float(v) for name, v in zip(pool_names, priors, strict=True)},
        referencers=referencers,
        aggregator=aggregator,
        aggregators=aggregators,
        k_requested=settings.k,
        k_used=k_used,
        support_examples=examples,
        notes=notes,
        skipped=skipped,
        n_used=n_used,
    )
    progress({"stage": "select_priors", "referencers": referencers, "aggregator": aggregator})
    if gate is not None:
        progress({"stage": "gate", "decision": gate["decision"], "reason": gate["reason"]})
    return {
        "messages": messages if not state.get("messages") else [],
        "selection": selection,
        "started_at": started,
        # A new run on a checkpointed thread must not inherit the last run's branch results.
        "references": Overwrite([]),
        "candidates": Overwrite([]),
        "calls": Overwrite([]),
        "failures": Overwrite([]),
        "skipped": Overwrite([]),
        "run_notes": Overwrite([]),
        "aggregator": aggregator,
        "failing_over": False,
        "subsets": [],
        "gate": gate,
        "deadline": gates.deadline_at(started, settings),
        "answer_family": answers.detect_family(question),
        "recoveries": Overwrite([]),
        "query_embedding": [float(x) for x in query],
    }


def _gate(
    services: Services,
    settings: SMCSConfig,
    support: Support,
    priors: NDArray[np.float64],
    referencers: list[str],
    messages: list[Any],
    query: Any,
) -> tuple[dict[str, Any] | None, int]:
    """The prior gate's and the budget's record (None: neither is set) and the aggregations
    planned. With a `gate_rule` of its own, the gate's top model is the referencer that rule
    finds most probably right (ties: the selection's order)."""
    gate: dict[str, Any] | None = None
    if settings.collaboration == "adaptive":
        names = services.pool.names
        estimate = p_correct(support, names, services.bank, settings, priors, query)
        p_by_model = {name: float(p) for name, p in zip(names, estimate, strict=True)}
        order = referencers
        if gate_settings(settings) is not None:
            order = sorted(referencers, key=lambda m: -p_by_model[m])
        gate = gates.prior_gate(p_by_model, order, settings)
        if gate["decision"] == gates.ALONE:
            return gate, 0
    costs = gates.cost_model(services.pool, referencers, settings, messages)
    _, n, caps = gates.plan_budget(len(referencers), settings.n_aggregations, settings, costs)
    if caps is None:
        return gate, settings.n_aggregations
    if n == 0:
        return {**(gate or {}), **gates.budget_gate(referencers[0], caps)}, 0
    reason = gates.budget_reason(caps)
    if gate is None:
        return {"decision": gates.COLLABORATE, "stage": "budget", "reason": reason, "caps": caps}, n
    return {**gate, "caps": caps, "reason": f"{gate['reason']}; {reason}"}, n


def make_select_priors(services: Services) -> Any:
    return threaded_node("select_priors", _select, services)


def send_referencers(state: SMCSState) -> list[Send]:
    """Fan out: one `Send` per selected referencer, all answered in parallel."""
    messages = conversation(state)
    deadline, family = state.get("deadline"), state.get("answer_family")
    return [
        Send(
            "referencer",
            ReferencerTask(
                model=name, rank=rank, messages=messages, deadline=deadline, family=family
            ),
        )
        for rank, name in enumerate(state["selection"]["referencers"])
    ]

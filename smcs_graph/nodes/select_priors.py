"""`select_priors`: Retrieval-based Prior Selection (embed, support set, priors, top-K)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from langgraph.types import Overwrite, Send
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph._input import conversation, retrieval_query
from smcs_graph.bank import QuestionBank, Support
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.errors import ConfigError
from smcs_graph.nodes._common import Services, dual_node, progress, run_config
from smcs_graph.state import ReferencerTask, Selection, SMCSState, SupportExample

SUPPORT_EXAMPLES = 5
"""Support questions kept in the trace, to show why the models were picked."""


def prior_selection(
    question: str,
    pool_names: Sequence[str],
    bank: QuestionBank,
    embedder: Embedder,
    config: SMCSConfig,
) -> tuple[Support, NDArray[np.float64]]:
    """RPS steps 1-3: embed the question, find its support set, score every pool model."""
    query = embedder.embed([question])[0]
    support = bank.support(
        query,
        list(pool_names),
        n_sup_base=config.n_sup_base,
        gamma=config.gamma,
        rule=config.support_rule,
    )
    if config.prior_rule == "shrunk":
        priors = core.shrunk_prior_scores(
            support.similarities,
            support.capability,
            support.measured,
            bank.accuracy(list(pool_names)),
            config.shrink_strength,
            temperature=config.shrink_temperature,
        )
    elif config.prior_rule == "hier":
        priors = core.hier_prior_scores(
            support.similarities,
            support.capability,
            support.measured,
            support.categories,
            bank.category_accuracy(list(pool_names), config.hier_category_strength),
            bank.accuracy(list(pool_names)),
            config.hier_strength,
            temperature=config.hier_temperature,
            category_temperature=config.hier_category_temperature,
        )
    else:
        priors = core.prior_scores(
            support.similarities,
            support.capability,
            support.measured,
            weighted=config.weighted_prior,
        )
    return support, priors


def _select(services: Services, state: SMCSState) -> dict[str, Any]:
    started = time.time()
    config = run_config(services)
    messages = conversation(state)
    question = retrieval_query(messages)
    pool_names = services.pool.names
    notes: list[str] = []

    support, priors = prior_selection(
        question, pool_names, services.bank, services.embedder, config
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

    k_used = min(config.k, len(pool_names))
    if k_used < config.k:
        notes.append(f"k={config.k} capped at the pool size ({len(pool_names)})")
    chosen = core.select_top_k(priors, k_used)
    referencers = [pool_names[i] for i in chosen]

    if config.aggregator is not None:
        if config.aggregator not in services.pool:
            raise ConfigError(
                f"aggregator {config.aggregator!r} is not in the pool; choose one of "
                f"{', '.join(pool_names)} or leave it unset to use the top-prior model"
            )
        aggregator = config.aggregator
    else:
        aggregator = referencers[0]
        notes.append(f"aggregator {aggregator!r}: highest prior on the support set")

    examples = [
        SupportExample(
            id=support.question_ids[i],
            question=support.questions[i],
            family=support.families[i],
            similarity=round(float(support.similarities[i]), 4),
        )
        for i in range(min(SUPPORT_EXAMPLES, len(support.question_ids)))
    ]
    selection = Selection(
        question=question,
        bank_size=support.bank_size,
        support_size=len(support.question_ids),
        threshold=float(support.threshold) if np.isfinite(support.threshold) else 0.0,
        priors={name: round(float(v), 6) for name, v in zip(pool_names, priors, strict=True)},
        referencers=referencers,
        aggregator=aggregator,
        k_requested=config.k,
        k_used=k_used,
        support_examples=examples,
        notes=notes,
    )
    progress({"stage": "select_priors", "referencers": referencers, "aggregator": aggregator})
    return {
        "messages": messages if not state.get("messages") else [],
        "selection": selection,
        "started_at": started,
        # A new run on a checkpointed thread must not inherit the last run's branch results.
        "references": Overwrite([]),
        "candidates": Overwrite([]),
        "calls": Overwrite([]),
        "failures": Overwrite([]),
        "subsets": [],
    }


def make_select_priors(services: Services) -> Any:
    def select_priors(state: SMCSState) -> dict[str, Any]:
        return _select(services, state)

    async def aselect_priors(state: SMCSState) -> dict[str, Any]:
        # Embedding and Chroma block: keep them off the event loop (LangGraph dev server).
        return await asyncio.to_thread(_select, services, state)

    return dual_node(select_priors, aselect_priors, "select_priors")


def send_referencers(state: SMCSState) -> list[Send]:
    """Fan out: one `Send` per selected referencer, all answered in parallel."""
    messages = conversation(state)
    return [
        Send("referencer", ReferencerTask(model=name, rank=rank, messages=messages))
        for rank, name in enumerate(state["selection"]["referencers"])
    ]

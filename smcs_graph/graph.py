"""`build_graph`: the SMCS state graph.

```
START -> select_priors --(Send x K)--> referencer -> drop_subsets --(Send x n)--> aggregate
      -> score -> END
                  score --(Send x n, to the next aggregator, when no fusion came back)--> aggregate
         drop_subsets --(a gate answered alone: the top-prior reference)--> score
```

The gates (`nodes/gates.py`, off by default): the prior gate and `max_calls` decide in
`select_priors` how many referencers it sends (one, when the top model answers alone) and how
many aggregations follow; the agreement gate decides in `drop_subsets`. `drop_subsets`' edge
routes on that record, so Studio draws both ways out of it.

The graph is returned uncompiled, so the caller picks the checkpointer and store
(`build_graph(...).compile()`). Run settings arrive as the graph's context (`SMCSConfig`);
the pool, bank and embedder are bound when the graph is built. `runnable_config(settings)` is
the LangGraph run config that the package's own surfaces start runs with.

No node has a LangGraph `retry_policy` or `timeout`: both end in an exception that fails the
run, while a referencer or aggregation that fails or times out must be recorded and left out
(quorum), and `timeout` covers async nodes only. Model calls carry their own deadline, retries
included, and are cancelled at it on both paths (`nodes/_deadline.py`). No `cache_policy`
either: a repeat is never free (`select_priors` depends on the bank, which changes as results
are recorded; the others call models).
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.callbacks import Callbacks
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig, context_schema
from smcs_graph.embedder import Embedder, default_embedder
from smcs_graph.feedback import RunStore, run_store
from smcs_graph.models import Pool
from smcs_graph.nodes import (
    Services,
    make_aggregate,
    make_drop_subsets,
    make_referencer,
    make_score,
    make_select_priors,
    send_aggregations,
    send_referencers,
)
from smcs_graph.nodes.gates import answers_alone
from smcs_graph.state import SMCSInput, SMCSOutput, SMCSState

NODES = ("select_priors", "referencer", "drop_subsets", "aggregate", "score")


def build_graph(
    pool: Pool,
    bank: QuestionBank,
    embedder: Embedder | None = None,
    config: SMCSConfig | None = None,
    *,
    runs: RunStore | str | Path | bool | None = True,
) -> StateGraph[SMCSState, SMCSConfig, SMCSInput, SMCSOutput]:
    """The SMCS graph over `pool` and `bank`, uncompiled.

    `embedder` must be the one the bank was built with (default: the MiniLM embedder).
    `config` (the graph's default settings; the keyword keeps its documented name) is used for
    runs that pass no context; a run's `context=SMCSConfig(...)` (or a mapping of its fields,
    as LangGraph's server sends) overrides it.

    Sync `invoke` runs parallel branches on a thread pool whose size is the run config's
    `max_concurrency` (LangChain's default is small): pass `runnable_config(settings)` or
    `{"max_concurrency": 64}` so that K referencers and n aggregations really run at once.
    `ainvoke` has no such limit.

    `runs`: where finished runs are kept for feedback (`smcs_graph.feedback`): True (default)
    beside an on-disk bank (`<bank folder>.runs.sqlite`; none for an in-memory or server bank),
    a file path or a `RunStore`, or False: not kept. Every run's trace carries its `run_id`.
    """
    services = Services(
        pool=pool,
        bank=bank,
        embedder=embedder if embedder is not None else default_embedder(),
        settings=config if config is not None else SMCSConfig(),
    )
    builder = StateGraph(
        SMCSState,
        context_schema=context_schema(services.settings),
        input_schema=SMCSInput,
        output_schema=SMCSOutput,
    )
    builder.add_node("select_priors", make_select_priors(services))
    builder.add_node("referencer", make_referencer(services))
    builder.add_node("drop_subsets", make_drop_subsets(services))
    builder.add_node("aggregate", make_aggregate(services))
    builder.add_node("score", make_score(services, run_store(bank, runs)))

    builder.add_edge(START, "select_priors")
    # Path maps let get_graph() (and so Studio) draw the Send fan-outs.
    builder.add_conditional_edges("select_priors", send_referencers, ["referencer"])
    builder.add_edge("referencer", "drop_subsets")
    builder.add_conditional_edges("drop_subsets", _route_after_references, ["aggregate", "score"])
    builder.add_edge("aggregate", "score")
    builder.add_conditional_edges("score", _route_after_score, ["aggregate", END])
    return builder


def _route_after_references(state: SMCSState) -> list[Send] | str:
    """After `drop_subsets`: straight to `score` when a gate answered alone; else the subsets,
    each to the aggregator."""
    return "score" if answers_alone(state) else send_aggregations(state)


def _route_after_score(state: SMCSState) -> list[Send] | str:
    """After `score`: the subsets again, to the next aggregator, when it failed over; else END."""
    return send_aggregations(state) if state.get("failing_over") else END


def runnable_config(
    settings: SMCSConfig, *, callbacks: Callbacks = None, tags: list[str] | None = None
) -> RunnableConfig:
    """The LangGraph run config of a run under `settings`: its `max_concurrency`, plus the
    caller's callbacks and tags."""
    config = RunnableConfig(max_concurrency=settings.max_concurrency)
    if callbacks is not None:
        config["callbacks"] = callbacks
    if tags:
        config["tags"] = list(tags)
    return config

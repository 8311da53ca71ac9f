"""`build_graph`: the SMCS state graph.

```
START -> select_priors --(Send x K)--> referencer -> drop_subsets --(Send x n)--> aggregate
      -> score -> END
```

The graph is returned uncompiled, so the caller picks the checkpointer and store
(`build_graph(...).compile()`). Run settings arrive as the graph's context (`SMCSConfig`);
the pool, bank and embedder are bound when the graph is built.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig, context_schema
from smcs_graph.embedder import Embedder, default_embedder
from smcs_graph.nodes._common import Services
from smcs_graph.nodes.aggregate import make_aggregate
from smcs_graph.nodes.drop_subsets import make_drop_subsets, send_aggregations
from smcs_graph.nodes.referencer import make_referencer
from smcs_graph.nodes.score import make_score
from smcs_graph.nodes.select_priors import make_select_priors, send_referencers
from smcs_graph.pool import Pool
from smcs_graph.state import SMCSInput, SMCSOutput, SMCSState

NODES = ("select_priors", "referencer", "drop_subsets", "aggregate", "score")


def build_graph(
    pool: Pool,
    bank: QuestionBank,
    embedder: Embedder | None = None,
    config: SMCSConfig | None = None,
) -> StateGraph[SMCSState, SMCSConfig, SMCSInput, SMCSOutput]:
    """The SMCS graph over `pool` and `bank`, uncompiled.

    `embedder` must be the one the bank was built with (default: the MiniLM embedder).
    `config` is used for runs that pass no context; a run's `context=SMCSConfig(...)` (or a
    mapping of its fields, as LangGraph's server sends) overrides it.

    Sync `invoke` runs parallel branches on a thread pool whose size is the run config's
    `max_concurrency` (LangChain's default is small): pass `{"max_concurrency": 64}` so that K
    referencers and n aggregations really run at once. `ainvoke` has no such limit.
    """
    services = Services(
        pool=pool,
        bank=bank,
        embedder=embedder if embedder is not None else default_embedder(),
        config=config if config is not None else SMCSConfig(),
    )
    builder = StateGraph(
        SMCSState,
        context_schema=context_schema(services.config),
        input_schema=SMCSInput,
        output_schema=SMCSOutput,
    )
    builder.add_node("select_priors", make_select_priors(services))
    builder.add_node("referencer", make_referencer(services))
    builder.add_node("drop_subsets", make_drop_subsets(services))
    builder.add_node("aggregate", make_aggregate(services))
    builder.add_node("score", make_score(services))

    builder.add_edge(START, "select_priors")
    # Path maps let get_graph() (and so Studio) draw the Send fan-outs.
    builder.add_conditional_edges("select_priors", send_referencers, ["referencer"])
    builder.add_edge("referencer", "drop_subsets")
    builder.add_conditional_edges("drop_subsets", send_aggregations, ["aggregate"])
    builder.add_edge("aggregate", "score")
    builder.add_edge("score", END)
    return builder

"""The SMCS graph invoked directly: build, compile, stream its node updates, read the trace.

    .venv/bin/python examples/graph_invoke.py ["question"]

Runs on the embedded local pool and the starter bank (see _starter.py); point `Pool.from_file`
at your own pool file and `QuestionBank.open` at your bank for real use.
"""

from __future__ import annotations

import json
import sys

from _starter import local_pool, starter_bank
from langgraph.checkpoint.memory import InMemorySaver

from smcs_graph import build_graph


def main(question: str) -> None:
    pool, config = local_pool()
    bank = starter_bank(pool)
    # Uncompiled on purpose: the caller picks the checkpointer (here, in memory).
    graph = build_graph(pool, bank, bank.embedder, config).compile(checkpointer=InMemorySaver())
    run = {"configurable": {"thread_id": "example"}, "max_concurrency": 16}
    for update in graph.stream({"question": question}, run, stream_mode="updates"):
        for node in update:
            print(f"finished: {node}")
    state = graph.get_state(run).values
    trace = state["trace"]
    print(json.dumps({k: trace[k] for k in ("referencers", "aggregator", "priors")}, indent=2))
    print("answer:", state["answer"])


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "Which planet is known as the Red Planet? Answer in one word.")

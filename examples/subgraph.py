"""SMCS as one node of a larger LangGraph graph.

    .venv/bin/python examples/subgraph.py ["question"]      # embedded local pool
    .venv/bin/python examples/subgraph.py --fake            # scripted models

The parent graph routes a question to the compiled SMCS graph (a subgraph node sharing the
parent's `messages`), then a plain node turns SMCS's trace into a footnote. Streaming the parent
with `subgraphs=True` shows SMCS's own stages as they finish, under the subgraph's namespace.
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from smcs_graph import build_graph


class State(MessagesState):
    footnote: str


def footnote(state: State) -> dict[str, Any]:
    """Summarize who answered, from the SMCS answer's trace."""
    answer = state["messages"][-1]
    assert isinstance(answer, AIMessage)
    trace = answer.response_metadata["smcs_trace"]
    return {
        "footnote": (
            f"referencers {', '.join(trace['referencers'])}; aggregator {trace['aggregator']}; "
            f"{trace['usage']['total_tokens']} tokens"
        )
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="default: What is 12 times 7?")
    parser.add_argument("--fake", action="store_true", help="scripted models, no model files")
    args = parser.parse_args()
    question = " ".join(args.question) or "What is 12 times 7? Reply with the number only."

    if args.fake:
        from _fakes import fake_setup

        pool, bank, config = fake_setup()
    else:
        from _starter import local_pool, starter_bank

        pool, config = local_pool()
        bank = starter_bank(pool)
    # No checkpointer of its own: as a subgraph it must not write into the parent's thread.
    smcs = build_graph(pool, bank, bank.embedder, config).compile(checkpointer=False, name="smcs")

    parent = StateGraph(State)
    parent.add_node("smcs", smcs)
    parent.add_node("footnote", footnote)
    parent.add_edge(START, "smcs")
    parent.add_edge("smcs", "footnote")
    parent.add_edge("footnote", END)
    app = parent.compile()

    state: dict[str, Any] = {}
    for namespace, mode, chunk in app.stream(
        {"messages": [("user", question)]},
        {"max_concurrency": 16},
        stream_mode=["updates", "values"],
        subgraphs=True,
    ):
        if mode == "values":
            if not namespace:
                state = chunk  # the parent's latest full state
            continue
        where = "/".join(part.split(":")[0] for part in namespace) or "parent"
        for node in chunk:
            print(f"[{where}] finished: {node}")
    print(f"answer: {state['messages'][-1].content}")
    print(f"footnote: {state['footnote']}")


if __name__ == "__main__":
    main()

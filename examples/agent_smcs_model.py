"""An agent whose model is SMCS: `create_agent(model=SMCSChatModel(...), tools=[...])`.

    .venv/bin/python examples/agent_smcs_model.py ["question"]          # embedded local pool
    .venv/bin/python examples/agent_smcs_model.py --fake                # scripted models

The agent binds its tools to the SMCS chat model, which hands them to the aggregator: when the
chosen aggregation calls a tool, the agent runs it and asks SMCS again with the result. (The
tiny local models seldom call tools; `--fake` scripts an aggregator that does.)
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool

from smcs_graph import SMCSChatModel


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers exactly."""
    return a * b


def scripted_aggregator(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """--fake: call multiply when tools are offered, then state the tool's result."""
    if not kwargs.get("tools"):
        return AIMessage("Roughly seven million.")
    if isinstance(messages[-1], ToolMessage):
        return AIMessage(f"1234 times 5678 is {messages[-1].content}.")
    return AIMessage(
        "", tool_calls=[{"name": "multiply", "args": {"a": 1234, "b": 5678}, "id": "call_1"}]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="default: What is 1234 times 5678?")
    parser.add_argument("--fake", action="store_true", help="scripted models, no model files")
    args = parser.parse_args()
    question = " ".join(args.question) or "What is 1234 times 5678?"

    if args.fake:
        from _fakes import fake_setup

        pool, bank, config = fake_setup(solver=scripted_aggregator)
    else:
        from _starter import local_pool, starter_bank

        pool, config = local_pool()
        bank = starter_bank(pool)
    model = SMCSChatModel(pool=pool, bank=bank, embedder=bank.embedder, config=config)
    agent = create_agent(
        model=model,
        tools=[multiply],
        system_prompt="Use the multiply tool for any multiplication, then state the result.",
    )
    result = agent.invoke({"messages": [("user", question)]})
    for message in result["messages"]:
        calls = getattr(message, "tool_calls", None)
        print(
            f"{type(message).__name__}: {message.content!r}"
            + (f" tool_calls={[(c['name'], c['args']) for c in calls]}" if calls else "")
        )


if __name__ == "__main__":
    main()

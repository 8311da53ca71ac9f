"""SMCSChatModel as the model of a LangChain agent with a tool.

    .venv/bin/python examples/agent.py ["question"]

The agent binds its tools to the SMCS chat model, which passes them to the aggregator; when the
chosen aggregation calls the tool, the agent runs it and asks SMCS again with the result.
"""

from __future__ import annotations

import sys

from _starter import local_pool, starter_bank
from langchain.agents import create_agent
from langchain_core.tools import tool

from smcs_graph import SMCSChatModel


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers exactly."""
    return a * b


def main(question: str) -> None:
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
            + (f" tool_calls={calls}" if calls else "")
        )


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "What is 1234 times 5678?")

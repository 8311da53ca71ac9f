"""An agent with tools whose every step is routed to one pool model by SMCS priors.

    .venv/bin/python examples/agent_routed.py ["question"]     # embedded local pool
    .venv/bin/python examples/agent_routed.py --fake           # scripted models

`SMCSRouterMiddleware(mode="route")` picks the pool model with the highest prior for the user's
message (from the question bank, no model call) and keeps it for the whole tool loop: one call
per step instead of a full ensemble. The agent state's `smcs_routing` says, per step, which
model answered and why. (The tiny local models seldom call tools; `--fake` scripts a solver
that does.)
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from smcs_graph.agents import SMCSRouterMiddleware


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers exactly."""
    return a * b


def scripted_solver(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """--fake: call multiply once, then state the tool's result."""
    if isinstance(messages[-1], ToolMessage):
        return AIMessage(f"1234 times 5678 is {messages[-1].content}.")
    if kwargs.get("tools") and isinstance(messages[-1], HumanMessage):
        call = {"name": "multiply", "args": {"a": 1234, "b": 5678}, "id": "call_1"}
        return AIMessage("", tool_calls=[call])
    return AIMessage("Roughly seven million.")


def print_run(result: dict[str, Any]) -> None:
    """Each message (with the model that wrote it), then the router's record per step."""
    for message in result["messages"]:
        calls = getattr(message, "tool_calls", None)
        by = message.response_metadata.get("smcs_model") if isinstance(message, AIMessage) else ""
        print(
            f"{type(message).__name__}{f' [{by}]' if by else ''}: {message.content!r}"
            + (f" tool_calls={[(c['name'], c['args']) for c in calls]}" if calls else "")
        )
    for step in result.get("smcs_routing", []):
        usage = step["usage"].get("total_tokens", 0)
        print(
            f"step {step['step']}: {step['decision']} -> {step['model']} ({step['reason']}); "
            f"priors {step['priors']}; {usage} tokens"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="default: What is 1234 times 5678?")
    parser.add_argument("--fake", action="store_true", help="scripted models, no model files")
    args = parser.parse_args()
    question = " ".join(args.question) or "What is 1234 times 5678?"

    if args.fake:
        from _fakes import fake_setup

        pool, bank, settings = fake_setup(solver=scripted_solver)
    else:
        from _starter import local_pool, starter_bank

        pool, settings = local_pool()
        bank = starter_bank(pool)
    router = SMCSRouterMiddleware(pool, bank, settings=settings, mode="route")
    agent = create_agent(
        model=pool[pool.names[0]].chat_model,  # required by create_agent; the router replaces it
        tools=[multiply],
        system_prompt="Use the multiply tool for any multiplication, then state the result.",
        middleware=[router],
    )
    print_run(agent.invoke({"messages": [("user", question)]}, {"recursion_limit": 12}))


if __name__ == "__main__":
    main()

"""An agent with its own model that consults the SMCS ensemble through tools.

    .venv/bin/python examples/consult_tool_agent.py ["question"]     # embedded local pool
    .venv/bin/python examples/consult_tool_agent.py --fake           # scripted models

Two tools from `smcs_graph.tools`: `rank_models` (prior selection alone: which pool models suit
the question, from the question bank, without calling any) and `consult_ensemble` (a full SMCS
run on a self-contained sub-question; the trace comes back as the tool message's artifact,
never shown to the agent's model). Here the agent's own model is the local Qwen2.5-Coder-0.5B
(or, with --fake, a script that ranks, consults, then answers).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from smcs_graph import SMCSChatModel
from smcs_graph.tools import make_consult_tool, make_rank_models_tool


def scripted_agent(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """--fake: rank the models, consult the ensemble, then answer with what it said."""
    results = [m for m in messages if isinstance(m, ToolMessage)]
    question = str(messages[-1].content) if not results else ""
    if not results:
        call = {"name": "rank_models", "args": {"question": question, "top": 1}, "id": "r1"}
        return AIMessage("", tool_calls=[call])
    if len(results) == 1:
        best = json.loads(str(results[0].content))["models"][0]["model"]
        asked = next(str(m.content) for m in messages if m.type == "human")
        call = {"name": "consult_ensemble", "args": {"question": asked}, "id": "c1"}
        return AIMessage(f"The bank favours {best}; consulting the ensemble.", tool_calls=[call])
    return AIMessage(f"The ensemble answered: {results[-1].content}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="default: What is 12 times 7?")
    parser.add_argument("--fake", action="store_true", help="scripted models, no model files")
    args = parser.parse_args()
    question = " ".join(args.question) or "What is 12 times 7? Reply with the number only."

    agent_model: BaseChatModel
    if args.fake:
        from _fakes import fake_setup

        from smcs_graph.testing import FakeChatModel

        pool, bank, config = fake_setup()
        agent_model = FakeChatModel(model_name="agent", respond=scripted_agent)
    else:
        from _starter import local_pool, starter_bank

        from smcs_graph.models.local import local_chat_model

        pool, config = local_pool()
        bank = starter_bank(pool)
        agent_model = local_chat_model("qwen2.5-coder-0.5b")
    ensemble = SMCSChatModel(pool=pool, bank=bank, embedder=bank.embedder, config=config)
    tools = [
        make_rank_models_tool(pool, bank, bank.embedder, config),
        make_consult_tool(ensemble, include_summary=True),
    ]
    agent = create_agent(
        model=agent_model,
        tools=tools,
        system_prompt="For hard questions, consult the ensemble, then give its answer.",
    )
    result = agent.invoke({"messages": [("user", question)]}, {"recursion_limit": 12})
    for message in result["messages"]:
        calls = getattr(message, "tool_calls", None)
        print(
            f"{type(message).__name__}: {message.content!r}"
            + (f" tool_calls={[(c['name'], c['args']) for c in calls]}" if calls else "")
        )
        if isinstance(message, ToolMessage) and message.name == "consult_ensemble":
            trace = message.artifact or {}
            print(f"  (trace: referencers {trace.get('referencers')}, cost {trace.get('cost')})")


if __name__ == "__main__":
    main()

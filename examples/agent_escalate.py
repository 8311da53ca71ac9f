"""An agent that routes each question to one model and escalates to the ensemble when unsure.

    .venv/bin/python examples/agent_escalate.py        # embedded local pool
    .venv/bin/python examples/agent_escalate.py --fake # scripted models

`SMCSRouterMiddleware(mode="escalate")` routes like `mode="route"` when the priors single out
one model, and runs the full SMCS ensemble when the prior gate says they do not: no bank
question near the user's has support, or the runner-up's prior is within `escalate_margin` of
the top's. Two user turns in one thread: an arithmetic question (the bank knows who is good at
it) and a haiku (the bank has nothing like it).
"""

from __future__ import annotations

import argparse

from langchain.agents import create_agent
from langgraph.checkpoint.memory import InMemorySaver

from smcs_graph.agents import SMCSRouterMiddleware

QUESTIONS = ("What is 17 times 3? Reply with the number only.", "Write a haiku about autumn.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake", action="store_true", help="scripted models, no model files")
    parser.add_argument("--margin", type=float, default=0.1, help="escalate_margin (0.1)")
    args = parser.parse_args()

    if args.fake:
        from _fakes import fake_setup

        pool, bank, settings = fake_setup()
    else:
        from _starter import local_pool, starter_bank

        pool, settings = local_pool()
        bank = starter_bank(pool)
    router = SMCSRouterMiddleware(
        pool, bank, settings=settings, mode="escalate", escalate_margin=args.margin
    )
    agent = create_agent(
        model=pool[pool.names[0]].chat_model,  # required by create_agent; the router replaces it
        middleware=[router],
        checkpointer=InMemorySaver(),
    )
    thread = {"configurable": {"thread_id": "escalate-demo"}}
    for question in QUESTIONS:
        result = agent.invoke({"messages": [("user", question)]}, thread)
        step = result["smcs_routing"][-1]
        gate = step["gate"]
        print(f"Q: {question}")
        print(
            f"  gate: {'uncertain' if gate['uncertain'] else 'sure'} ({gate['reason']}; "
            f"top share {gate['top_share']}, margin {gate['margin']})"
        )
        print(f"  {step['decision']} -> answered by {step['model']}; priors {step['priors']}")
        print(f"  tokens: {step['usage'].get('total_tokens', 0)}")
        print(f"A: {result['messages'][-1].content!r}")


if __name__ == "__main__":
    main()

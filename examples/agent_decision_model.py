"""LangChain's own `ModelRouterMiddleware`, with SMCS priors as its classifier.

    .venv/bin/python examples/agent_decision_model.py ["question"]     # embedded local pool
    .venv/bin/python examples/agent_decision_model.py --fake           # scripted models

`SMCSDecisionModel` is a `langchain_core` decision model: it answers the router's `Choice` from
the question bank (no model call, no training), each label's probability being its model's
prior normalised over the labels. `routes` maps the router's labels to the names the bank
records. The router stores the answer in the agent state as `model_route`.
"""

from __future__ import annotations

import argparse
import warnings

from langchain.agents import create_agent
from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware
from langchain_core._api import LangChainBetaWarning

from smcs_graph.agents import SMCSDecisionModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", help="default: What is the capital of Peru?")
    parser.add_argument("--fake", action="store_true", help="scripted models, no model files")
    args = parser.parse_args()
    question = " ".join(args.question) or "What is the capital of Peru?"

    if args.fake:
        from _fakes import fake_setup

        pool, bank, settings = fake_setup()
        routes = {"numbers": "solver", "places": "atlas"}
    else:
        from _starter import local_pool, starter_bank

        pool, settings = local_pool()
        bank = starter_bank(pool)
        routes = {"numbers": "qwen2.5-coder-0.5b", "places": "smollm2-135m"}
    criteria = {"numbers": "arithmetic and code", "places": "geography and general knowledge"}
    classifier = SMCSDecisionModel(bank=bank, settings=settings, routes=routes)
    warnings.filterwarnings("ignore", category=LangChainBetaWarning)  # the router is beta
    router = ModelRouterMiddleware(
        choices={
            label: ModelChoice(model=pool[name].chat_model, criteria=criteria[label])
            for label, name in routes.items()
        },
        instructions="Choose the model best suited to the question.",
        classifier=classifier,
    )
    agent = create_agent(model=pool[pool.names[0]].chat_model, middleware=[router])
    result = agent.invoke({"messages": [("user", question)]})
    route = result["model_route"]
    print(f"route: {route.choice} -> {routes[route.choice]} (confidence {route.confidence:.3f})")
    print(f"probabilities: { ({k: round(v, 3) for k, v in route.probabilities.items()}) }")
    print(f"answer: {result['messages'][-1].content!r}")


if __name__ == "__main__":
    main()

"""Router middleware vs. the ensemble in every step, for a 5-step agent tool loop.

On fake models with simulated latency (each call sleeps REF_S; an aggregation AGG_S), one agent
run makes 4 tool calls and then answers (5 model steps). Measured side by side in one run:

- `SMCSChatModel` as the agent's model: every step is a full SMCS run (K + n calls);
- `SMCSRouterMiddleware(mode="route")`: one call per step, to the top-prior model;
- `mode="escalate"` on a question whose priors single out a model (it routes) and on one whose
  top two priors tie (it runs the ensemble).

Prints model calls and wall time of each, and their ratios to the ensemble's.

    .venv/bin/python benchmarks/agent_routing.py [--k 7] [--n 8] [--steps 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank, SMCSChatModel, SMCSConfig
from smcs_graph.agents import SMCSRouterMiddleware
from smcs_graph.nodes.score import PerplexityUnavailableWarning
from smcs_graph.testing import FakeChatModel

REF_S = 0.05
AGG_S = 0.1
SURE = "What is 12 plus 30?"  # 'mathy' is the bank's math expert
UNSURE = "Who was the first emperor of Rome?"  # 'twin-a' and 'twin-b' tie on history


@tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


def _latency(messages: list[BaseMessage], kwargs: dict[str, Any]) -> float:
    # aggregation prompts carry the numbered candidates in their system message
    return AGG_S if "Candidate 1:" in str(messages[0].content) else REF_S


def _script(steps: int):
    """Tool calls until `steps - 1` results are in, then an answer; text when given no tools."""

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if not kwargs.get("tools"):
            return AIMessage("a reference answer")
        results = 0
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                break
            results += isinstance(message, ToolMessage)
        if results < steps - 1:
            return AIMessage(
                "", tool_calls=[{"name": "lookup", "args": {"topic": "t"}, "id": f"c{results}"}]
            )
        return AIMessage("the final answer")

    return respond


def build(k: int, steps: int) -> tuple[Pool, dict[str, FakeChatModel], QuestionBank]:
    embedder = HashingEmbedder(dimension=64)
    bank = QuestionBank.in_memory(embedder)
    math = [f"What is {i} plus {i + 3}?" for i in range(40)]
    history = [f"Who ruled Rome in the year {100 + i}?" for i in range(40)]
    questions = [BankQuestion(id=f"m{i}", question=q, family="math") for i, q in enumerate(math)]
    questions += [
        BankQuestion(id=f"h{i}", question=q, family="history") for i, q in enumerate(history)
    ]
    bank.add_questions(questions)
    names = ["mathy", "twin-a", "twin-b", *[f"weak-{j}" for j in range(max(k - 3, 0))]]
    for name in names:
        bank.record_results(
            name,
            {
                q.id: (q.family == "math")
                if name == "mathy"
                else (q.family == "history")
                if name.startswith("twin")
                else (int(q.id[1:]) % 5 == 0)
                for q in questions
            },
        )
    fakes = {
        n: FakeChatModel(model_name=n, respond=_script(steps), latency_s=_latency) for n in names
    }
    return Pool.from_chat_models(fakes), fakes, bank


def measure(agent: Any, question: str, fakes: dict[str, FakeChatModel]) -> tuple[int, float]:
    before = sum(len(f.calls) for f in fakes.values())
    start = time.perf_counter()
    result = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 50})
    seconds = time.perf_counter() - start
    assert result["messages"][-1].content == "the final answer"
    return sum(len(f.calls) for f in fakes.values()) - before, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=7, help="referencers and pool size (7)")
    parser.add_argument("--n", type=int, default=8, help="aggregations per SMCS run (8)")
    parser.add_argument("--steps", type=int, default=5, help="model steps of the loop (5)")
    args = parser.parse_args()
    # aggregations that are tool calls have no logprobs to score: expected here
    warnings.filterwarnings("ignore", category=PerplexityUnavailableWarning)
    pool, fakes, bank = build(args.k, args.steps)
    settings = SMCSConfig(k=args.k, n_aggregations=args.n, n_sup_base=20, seed=0)
    for fake in fakes.values():
        fake.call_log_size = 100_000

    def router(mode: str) -> Any:
        middleware = SMCSRouterMiddleware(pool, bank, settings=settings, mode=mode)  # type: ignore[arg-type]
        return create_agent(fakes["mathy"], tools=[lookup], middleware=[middleware])

    ensemble = SMCSChatModel(pool=pool, bank=bank, embedder=bank.embedder, config=settings)
    measure(create_agent(ensemble, tools=[lookup]), UNSURE, fakes)  # warm-up: compile, caches
    rows = {
        "SMCSChatModel every step": measure(create_agent(ensemble, tools=[lookup]), SURE, fakes),
        "route": measure(router("route"), SURE, fakes),
        "escalate (priors sure)": measure(router("escalate"), SURE, fakes),
        "escalate (priors tie)": measure(router("escalate"), UNSURE, fakes),
    }
    base_calls, base_s = rows["SMCSChatModel every step"]
    print(
        f"{args.steps}-step tool loop, pool of {len(pool.names)}, K={args.k}, n={args.n}; "
        f"latency {REF_S} s per call, {AGG_S} s per aggregation"
    )
    print(f"{'':26} {'calls':>6} {'wall s':>8} {'calls ratio':>12} {'time ratio':>11}")
    for label, (calls, seconds) in rows.items():
        ratios = f"{calls / base_calls:12.3f} {seconds / base_s:11.3f}"
        print(f"{label:26} {calls:6d} {seconds:8.2f} {ratios}")


if __name__ == "__main__":
    main()

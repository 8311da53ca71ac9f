"""Orchestration overhead of one SMCS run on fake models with simulated latency.

Each referencer sleeps REF_S and each aggregation AGG_S; the critical path of a run is
REF_S + AGG_S (slowest referencer + slowest aggregation). Prints, measured side by side in one
run: SMCS graph wall time (sync invoke and async ainvoke) and a naive sequential loop over the
same calls, each divided by the critical path.

    .venv/bin/python benchmarks/orchestration_overhead.py [--repeats 5] [--k 7] [--n 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank, SMCSConfig, build_graph
from smcs_graph.prompts import aggregation_messages
from smcs_graph.testing import FakeChatModel

REF_S = 0.2
AGG_S = 0.3


def _latency(messages: list[BaseMessage], kwargs: dict[str, Any]) -> float:
    # aggregation prompts carry the numbered candidates in their system message
    return AGG_S if "Candidate 1:" in str(messages[0].content) else REF_S


def build(k: int, n: int) -> tuple[Any, Pool, QuestionBank, HashingEmbedder]:
    embedder = HashingEmbedder(dimension=64)
    bank = QuestionBank.in_memory(embedder)
    questions = [
        BankQuestion(id=f"q{i}", question=f"question {i} about topic {i % 13}") for i in range(500)
    ]
    bank.add_questions(questions)
    names = [f"model-{j}" for j in range(k)]
    for j, name in enumerate(names):
        bank.record_results(name, {q.id: (i + j) % 3 == 0 for i, q in enumerate(questions)})
    pool = Pool.from_chat_models(
        {
            name: FakeChatModel(responses=[f"answer from {name}: 42"], latency_s=_latency)
            for name in names
        }
    )
    config = SMCSConfig(k=k, n_aggregations=n, seed=0)
    return build_graph(pool, bank, embedder, config).compile(), pool, bank, embedder


def sequential(pool: Pool, k: int, n: int, question: str) -> None:
    """The naive loop: every referencer, then every aggregation, one after another."""
    convo = [HumanMessage(question)]
    members = list(pool)[:k]
    refs = [str(m.chat_model.invoke(convo).content) for m in members]
    for j in range(n):
        members[0].chat_model.invoke(aggregation_messages(convo, refs[: k - 1 if j else k]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    graph, pool, _, _ = build(args.k, args.n)
    question = {"question": "question 3 about topic 3"}
    critical = REF_S + AGG_S
    graph.invoke(question, {"max_concurrency": 64})  # warm-up: imports, first embeddings

    sync_t, async_t, seq_t = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        graph.invoke(question, {"max_concurrency": 64})
        sync_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        asyncio.run(graph.ainvoke(question))
        async_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        sequential(pool, args.k, args.n, question["question"])
        seq_t.append(time.perf_counter() - t)

    print(
        f"K={args.k} n={args.n} referencer={REF_S}s aggregation={AGG_S}s "
        f"critical path={critical:.3f}s repeats={args.repeats} (median wall time)"
    )
    for label, times in (
        ("graph.invoke", sync_t),
        ("graph.ainvoke", async_t),
        ("sequential loop", seq_t),
    ):
        med = statistics.median(times)
        print(f"  {label:16s} {med:7.3f}s  ratio to critical path {med / critical:6.3f}")
    print(
        f"  speed-up of graph.invoke over the sequential loop: "
        f"{statistics.median(seq_t) / statistics.median(sync_t):.2f}x"
    )


if __name__ == "__main__":
    main()

"""Overhead of the adaptive gates: wall time per question with the gates vs without.

The same scripted models with simulated latency (each referencer sleeps REF_S, each aggregation
AGG_S) answer the same questions twice per repeat, interleaved: `collaboration="always"` (no
gate) and `collaboration="adaptive"` with `prior_gate_threshold=1.0` and the agreement gate on
(references that never agree), so every question escalates and the same K + n calls run; what
differs is the gates' own work (the P(correct) estimate, the agreement check's embeddings).
Prints the median wall time per question of each and their ratio; no assertions.

    .venv/bin/python benchmarks/gate_overhead.py [--repeats 5] [--questions 5] [--k 3] [--n 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from langchain_core.messages import BaseMessage

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank, SMCSConfig, build_graph
from smcs_graph.testing import FakeChatModel

REF_S = 0.2
AGG_S = 0.3


def _latency(messages: list[BaseMessage], kwargs: dict[str, Any]) -> float:
    # aggregation prompts carry the numbered candidates in their system message
    return AGG_S if "Candidate 1:" in str(messages[0].content) else REF_S


def build(k: int, n: int, settings: SMCSConfig) -> Any:
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
            # Different texts: the agreement gate never stops a run.
            name: FakeChatModel(responses=[f"{name} says {j} about it"], latency_s=_latency)
            for j, name in enumerate(names)
        }
    )
    return build_graph(pool, bank, embedder, settings.replace(k=k, n_aggregations=n)).compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n", type=int, default=2)
    args = parser.parse_args()
    base = SMCSConfig(seed=0, n_sup_base=40)
    graphs = {
        "always (no gate)": build(args.k, args.n, base),
        "adaptive (gates, all escalate)": build(
            args.k,
            args.n,
            base.replace(collaboration="adaptive", prior_gate_threshold=1.0, agreement_gate=True),
        ),
    }
    questions = [f"question {i} about topic {i % 13}" for i in range(args.questions)]
    run = {"max_concurrency": 64}
    for graph in graphs.values():  # warm-up: imports, first embeddings, the learned fits
        graph.invoke({"question": questions[0]}, run)
    times: dict[str, list[float]] = {label: [] for label in graphs}
    calls: dict[str, int] = {}
    for _ in range(args.repeats):
        for question in questions:
            for label, graph in graphs.items():  # interleaved: load changes hit both alike
                t = time.perf_counter()
                out = graph.invoke({"question": question}, run)
                times[label].append(time.perf_counter() - t)
                calls[label] = len(out["trace"]["calls"])
    critical = REF_S + AGG_S
    print(
        f"K={args.k} n={args.n} referencer={REF_S}s aggregation={AGG_S}s critical path="
        f"{critical:.3f}s questions={args.questions} repeats={args.repeats} (median per question)"
    )
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, med in medians.items():
        print(
            f"  {label:32s} {med:7.3f}s  {calls[label]} calls  ratio to critical path "
            f"{med / critical:6.3f}"
        )
    always, adaptive = medians.values()
    print(f"  wall time with the gates / without: {adaptive / always:.3f}")


if __name__ == "__main__":
    main()

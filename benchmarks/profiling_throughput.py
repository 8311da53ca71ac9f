"""Profiling throughput on fake models with simulated latency, at several concurrency levels.

Each of MODELS fake models answers every question of an in-memory bank after sleeping
LATENCY_S; answers are graded by the real multiple-choice grader and written to the bank in
batches, with a response cache on disk. The ideal rate at concurrency c is
MODELS * c / LATENCY_S answers per second. Prints, measured side by side in one run: answers
per second at each concurrency and its ratio to the ideal. The run's seconds include its
setup (bank scan, cache open) and teardown (last bank write), as a user waits for them.

    .venv/bin/python benchmarks/profiling_throughput.py [--questions 160] [--latency 0.1]
        [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank
from smcs_graph.offline.profiling import profile_pool
from smcs_graph.questions import QuestionRecord
from smcs_graph.testing import FakeChatModel

MODELS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=160)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per simulated call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    records = [
        QuestionRecord(
            id=f"bench/{i}",
            family="multiple_choice",
            question=f"Benchmark question {i}: pick an option.",
            choices=("one", "two", "three", "four"),
            answer="ABCD"[i % 4],
        )
        for i in range(args.questions)
    ]
    print(f"{MODELS} models x {args.questions} questions, {args.latency * 1000:.0f} ms per call")
    print(f"{'concurrency':>11} {'answers/s':>10} {'ideal':>8} {'ratio':>6}")
    for concurrency in args.concurrency:
        bank = QuestionBank.in_memory(HashingEmbedder(64))
        bank.add_questions([BankQuestion.from_record(r) for r in records])
        pool = Pool.from_chat_models(
            {
                f"model-{m}": FakeChatModel(responses=["The answer is (A)"], latency_s=args.latency)
                for m in range(MODELS)
            }
        )
        with tempfile.TemporaryDirectory() as folder:
            report = profile_pool(
                bank,
                pool,
                cache=Path(folder) / "responses.sqlite",
                concurrency=concurrency,
                progress=False,
            )
        rate = report.answers / report.seconds
        ideal = MODELS * concurrency / args.latency
        print(f"{concurrency:>11} {rate:>10.1f} {ideal:>8.1f} {rate / ideal:>6.2f}")


if __name__ == "__main__":
    main()

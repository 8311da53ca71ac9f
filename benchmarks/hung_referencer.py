"""What one hung referencer costs a run: wall time with it over the same run without it.

Fake OpenAI-compatible models over HTTP on 127.0.0.1 (`tests/unit/_fake_endpoints.py`): K
referencers and n aggregations that each answer after LATENCY_S; in the hung run one referencer
never answers and is cancelled at `referencer_timeout_s`. The run waits for every referencer,
so the hung one adds at most (timeout - LATENCY_S): the target ratio is
1 + (timeout - LATENCY_S) / healthy, plus scheduling noise. (Before deadlines covered retries,
the hung call took three times its timeout; before cancellation, its thread outlived the run.)
With the circuit breaker on (the default), the next run passes over the hung model and costs
no more than a healthy run with one referencer less.

    .venv/bin/python benchmarks/hung_referencer.py [--timeout 2] [--repeats 3] [--k 3] [--n 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from smcs_graph import (  # noqa: E402
    BankQuestion,
    HashingEmbedder,
    Pool,
    QuestionBank,
    SMCSConfig,
    build_graph,
)
from tests.unit._fake_endpoints import FakeEndpoints  # noqa: E402

LATENCY_S = 0.5
NOISE_S = 0.25
"""Scheduling noise allowed on top of the target: thread and event-loop hand-offs, HTTP."""


def _bank(embedder: HashingEmbedder) -> QuestionBank:
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions([BankQuestion(id=f"q{i}", question=f"question {i}") for i in range(50)])
    return bank


def _timed(pool: Pool, settings: SMCSConfig, bank: QuestionBank, embedder: Any) -> float:
    graph = build_graph(pool, bank, embedder, settings).compile()
    started = time.perf_counter()
    out = graph.invoke({"question": "What is 2 plus 2?"}, {"max_concurrency": 64})
    elapsed = time.perf_counter() - started
    assert out["answer"], "the run gave no answer"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=2.0, help="referencer_timeout_s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n", type=int, default=2)
    args = parser.parse_args()
    embedder = HashingEmbedder(dimension=64)
    bank = _bank(embedder)
    behaviour = f"slow{LATENCY_S}"
    settings = SMCSConfig(
        k=args.k,
        n_aggregations=args.n,
        n_sup_base=8,
        seed=0,
        referencer_timeout_s=args.timeout,
        breaker_cooldown_s=0,  # measure the deadline itself, not the breaker
    )
    with FakeEndpoints() as endpoints:
        names = [f"m{i}" for i in range(args.k)]

        def pool(hung: bool) -> Pool:
            entries = [endpoints.entry(name, behaviour) for name in names]
            if hung:
                entries[-1] = endpoints.entry(names[-1], "hang")
            return Pool.from_config({"models": entries})

        healthy = statistics.median(
            _timed(pool(False), settings, bank, embedder) for _ in range(args.repeats)
        )
        hung = statistics.median(
            _timed(pool(True), settings, bank, embedder) for _ in range(args.repeats)
        )
        breaker_pool = pool(True)
        breaker = settings.replace(breaker_cooldown_s=60.0)
        _timed(breaker_pool, breaker, bank, embedder)  # the hung model fails once ...
        passed_over = _timed(breaker_pool, breaker, bank, embedder)  # ... and is passed over

    target = 1 + (args.timeout - LATENCY_S) / healthy
    ratio = hung / healthy
    print(
        f"K={args.k} n={args.n} latency={LATENCY_S}s referencer_timeout_s={args.timeout}s "
        f"repeats={args.repeats} (median wall time)"
    )
    print(f"  healthy run                     {healthy:6.3f}s")
    print(f"  one hung referencer             {hung:6.3f}s  ratio {ratio:.2f}")
    print(f"  target ratio 1 + (timeout - latency) / healthy = {target:.2f} (+ noise)")
    print(f"  next run, breaker on            {passed_over:6.3f}s  (hung model passed over)")
    verdict = "within" if hung <= healthy + args.timeout - LATENCY_S + NOISE_S else "OVER"
    print(f"  {verdict} target (noise allowance {NOISE_S}s)")


if __name__ == "__main__":
    main()

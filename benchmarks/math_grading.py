"""Per-call cost of math grading in a worker process, and how fast a hanging answer is stopped.

Prints, measured side by side in one run: the time per check of math-verify called in this
process (the way grading worked before it moved to workers) and through the grader's worker
process, their ratio, the worker's start-up time (paid once per worker), and the time to grade
``\\boxed{(10^{8})!}`` (which computes for good) against the grader's limit.

    .venv/bin/python benchmarks/math_grading.py [--repeats 5] [--limit 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from smcs_graph.grading import math_answer
from smcs_graph.questions import QuestionRecord

# (gold, answer): equivalent and not, the kinds of answers MATH-500 gets.
PAIRS = [
    ("\\frac{3}{4}", "0.75"),
    ("\\frac{3}{4}", "\\dfrac{3}{4}"),
    ("\\frac{3}{4}", "\\frac{2}{3}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("x^2 + 2x + 1", "(x+1)^2"),
    ("[-2, 5)", "[-2,5)"),
    ("10", "10.0"),
    ("\\text{(C)}", "C"),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),
    ("\\frac{\\sqrt{5}}{5}", "\\frac{1}{\\sqrt{5}}"),
    ("1.5\\pi", "\\frac{3\\pi}{2}"),
]


def in_process(gold: str, answer: str) -> bool:
    from math_verify import parse, verify

    timeout = math_answer.PARSE_TIMEOUT_S
    left = parse("\\boxed{" + gold + "}", parsing_timeout=timeout)
    right = parse("\\boxed{" + answer + "}", parsing_timeout=timeout)
    return bool(left and right and verify(left, right, timeout_seconds=timeout))


def per_call_ms(check: Callable[[str, str], bool], repeats: int) -> tuple[float, list[bool]]:
    times, verdicts = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        verdicts = [check(gold, answer) for gold, answer in PAIRS]
        times.append((time.perf_counter() - started) / len(PAIRS) * 1000)
    return statistics.median(times), verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=float, default=5.0, help="the hard limit, seconds")
    args = parser.parse_args()

    in_process(*PAIRS[0])  # import math-verify here, off the clock
    started = time.perf_counter()
    math_answer.math_equivalent(*PAIRS[0])  # starts the first worker
    startup_s = time.perf_counter() - started

    local_ms, local_verdicts = per_call_ms(in_process, args.repeats)
    worker_ms, worker_verdicts = per_call_ms(math_answer.math_equivalent, args.repeats)
    assert local_verdicts == worker_verdicts, (local_verdicts, worker_verdicts)

    grader = math_answer.make_math_grader(timeout_s=args.limit)
    record = QuestionRecord(id="m", family="math", question="q", answer="3")
    started = time.perf_counter()
    verdict = grader(record, "\\boxed{(10^{8})!}")
    hang_s = time.perf_counter() - started

    print(f"checks per pass: {len(PAIRS)}, passes: {args.repeats} (median pass reported)")
    print(f"{'':30}{'in process':>12}{'worker':>12}{'ratio':>8}")
    print(f"{'ms per check':30}{local_ms:12.2f}{worker_ms:12.2f}{worker_ms / local_ms:8.2f}")
    print(f"worker start-up (once per worker): {startup_s:.2f} s")
    print(
        f"(10^8)! graded {'wrong' if not verdict.correct else 'RIGHT'} in {hang_s:.2f} s "
        f"against a {args.limit:g} s limit ({verdict.detail}); workers killed: "
        f"{math_answer.killed_workers()}"
    )


if __name__ == "__main__":
    main()

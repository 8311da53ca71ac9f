"""The math checking worker: math-verify on the main thread of a process the grader can kill.

`math_answer` runs it as ``python -P _math_worker.py`` (standard library and math-verify only).
Its first line on stdout says it is ready, or why it cannot start; then, per line on stdin, a
request ``{"gold", "answer", "timeout_s"}`` gets one line back: ``{"gold", "predicted",
"correct"}`` (whether each side parsed, and whether they are equivalent) or ``{"error"}``.
math-verify's own time limits work here (they need the main thread); the grader's hard limit
covers what they cannot stop (a long computation inside C code).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

RETRY_FACTOR = 6
"""A side that does not parse in time is parsed once more with this many times the limit:
math-verify's limits are wall-clock alarms, which a busy machine can trip on "46"."""


def _parsed(parse: Any, text: str, timeout: int) -> Any:
    boxed = "\\boxed{" + text + "}"
    return parse(boxed, parsing_timeout=timeout) or parse(
        boxed, parsing_timeout=timeout * RETRY_FACTOR
    )


def _check(parse: Any, verify: Any, request: dict[str, Any]) -> dict[str, Any]:
    timeout = request["timeout_s"]
    gold = _parsed(parse, request["gold"], timeout)
    predicted = _parsed(parse, request["answer"], timeout)
    correct = bool(gold and predicted and verify(gold, predicted, timeout_seconds=timeout))
    return {"gold": bool(gold), "predicted": bool(predicted), "correct": correct}


def main() -> None:
    # Replies go on a private copy of stdout; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    parent = os.getppid()
    libc = ctypes.CDLL(None)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: dies with the grader
    if os.getppid() != parent:
        return
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        replies.write(json.dumps({"error": f"math-verify is not installed: {exc}"}) + "\n")
        return
    # The first parse imports the LaTeX parser: do it now, under the start-up limit, not
    # under the first request's parsing limit.
    _check(parse, verify, {"gold": "1", "answer": "1", "timeout_s": 60})
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in sys.stdin:
        try:
            reply = _check(parse, verify, json.loads(line))
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    main()

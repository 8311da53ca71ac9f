"""Math: the final boxed (or stated) answer, checked for equivalence with math-verify.

math-verify runs in worker processes (`_math_worker`), never in the grading thread: its own
time limits need a main thread, and some answers (``\\boxed{(10^{8})!}``) compute for good
inside C code that no limit interrupts. Each check has a hard wall-clock limit; a worker past
it is killed and replaced, and the answer is graded wrong. Workers are started on first use,
reused (at most `MAX_WORKERS` at once; threads beyond wait for one) and end with the process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from smcs_graph.grading import Grader, Verdict
from smcs_graph.questions import QuestionRecord

__all__ = [
    "MAX_WORKERS",
    "PARSE_TIMEOUT_S",
    "TIMEOUT_S",
    "extract_final_answer",
    "grade_math",
    "killed_workers",
    "last_boxed",
    "make_math_grader",
    "math_equivalent",
]

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_STATED = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
PARSE_TIMEOUT_S = 5
"""math-verify's own time limits, per parse and per comparison (in the worker's main thread)."""
TIMEOUT_S = 20.0
"""The hard wall-clock limit of one check (two parses and a comparison) in the worker."""
MAX_WORKERS = max(1, min(8, os.cpu_count() or 1))
"""Worker processes at most (checking is CPU-bound: more than the cores would not help)."""
_START_TIMEOUT_S = 120.0  # importing math-verify (sympy) on a busy machine
_WORKER_SCRIPT = Path(__file__).with_name("_math_worker.py")
_DIED = "the math checking worker died"


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), or None."""
    start = max(text.rfind(opener) for opener in _BOX_OPENERS)
    if start < 0:
        return None
    position = text.index("{", start) + 1
    depth = 1
    for index in range(position, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[position:index].strip()
    return None


def extract_final_answer(response: str) -> str | None:
    """The last boxed answer, else the last 'final answer is ...' / 'The answer is ...' line."""
    boxed = last_boxed(response)
    if boxed:
        return boxed
    stated = _STATED.findall(response)
    if not stated:
        return None
    answer = stated[-1].strip().rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    return answer or None


class _Worker:
    """One worker process and the half-read line of its replies."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-P", str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C goes to the grader, which decides
        )
        self._pending = b""
        ready = self._receive(_START_TIMEOUT_S)
        if ready is None or "error" in ready:
            self.kill()
            why = "did not start in time" if ready is None else ready["error"]
            raise RuntimeError(f"the math checking worker cannot start: {why}")

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """The reply, or None when the worker did not answer within `timeout_s`."""
        stdin: IO[bytes] | None = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(request).encode() + b"\n")
            stdin.flush()
        except OSError:
            return {"error": _DIED}
        return self._receive(timeout_s)

    def _receive(self, timeout_s: float) -> dict[str, Any] | None:
        stdout = self._process.stdout
        assert stdout is not None
        fd = stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return {"error": _DIED}
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def alive(self) -> bool:
        return self._process.poll() is None

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead worker's pipe: nothing to flush
                    stream.close()


class _Workers:
    """Idle workers, handed out one per check, at most `MAX_WORKERS` alive."""

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_WORKERS)
        self.killed = 0

    def check(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        """The worker's reply, or None when it ran past `timeout_s` (then it was killed)."""
        with self._slots:
            idle = self._idle_worker()
            worker = idle if idle is not None else _Worker()
            try:
                reply = worker.ask(request, timeout_s)
                if idle is not None and reply is not None and reply.get("error") == _DIED:
                    # An idle worker can die with the thread that started it (its parent-death
                    # signal follows that thread): ask a fresh one instead.
                    worker.kill()
                    worker = _Worker()
                    reply = worker.ask(request, timeout_s)
            except BaseException:
                worker.kill()  # e.g. KeyboardInterrupt while waiting: its state is unknown
                raise
            if reply is None or reply.get("error") == _DIED:
                worker.kill()
                with self._lock:
                    self.killed += reply is None
                return reply
            with self._lock:
                self._idle.append(worker)
            return reply

    def _idle_worker(self) -> _Worker | None:
        """A live idle worker (dead ones are discarded), or None."""
        while True:
            with self._lock:
                worker = self._idle.pop() if self._idle else None
            if worker is None or worker.alive():
                return worker
            worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_workers = _Workers()
atexit.register(_workers.close)


def killed_workers() -> int:
    """How many workers this process killed at their time limit (each was replaced)."""
    return _workers.killed


def _check(gold: str, answer: str, timeout_s: float) -> dict[str, Any] | None:
    request = {
        "gold": gold,
        "answer": answer,
        "timeout_s": max(1, int(min(PARSE_TIMEOUT_S, timeout_s))),
    }
    reply = _workers.check(request, timeout_s)
    error = None if reply is None else reply.get("error")
    if error is not None and error != _DIED:  # math-verify raised: a bug, not the answer's fault
        raise RuntimeError(f"math-verify failed on {answer!r} against {gold!r}: {error}")
    return reply


def math_equivalent(a: str, b: str, *, timeout_s: float = TIMEOUT_S) -> bool:
    """Whether two answers (without \\boxed{}) are equivalent; False when either does not
    parse or the check runs past `timeout_s`."""
    reply = _check(a, b, timeout_s)
    return bool(reply and reply.get("correct"))


def make_math_grader(*, timeout_s: float = TIMEOUT_S) -> Grader:
    """A math grader whose checks stop at `timeout_s` (the default grader: `TIMEOUT_S`)."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive (got {timeout_s})")

    def grade_math(record: QuestionRecord, response: str) -> Verdict:
        """Correct when the extracted answer is mathematically equivalent to the gold one."""
        if record.answer is None:
            raise ValueError(f"math question {record.id!r} has no gold answer")
        extracted = extract_final_answer(response)
        if extracted is None:
            return Verdict(
                correct=False, detail="no final answer found (no \\boxed{} or stated answer)"
            )
        reply = _check(record.answer, extracted, timeout_s)
        if reply is None:
            return Verdict(
                correct=False,
                extracted=extracted,
                detail=f"math checking timed out after {timeout_s:g}s",
            )
        if "error" in reply:  # killed from outside, or out of memory
            return Verdict(
                correct=False, extracted=extracted, detail=f"math checking failed: {_DIED}"
            )
        if not reply["gold"]:
            raise ValueError(
                f"math question {record.id!r}: math-verify cannot parse the gold answer "
                f"{record.answer!r}"
            )
        if not reply["predicted"]:
            return Verdict(correct=False, extracted=extracted, detail="the answer does not parse")
        correct = bool(reply["correct"])
        return Verdict(
            correct=correct,
            extracted=extracted,
            detail="" if correct else f"not equivalent to the gold answer {record.answer}",
        )

    return grade_math


grade_math = make_math_grader()

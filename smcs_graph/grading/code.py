"""Code: run the program against the question's tests in the sandbox.

A response is correct only when the trusted harness around it reports, through the sandbox's
verdict channel, that every test ran: the program's exit status alone is never trusted.
"""

from __future__ import annotations

import re

from smcs_graph.grading import Grader, Verdict
from smcs_graph.grading.sandbox import run_python
from smcs_graph.questions import QuestionRecord

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

# The solution and the tests run in one namespace that is not __main__, so a solution's own
# `if __name__ == "__main__":` demo (often reading stdin) does not run. The verdict is the
# sandbox's one-time token (fd 3), read before the solution runs and written back (fd 4) only
# after every test ran: an exit of any kind before that, even with status 0, is a failure.
_HARNESS = """\
def _smcs_harness():
    import os

    token = os.read(3, 256)
    os.close(3)
    namespace = {{"__name__": "solution"}}
    exec(compile({solution!r}, "solution.py", "exec"), namespace)
    exec(compile({tests!r}, "tests.py", "exec"), namespace)
    {call}
    os.write(4, token)


_smcs_harness()
"""


def extract_code(response: str, entry_point: str | None = None) -> str:
    """The program in a response: the fenced Python block that defines the entry point (or
    the longest one that defines a function), else the whole response."""
    blocks = [
        body
        for language, body in _FENCE.findall(response)
        if language.lower() in ("", "python", "py", "python3")
    ]
    if not blocks:
        return response
    if entry_point:
        defining = [b for b in blocks if re.search(rf"def\s+{re.escape(entry_point)}\s*\(", b)]
        if defining:
            return defining[0]
    with_functions = [block for block in blocks if "def " in block] or blocks
    return max(with_functions, key=len)


def program_for(record: QuestionRecord, code: str) -> str:
    """The full program to run: solution (with the HumanEval prompt where needed) + tests, in
    a harness that reports through the sandbox's verdict channel (`run_python(attest=True)`)."""
    solution = code
    call = ""
    if record.entry_point:
        # HumanEval: a completion of the prompt's body, or a full function. The prompt goes
        # first either way: it brings imports and helper functions; a full function redefines
        # the prompt's stub.
        defines = re.search(rf"def\s+{re.escape(record.entry_point)}\s*\(", code)
        separator = "\n" if defines else ""
        solution = record.question + separator + code
        call = f"namespace['check'](namespace[{record.entry_point!r}])"
    return _HARNESS.format(solution=solution, tests=record.tests or "", call=call)


def _failure(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "exited with an error"


def make_code_grader(*, timeout_s: float = 10, memory_mb: int = 512) -> Grader:
    """A code grader with these sandbox limits (the default grader uses 10 s and 512 MB)."""

    def grade_code(record: QuestionRecord, response: str) -> Verdict:
        if not record.tests:
            raise ValueError(f"code question {record.id!r} has no tests to run")
        code = extract_code(response, record.entry_point)
        if not code.strip():
            return Verdict(correct=False, extracted=code, detail="no code found")
        result = run_python(
            program_for(record, code), timeout_s=timeout_s, memory_mb=memory_mb, attest=True
        )
        if result.passed and result.attested:
            return Verdict(correct=True, extracted=code, detail="all tests passed")
        if result.timed_out:
            detail = f"timeout after {timeout_s:g}s"
        elif result.killed_by is not None:
            detail = f"stopped by the {result.killed_by} limit: {_failure(result.stderr)}"
        elif result.returncode == 0:
            detail = "the program exited before the tests finished"
        else:
            detail = _failure(result.stderr)
        return Verdict(correct=False, extracted=code, detail=detail)

    return grade_code


grade_code = make_code_grader()

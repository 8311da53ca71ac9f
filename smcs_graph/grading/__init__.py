"""Graders: is a model's response to a question right? One per family, plus user callables.

`grade(record, response)` dispatches on `record.family` through a registry. The built-in
graders load on first use (math-verify, the IFEval checkers and the sandbox are heavy);
`register_grader` adds or replaces one with any `(record, response) -> Verdict` callable.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

from smcs_graph.questions import QuestionRecord

__all__ = ["Grader", "Verdict", "get_grader", "grade", "known_families", "register_grader"]


@dataclass(frozen=True)
class Verdict:
    """A grader's decision on one response."""

    correct: bool
    extracted: str | None = None
    """What was taken from the response (letter, answer, code), for the record."""
    detail: str = ""
    """Why (e.g. 'no answer letter found', 'AssertionError', 'timeout after 10s')."""


Grader = Callable[[QuestionRecord, str], Verdict]

# family -> "module:function" of a built-in grader, imported on first use.
_BUILT_IN = {
    "multiple_choice": "smcs_graph.grading.multiple_choice:grade_multiple_choice",
    "math": "smcs_graph.grading.math_answer:grade_math",
    "numeric": "smcs_graph.grading.numeric:grade_numeric",
    "code": "smcs_graph.grading.code:grade_code",
    "instruction": "smcs_graph.grading.instruction:grade_instruction",
    "reasoning_gym": "smcs_graph.grading.reasoning_gym:grade_reasoning_gym",
}
_registry: dict[str, Grader] = {}
_lock = threading.Lock()


def register_grader(family: str, grader: Grader) -> None:
    """Grade `family` with `grader` from now on (adds a family or replaces a built-in)."""
    if not isinstance(family, str) or not family.strip():
        raise ValueError("a grader's family must be a non-empty string")
    if not callable(grader):
        raise TypeError(
            f"the grader for {family!r} must be a callable (record, response) -> Verdict "
            f"(got {type(grader).__name__})"
        )
    with _lock:
        _registry[family] = grader


def known_families() -> list[str]:
    """Every family with a grader: the built-ins and those registered."""
    return sorted(set(_BUILT_IN) | set(_registry))


def get_grader(family: str) -> Grader:
    """The grader for `family`; a clear error naming the known families if there is none."""
    with _lock:
        grader = _registry.get(family)
        if grader is None and family in _BUILT_IN:
            module_name, function = _BUILT_IN[family].split(":")
            grader = getattr(importlib.import_module(module_name), function)
            _registry[family] = grader
    if grader is None:
        raise KeyError(
            f"no grader for question family {family!r}; known families: "
            f"{', '.join(known_families())}. Register one with "
            "smcs_graph.grading.register_grader(family, callable)."
        )
    return grader


def grade(record: QuestionRecord, response: str) -> Verdict:
    """Grade `response` to `record` with its family's grader."""
    verdict = get_grader(record.family)(record, response)
    if not isinstance(verdict, Verdict):
        raise TypeError(
            f"the grader for family {record.family!r} returned {type(verdict).__name__}, "
            "not a Verdict"
        )
    return verdict

"""Numeric final answers (GSM8K): the stated final number, compared as a number."""

from __future__ import annotations

import math
import re
from fractions import Fraction

from smcs_graph.grading import Verdict
from smcs_graph.questions import QuestionRecord

_NUMBER = r"-?(?:\$\s*)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|-?\$?\.\d+"
# Where a response states its final number, strongest first; the last occurrence wins.
_STATED = (
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"answer\s*(?:is|:|=)\s*[:*\s]*(?:[^\d\-$.\n]{0,20}?)(" + _NUMBER + ")", re.I),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
)
_ANY = re.compile(_NUMBER)
RELATIVE_TOLERANCE = 1e-6


def parse_number(text: str) -> float | None:
    """A number from text such as '$1,234.50', '-3', '3/4', '12 %'; None if there is none."""
    cleaned = re.sub(r"[\s$,%]", "", text)
    try:
        return float(Fraction(cleaned))
    except (ValueError, ZeroDivisionError):
        return None


def extract_final_number(response: str) -> str | None:
    """The stated final number ('The answer is', '####', boxed), else the last number."""
    for pattern in _STATED:
        matches = pattern.findall(response)
        if matches:
            return str(matches[-1])
    matches = _ANY.findall(response)
    return str(matches[-1]) if matches else None


def grade_numeric(record: QuestionRecord, response: str) -> Verdict:
    """Correct when the final number equals the gold number (relative tolerance 1e-6)."""
    gold = parse_number(record.answer or "")
    if gold is None:
        raise ValueError(
            f"numeric question {record.id!r} has no numeric gold answer (got {record.answer!r})"
        )
    extracted = extract_final_number(response)
    value = parse_number(extracted) if extracted is not None else None
    if extracted is None or value is None:
        return Verdict(correct=False, extracted=extracted, detail="no final number found")
    correct = math.isclose(value, gold, rel_tol=RELATIVE_TOLERANCE, abs_tol=RELATIVE_TOLERANCE)
    detail = "" if correct else f"got {value:g}, gold is {gold:g}"
    return Verdict(correct=correct, extracted=extracted.strip(), detail=detail)

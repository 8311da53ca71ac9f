"""Math: the final boxed (or stated) answer, checked for equivalence with math-verify."""

from __future__ import annotations

import re
import threading

from smcs_graph.graders import Verdict
from smcs_graph.questions import QuestionRecord

_BOX_OPENERS = ("\\boxed{", "\\fbox{")
_STATED = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
PARSE_TIMEOUT_S = 5
"""math-verify's own time limits (they use SIGALRM, so only in the main thread)."""


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


def grade_math(record: QuestionRecord, response: str) -> Verdict:
    """Correct when the extracted answer is mathematically equivalent to the gold answer."""
    from math_verify import parse, verify

    if record.answer is None:
        raise ValueError(f"math question {record.id!r} has no gold answer")
    extracted = extract_final_answer(response)
    if extracted is None:
        return Verdict(
            correct=False, detail="no final answer found (no \\boxed{} or stated answer)"
        )
    in_main_thread = threading.current_thread() is threading.main_thread()
    timeout = PARSE_TIMEOUT_S if in_main_thread else None
    gold = parse("\\boxed{" + record.answer + "}", parsing_timeout=timeout)
    predicted = parse("\\boxed{" + extracted + "}", parsing_timeout=timeout)
    if not gold:
        raise ValueError(
            f"math question {record.id!r}: math-verify cannot parse the gold answer "
            f"{record.answer!r}"
        )
    if not predicted:
        return Verdict(correct=False, extracted=extracted, detail="the answer does not parse")
    correct = bool(verify(gold, predicted, timeout_seconds=timeout))
    return Verdict(
        correct=correct,
        extracted=extracted,
        detail="" if correct else f"not equivalent to the gold answer {record.answer}",
    )

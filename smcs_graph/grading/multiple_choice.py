"""Multiple choice: find the letter the response commits to; never guess one."""

from __future__ import annotations

import re

from smcs_graph.grading import Verdict
from smcs_graph.questions import LETTERS, QuestionRecord

# "The answer is (C)", "answer: C", "Final answer: **C**", "the correct option is [c]" ...
# A bare "option"/"choice" is not a commitment: "let's look at each option: (A) ..." lists them.
_STATED = re.compile(
    r"(?:\b(?i:answer)|\b(?i:correct|right|best|final)\s+(?i:option|choice))\b"
    r"\s*(?i:is|would\s+be|should\s+be|=|:)?\s*:?\s*"
    r"(?i:option\s+|choice\s+)?[*_]*\s*"
    r"(?:\(\s*([A-Za-z])\s*\)|\[\s*([A-Za-z])\s*\]|([A-Z])(?![\w'’-]))"
)
# \boxed{C}, \boxed{(C)}, \boxed{\text{C}}
_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Za-z])\)?\s*\}?\s*\}")
# A last line holding nothing but the letter: "C", "(C)", "**C.**"
_BARE_LINE = re.compile(r"^[\s*_>#:.-]*\(?([A-Z])\)?[\s*_.:!]*$")
_WORD_AFTER = re.compile(r"\s+[a-z]")


def extract_letter(response: str, valid: str) -> tuple[str | None, str]:
    """(letter, detail): the last stated answer letter, else a bare final line; else None."""
    found: list[tuple[int, str]] = []
    for match in _STATED.finditer(response):
        bracketed = match.group(1) or match.group(2)
        letter = bracketed or match.group(3)
        # An unbracketed "A" or "I" followed by a word is an article or a pronoun
        # ("the answer is A bit ...", "answer: I think ...").
        if not bracketed and letter in "AI" and _WORD_AFTER.match(response, match.end()):
            continue
        found.append((match.start(), letter.upper()))
    found.extend((m.start(), m.group(1).upper()) for m in _BOXED.finditer(response))
    if found:
        letter = max(found)[1]
    else:
        lines = [line for line in response.strip().splitlines() if line.strip()]
        bare = _BARE_LINE.match(lines[-1]) if lines else None
        if bare is None:
            return None, "no answer letter found"
        letter = bare.group(1)
    if letter not in valid:
        return letter, f"letter {letter} is not among the options {valid[0]}-{valid[-1]}"
    return letter, ""


def grade_multiple_choice(record: QuestionRecord, response: str) -> Verdict:
    """Correct when the extracted letter is the gold letter."""
    if record.answer is None:
        raise ValueError(f"multiple-choice question {record.id!r} has no gold answer letter")
    letter, problem = extract_letter(response, LETTERS[: len(record.choices)])
    if letter is None or problem:
        return Verdict(correct=False, extracted=letter, detail=problem)
    correct = letter == record.answer
    detail = "" if correct else f"chose {letter}, gold is {record.answer}"
    return Verdict(correct=correct, extracted=letter, detail=detail)

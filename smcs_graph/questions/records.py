"""The question record: one type for every family, its JSON form, and its model-facing prompt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "CATEGORY_RULE",
    "FAMILIES",
    "LETTERS",
    "QuestionFormatError",
    "QuestionRecord",
    "category_of",
    "prompt_for",
]

FAMILIES = ("multiple_choice", "math", "numeric", "code", "instruction")
"""The built-in families (each has a grader); users may add their own."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class QuestionFormatError(ValueError):
    """A question file or record is malformed; the message names the file, row and field."""


@dataclass(frozen=True)
class QuestionRecord:
    """One question of a bank or a benchmark, with what its family's grader needs."""

    id: str
    family: str
    question: str
    choices: tuple[str, ...] = ()
    answer: str | None = None
    tests: str | None = None
    entry_point: str | None = None
    constraints: tuple[Mapping[str, Any], ...] = field(default=())
    category: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("id", "family", "question"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise QuestionFormatError(f"question record field {name!r} must be non-empty text")
        if self.family == "multiple_choice":
            if not 2 <= len(self.choices) <= len(LETTERS):
                raise QuestionFormatError(
                    f"multiple-choice question {self.id!r} needs 2 to {len(LETTERS)} choices "
                    f"(got {len(self.choices)})"
                )
            valid = LETTERS[: len(self.choices)]
            if self.answer is not None and self.answer not in valid:
                raise QuestionFormatError(
                    f"multiple-choice question {self.id!r}: answer {self.answer!r} is not one "
                    f"of the letters {valid[0]}-{valid[-1]}"
                )
        if self.family == "code" and not self.tests:
            raise QuestionFormatError(f"code question {self.id!r} has no tests to run")
        if self.family == "instruction":
            for constraint in self.constraints:
                if not isinstance(constraint.get("id"), str):
                    raise QuestionFormatError(
                        f"instruction question {self.id!r}: each constraint needs an 'id' "
                        f"string (got {dict(constraint)!r})"
                    )

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (tuples become lists); `from_json` reads it back."""
        return {
            "id": self.id,
            "family": self.family,
            "question": self.question,
            "choices": list(self.choices),
            "answer": self.answer,
            "tests": self.tests,
            "entry_point": self.entry_point,
            "constraints": [
                {"id": c["id"], "kwargs": dict(c.get("kwargs") or {})} for c in self.constraints
            ],
            "category": self.category,
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QuestionRecord:
        """Validate and build a record from `to_json()` output; errors name the bad field."""
        if not isinstance(data, Mapping):
            raise QuestionFormatError(
                f"a question record must be a JSON object (got {type(data).__name__})"
            )
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise QuestionFormatError(
                f"question record {data.get('id')!r} has unknown fields {sorted(unknown)}; "
                f"known fields: {sorted(cls.__dataclass_fields__)}"
            )
        missing = [name for name in ("id", "family", "question") if name not in data]
        if missing:
            raise QuestionFormatError(
                f"question record {data.get('id')!r} lacks required fields {missing}"
            )
        choices = data.get("choices") or []
        constraints = data.get("constraints") or []
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise QuestionFormatError(
                f"question record {data['id']!r}: 'choices' must be a list of strings"
            )
        if not isinstance(constraints, list) or not all(
            isinstance(c, Mapping) for c in constraints
        ):
            raise QuestionFormatError(
                f"question record {data['id']!r}: 'constraints' must be a list of objects"
            )
        for name in ("answer", "tests", "entry_point"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise QuestionFormatError(
                    f"question record {data['id']!r}: {name!r} must be a string or null"
                )
        return cls(
            id=data["id"],
            family=data["family"],
            question=data["question"],
            choices=tuple(choices),
            answer=data.get("answer"),
            tests=data.get("tests"),
            entry_point=data.get("entry_point"),
            constraints=tuple(
                {"id": c.get("id"), "kwargs": dict(c.get("kwargs") or {})} for c in constraints
            ),
            category=str(data.get("category") or ""),
            source=str(data.get("source") or ""),
        )


class _Categorised(Protocol):
    @property
    def category(self) -> str: ...
    @property
    def family(self) -> str: ...


CATEGORY_RULE = "a question's category is its category if set, else its family"
"""The one rule, stated in `--help` and the README."""


def category_of(question: _Categorised) -> str:
    """A question's category: its `category` if set, else its `family` (`CATEGORY_RULE`).

    The one rule for every path that groups questions: the graph's `hier` prior, replay's
    stratified splits and per-category router (files or a bank), and `split_bank_test`.
    """
    return question.category or question.family


def prompt_for(record: QuestionRecord) -> str:
    """The model-facing prompt for a record: the question (with its options), then its
    family's answer instruction (`answers.CONTRACTS`); other families' questions as they are."""
    from smcs_graph.answers import CONTRACTS

    contract = CONTRACTS.get(record.family)
    if contract is None:
        return record.question
    if record.family == "multiple_choice":
        options = "\n".join(
            f"({letter}) {choice}" for letter, choice in zip(LETTERS, record.choices, strict=False)
        )
        return f"{record.question}\n\nOptions:\n{options}\n\n{contract.instruction}"
    if record.family == "code":
        if record.entry_point:
            return (
                "Complete the following Python function. Reply with the whole function, "
                f"including the signature, {contract.instruction}.\n\n"
                f"```python\n{record.question}```"
            )
        return (
            f"{record.question}\n\nWrite a complete Python solution and reply with it "
            f"{contract.instruction}."
        )
    return f"{record.question}\n\n{contract.instruction}"

"""What the bank stores and returns, and how a question is laid out as a Chroma record.

- `BankQuestion` (one labeled question) and `Support` (the support set of a query);
- the record layout: one record per question with our own embedding, the text as its document,
  metadata `family`, `source`, `category`, `answer`, `record` (the full question record as JSON,
  which graders need), and the capability entries `r:<model>` = 1 / 0 (a missing key is an
  unmeasured entry); `SCHEMA_VERSION` is bumped when this layout changes.

The functions here convert between the two and check questions before a write; they are shared
by the bank's modules and not exported from `smcs_graph.bank`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from smcs_graph.questions import QuestionRecord

__all__ = ["RESULT_PREFIX", "SCHEMA_VERSION", "BankQuestion", "Support"]

SCHEMA_VERSION = 1
"""Layout version of a bank collection (bumped when the record layout changes)."""

RESULT_PREFIX = "r:"
"""Metadata key prefix of a capability entry: `r:<model>` = 1 / 0."""


@dataclass(frozen=True)
class BankQuestion:
    """One labeled bank question."""

    id: str
    question: str
    family: str = "general"
    source: str = ""
    answer: str | None = None
    category: str = ""
    record: Mapping[str, Any] | None = field(default=None, hash=False)
    """The full question record as JSON data (`QuestionRecord.to_json()`), for grading."""

    @classmethod
    def from_record(cls, record: QuestionRecord) -> BankQuestion:
        """The bank entry of a question record (the record is stored whole, for grading)."""
        return cls(
            id=record.id,
            question=record.question,
            family=record.family,
            source=record.source,
            answer=record.answer,
            category=record.category,
            record=record.to_json(),
        )

    def to_record(self) -> QuestionRecord:
        """The question record to grade against: the stored one, else one built from fields."""
        from smcs_graph.questions import QuestionRecord

        if self.record is not None:
            return QuestionRecord.from_json({**self.record, "id": self.id})
        return QuestionRecord(
            id=self.id,
            family=self.family,
            question=self.question,
            answer=self.answer,
            category=self.category,
            source=self.source,
        )


@dataclass(frozen=True, eq=False)  # eq on numpy fields would raise; compare fields explicitly
class Support:
    """The support set of one query (RPS step 2) with its capability columns."""

    question_ids: list[str]
    questions: list[str]
    families: list[str]
    similarities: NDArray[np.float64]
    capability: NDArray[np.float64]
    measured: NDArray[np.bool_]
    models: list[str]
    threshold: float
    bank_size: int
    categories: list[str] = field(default_factory=list)
    """Each support question's category (its family where it has none), for the 'hier' rule."""


# ---------------------------------------------------------------------- record layout


def result_key(model: str) -> str:
    """The metadata key of `model`'s capability entry."""
    return RESULT_PREFIX + model


def metadata(q: BankQuestion) -> dict[str, Any]:
    """The metadata of `q`'s record, without capability entries."""
    # None deletes a key in Chroma's upsert/update (they merge into the stored dict).
    return {
        "family": q.family,
        "source": q.source,
        "category": q.category or None,
        "answer": q.answer,
        "record": None if q.record is None else _record_json(q.record),
    }


def category_of(meta: Mapping[str, Any]) -> str:
    """The group a question's 'hier' prior pools over: its category, else its family."""
    return str(meta.get("category") or meta.get("family", "general"))


def stored_question(id_: str, document: str | None, meta: Mapping[str, Any] | None) -> BankQuestion:
    """The question a stored record holds."""
    meta = meta or {}
    answer = meta.get("answer")
    stored = meta.get("record")
    return BankQuestion(
        id=id_,
        question=document or "",
        family=str(meta.get("family", "general")),
        source=str(meta.get("source", "")),
        answer=None if answer is None else str(answer),
        category=str(meta.get("category") or ""),
        record=json.loads(stored) if isinstance(stored, str) else None,
    )


def page_rows(
    page: Mapping[str, Any],
) -> Iterator[tuple[str, str | None, Mapping[str, Any] | None]]:
    """(id, document, metadata) of each record of a Chroma `get` result (None where absent)."""
    ids: list[str] = page["ids"]
    docs = page.get("documents") or [None] * len(ids)
    metas = page.get("metadatas") or [None] * len(ids)
    yield from zip(ids, docs, metas, strict=True)


def stored_outcome(value: object) -> int | None:
    """A stored capability value as 1 / 0; None for anything else (ignored)."""
    if isinstance(value, bool | np.bool_):
        return int(bool(value))
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    return None


def checked_outcome(id_: str, value: object) -> int | None:
    """A result given to `record_many`: 1 / 0, or None to remove it."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or (
        isinstance(value, int | np.integer) and value in (0, 1)
    ):
        return int(bool(value))
    raise ValueError(
        f"result for question {id_!r} must be True/False (or None to remove it), got {value!r}"
    )


# ---------------------------------------------------------------------- changes and checks


def grading_changed(before: BankQuestion, after: BankQuestion) -> bool:
    """Whether recorded results graded a different question: text, answer or record changed.

    Attaching a record to a question stored without one keeps its results.
    """
    if before.question != after.question or before.answer != after.answer:
        return True
    if before.record is None or after.record is None:
        return False
    return _record_json(before.record) != _record_json(after.record)


def unchanged(before: BankQuestion, after: BankQuestion) -> bool:
    """Whether a write of `after` over `before` would store nothing new."""

    # Records compare as JSON text: a stored record reads back with lists where tuples went in.
    def key(q: BankQuestion) -> tuple[Any, ...]:
        record = None if q.record is None else _record_json(q.record)
        return (q.question, q.family, q.source, q.answer, q.category, record)

    return key(before) == key(after)


def validate_questions(items: Sequence[BankQuestion]) -> None:
    """TypeError / ValueError unless every item is a well-formed question with a unique id."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for i, q in enumerate(items):
        if not isinstance(q, BankQuestion):
            raise TypeError(f"item {i} is {type(q).__name__}, expected BankQuestion")
        if not isinstance(q.id, str) or not q.id:
            raise ValueError(f"question {i} has an empty or non-string id: {q.id!r}")
        if not isinstance(q.question, str) or not q.question.strip():
            raise ValueError(f"question {q.id!r} has no text")
        if not isinstance(q.family, str) or not q.family:
            raise ValueError(f"question {q.id!r} needs a non-empty family, got {q.family!r}")
        if not isinstance(q.source, str):
            raise ValueError(f"question {q.id!r}: source must be a string, got {q.source!r}")
        if not isinstance(q.category, str):
            raise ValueError(f"question {q.id!r}: category must be a string, got {q.category!r}")
        if q.record is not None:
            if not isinstance(q.record, Mapping):
                raise ValueError(f"question {q.id!r}: record must be a mapping (JSON) or None")
            try:
                _record_json(q.record)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"question {q.id!r}: record is not JSON-serializable: {exc}"
                ) from exc
        if q.answer is not None and not isinstance(q.answer, str):
            raise ValueError(f"question {q.id!r}: answer must be a string or None")
        if q.id in seen:
            duplicates.append(q.id)
        seen.add(q.id)
    if duplicates:
        raise ValueError(
            f"duplicate question id(s) in one add_questions call: {few(duplicates)}; "
            "give each question a unique id"
        )


def few(items: Sequence[str], limit: int = 5) -> str:
    """The first `limit` of `items` for a message, with the total when there are more."""
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _record_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)

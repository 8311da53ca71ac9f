"""Replay inputs: questions with categories and a recorded capability matrix with its mask."""

from __future__ import annotations

import csv
import json
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from smcs_graph.errors import ConfigError

if TYPE_CHECKING:
    from smcs_graph.bank import QuestionBank

__all__ = [
    "BENCHMARKS_ENV",
    "ReplayData",
    "TextMode",
    "benchmarks_dir",
    "load_replay_data",
    "query_text",
    "replay_data_from_bank",
]

BENCHMARKS_ENV = "SMCS_BENCHMARKS_DIR"
"""Environment variable naming the folder of shared benchmark files."""

MMLU_PRO_QUESTIONS = "mmlu_pro.jsonl"
MMLU_PRO_MATRIX = "mmlu_pro_correctness_29_models.csv"

_GET_BATCH = 4096  # ids per Chroma get (its limit is 5461 on this version)

TextMode = Literal["question", "question+options"]
"""What is embedded for retrieval: the question alone, or the question and its options."""


def benchmarks_dir() -> Path:
    """$SMCS_BENCHMARKS_DIR, else `<repo>/../shared/benchmarks`."""
    configured = os.environ.get(BENCHMARKS_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


def query_text(question: str, options: Sequence[str] = (), mode: TextMode = "question") -> str:
    """The text embedded for retrieval; "question+options" appends the lettered options."""
    if mode == "question" or not options:
        return question
    letters = string.ascii_uppercase
    lines = [f"{letters[i]}. {option}" for i, option in enumerate(options[: len(letters)])]
    return question + "\n" + "\n".join(lines)


@dataclass(frozen=True, eq=False)
class ReplayData:
    """N questions and the recorded correctness of R models on them.

    `capability` and `measured` are (R, N), the layout of `QuestionBank.capability`: 1/0 where
    measured, and `measured` False where a model has no record (never counted as wrong).
    """

    question_ids: list[str]
    questions: list[str]
    categories: list[str]
    models: list[str]
    capability: NDArray[np.float64]
    measured: NDArray[np.bool_]
    options: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n, r = len(self.question_ids), len(self.models)
        if len(self.questions) != n or len(self.categories) != n:
            raise ValueError("question_ids, questions and categories must have the same length")
        if self.options and len(self.options) != n:
            raise ValueError("options must be empty or hold one list per question")
        if self.capability.shape != (r, n) or self.measured.shape != (r, n):
            raise ValueError(
                f"capability and measured must be (models, questions) = ({r}, {n}); got "
                f"{self.capability.shape} and {self.measured.shape}"
            )

    def texts(self, mode: TextMode = "question") -> list[str]:
        """The retrieval texts of every question (see `query_text`)."""
        if mode == "question" or not self.options:
            return list(self.questions)
        return [query_text(q, o, mode) for q, o in zip(self.questions, self.options, strict=True)]


def load_replay_data(questions_path: str | Path, matrix_path: str | Path) -> ReplayData:
    """Questions (JSONL: question_id, question, category, options?) and a correctness CSV.

    The CSV has a `question_id` column, then one column per model holding 1, 0 or empty (no
    record). Rows are matched by question id; questions without a matrix row are dropped and
    so are matrix rows without a question (a ConfigError if nothing matches).
    """
    qpath, mpath = Path(questions_path).expanduser(), Path(matrix_path).expanduser()
    for path, what in ((qpath, "questions file"), (mpath, "correctness matrix")):
        if not path.is_file():
            raise ConfigError(
                f"{what} not found: {path}; pass an existing file (the shared benchmarks live "
                f"in ${BENCHMARKS_ENV}, default {benchmarks_dir()})"
            )
    records: dict[str, tuple[str, str, list[str]]] = {}
    with qpath.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                qid, text = str(row["question_id"]), str(row["question"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{qpath}:{number}: expected a JSON object with question_id and question "
                    f"({exc})"
                ) from exc
            options = [str(o) for o in row.get("options") or []]
            records[qid] = (text, str(row.get("category") or "general"), options)
    with mpath.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or header[0] != "question_id" or len(header) < 2:
            raise ConfigError(f"{mpath}: the first line must be 'question_id,<model>,<model>,...'")
        models = header[1:]
        ids: list[str] = []
        values: list[list[float]] = []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ConfigError(
                    f"{mpath}:{number}: {len(row)} fields, the header has {len(header)}"
                )
            if row[0] not in records:
                continue
            try:
                values.append([_cell(v) for v in row[1:]])
            except ValueError as exc:
                raise ConfigError(f"{mpath}:{number}: {exc}") from exc
            ids.append(row[0])
    if not ids:
        raise ConfigError(
            f"no question id of {mpath} appears in {qpath}: check that both files describe the "
            "same questions"
        )
    matrix = np.asarray(values, dtype=np.float64).T
    measured = ~np.isnan(matrix)
    return ReplayData(
        question_ids=ids,
        questions=[records[i][0] for i in ids],
        categories=[records[i][1] for i in ids],
        models=models,
        capability=np.where(measured, matrix, 0.0),
        measured=measured,
        options=[records[i][2] for i in ids],
    )


def _cell(value: str) -> float:
    text = value.strip()
    if text == "":
        return float("nan")
    if text in ("1", "1.0", "true", "True"):
        return 1.0
    if text in ("0", "0.0", "false", "False"):
        return 0.0
    raise ValueError(f"correctness must be 1, 0 or empty, got {value!r}")


def replay_data_from_bank(
    bank: QuestionBank, models: Sequence[str] | None = None
) -> tuple[ReplayData, NDArray[np.float32]]:
    """A bank's questions, families (as categories), capability matrix, and stored embeddings."""
    ids = bank.question_ids()
    chosen = list(models) if models is not None else bank.models
    if not ids or not chosen:
        raise ConfigError(
            f"bank {bank.name!r} has {len(ids)} questions and {len(chosen)} models with results; "
            "a replay needs both (import or profile results first)"
        )
    questions = bank.get(ids)
    capability, measured = bank.capability(chosen, ids)
    data = ReplayData(
        question_ids=ids,
        questions=[q.question for q in questions],
        categories=[q.family for q in questions],
        models=chosen,
        capability=capability,
        measured=measured,
    )
    return data, _stored_embeddings(bank, ids)


def _stored_embeddings(bank: QuestionBank, ids: Sequence[str]) -> NDArray[np.float32]:
    """The bank's stored embeddings of `ids` (unit rows), read from its Chroma collection."""
    batch = _GET_BATCH
    rows: dict[str, NDArray[np.float32]] = {}
    for start in range(0, len(ids), batch):
        page = bank.collection.get(ids=list(ids[start : start + batch]), include=["embeddings"])
        vectors = np.asarray(page["embeddings"], dtype=np.float32)
        for id_, vector in zip(page["ids"], vectors, strict=True):
            rows[id_] = vector
    matrix = np.stack([rows[i] for i in ids])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: NDArray[np.float32] = (matrix / np.where(norms > 0.0, norms, 1.0)).astype(np.float32)
    return out

"""Replay inputs: questions with categories and a recorded capability matrix with its mask.

Files are read as `smcs bank import` reads them (`smcs_graph.questions`: one question-file
format, one matrix reader, one id join, one category rule), so a file pair that imports
replays, and gives the same categories as the bank it imports into.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from smcs_graph.errors import ConfigError
from smcs_graph.questions import category_of, join_matrix, load_benchmark, read_matrix

if TYPE_CHECKING:
    from smcs_graph.bank.store import QuestionBank

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
    return Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks"


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


def load_replay_data(
    questions_path: str | Path,
    matrix_path: str | Path,
    *,
    id_column: str | None = None,
    source: str | None = None,
) -> ReplayData:
    """A question file and a correctness CSV, read as `smcs bank import` reads them.

    The question file is any format `load_benchmark` reads (records JSONL, a benchmark file,
    or the plain `question_id, question, category, options` rows), detected from its fields
    unless `source` names it. The CSV has an id column (`id_column`, default `question_id` if
    present, else the first) and one column per model holding 1, 0 or empty (no record). Rows
    meet questions by full or dataset id, whichever matches more (`join_matrix`); questions
    without a matrix row are dropped and so are matrix rows without a question (a ConfigError
    if nothing matches). A question's category is `category_of` (category, else family).
    """
    qpath, mpath = Path(questions_path).expanduser(), Path(matrix_path).expanduser()
    for path, what in ((qpath, "questions file"), (mpath, "correctness matrix")):
        if not path.is_file():
            raise ConfigError(
                f"{what} not found: {path}; pass an existing file (the shared benchmarks live "
                f"in ${BENCHMARKS_ENV}, default {benchmarks_dir()})"
            )
    try:
        records = load_benchmark(qpath, source=source)
    except ValueError as exc:  # QuestionFormatError names the file, row and format
        raise ConfigError(str(exc)) from exc
    matrix = read_matrix(mpath, id_column=id_column)
    by_row = join_matrix(matrix.ids, records)
    ids = [i for i in matrix.ids if i in by_row]
    measured = np.array(
        [[i in matrix.results[m] for i in ids] for m in matrix.models], dtype=bool
    ).reshape(len(matrix.models), len(ids))
    capability = np.array(
        [[float(matrix.results[m].get(i, False)) for i in ids] for m in matrix.models],
        dtype=np.float64,
    ).reshape(len(matrix.models), len(ids))
    questions = [by_row[i] for i in ids]
    return ReplayData(
        question_ids=ids,
        questions=[q.question for q in questions],
        categories=[category_of(q) for q in questions],
        models=list(matrix.models),
        capability=capability,
        measured=measured,
        options=[list(q.choices) for q in questions],
    )


def replay_data_from_bank(
    bank: QuestionBank, models: Sequence[str] | None = None
) -> tuple[ReplayData, NDArray[np.float32]]:
    """A bank's questions, categories (`category_of`: category, else family), capability
    matrix, and stored embeddings."""
    from smcs_graph.questions import category_of

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
        categories=[category_of(q) for q in questions],
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

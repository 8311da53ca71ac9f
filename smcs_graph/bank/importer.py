"""Filling a bank without calling any model: question files, recorded results, released banks.

- `add_records`: question records into a bank, in chunks, with a progress line.
- `import_matrix`: a CSV correctness matrix (`questions.matrix`: a question id column, then one
  0/1 column per model; an empty cell means "not measured" and stays masked) joined with
  question records.
- `import_union_bank`: the SMCS authors' released union-bank JSON, a map
  `{id: {"question", "src", "model_res": {model: {"is_correct"}}, "embedding", ...}}`.

Every import runs inside `QuestionBank.building()`: a killed import leaves the bank marked
incomplete (it refuses to open) until the same import is rerun to the end. Questions keep their
`family` and `category` as given; whatever groups them uses `questions.category_of` (the
category, else the family).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smcs_graph.bank.records import BankQuestion
from smcs_graph.bank.store import QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.questions import QuestionRecord
from smcs_graph.questions.matrix import (
    CorrectnessMatrix,
    JoinKey,
    join_matrix,
    native_id,
    read_matrix,
)

__all__ = [
    "SOURCE_FAMILIES",
    "CorrectnessMatrix",
    "ImportReport",
    "JoinKey",
    "add_records",
    "import_matrix",
    "import_union_bank",
    "native_id",
    "read_matrix",
]

SOURCE_FAMILIES: dict[str, str] = {
    "mmlu_pro": "multiple_choice",
    "mmlu": "multiple_choice",
    "gpqa": "multiple_choice",
    "gpqa_diamond": "multiple_choice",
    "medmcqa": "multiple_choice",
    "arc": "multiple_choice",
    "arc_challenge": "multiple_choice",
    "math": "math",
    "math500": "math",
    "math_500": "math",
    "aime": "math",
    "aime24": "math",
    "aime25": "math",
    "gsm8k": "numeric",
    "mbpp": "code",
    "humaneval": "code",
    "livecodebench": "code",
    "ifeval": "instruction",
}
"""Family of a union-bank record by its `src` (lowercase, '-' read as '_'); others: general."""

_CHUNK = 512


@dataclass
class ImportReport:
    """What an import put in the bank and what it could not place."""

    questions: int = 0
    """Questions imported (in the bank now, new or already there)."""
    written: int = 0
    """Of those, added or changed by this import."""
    models: list[str] = field(default_factory=list)
    results: int = 0
    """Recorded 0/1 entries."""
    masked: int = 0
    """Empty entries (not measured), left masked."""
    unmatched_rows: list[str] = field(default_factory=list)
    """Matrix ids with no question (not imported)."""
    unmatched_questions: int = 0
    """Questions with no matrix row (not imported)."""
    embeddings: str = ""
    """How the questions were embedded: 'embedded by <id>' or 'stored vectors of <id>'."""
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"imported {self.questions} question(s) ({self.written} added or changed) and "
            f"{self.results} result(s) of {len(self.models)} model(s); {self.masked} empty "
            f"cell(s) left masked; {self.seconds:.1f}s"
        ]
        if self.embeddings:
            lines.append(f"  embeddings: {self.embeddings}")
        if self.unmatched_rows:
            shown = ", ".join(self.unmatched_rows[:5])
            more = (
                f", ... ({len(self.unmatched_rows)} in all)" if len(self.unmatched_rows) > 5 else ""
            )
            lines.append(
                f"  {len(self.unmatched_rows)} matrix row(s) had no question: {shown}{more}"
            )
        if self.unmatched_questions:
            lines.append(
                f"  {self.unmatched_questions} question(s) had no matrix row and were skipped"
            )
        return "\n".join(lines)


def _progress_printer(enabled: bool, what: str) -> Callable[[int, int, float], None]:
    def show(done: int, total: int, started: float) -> None:
        if not enabled:
            return
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else math.inf
        eta_text = f", ETA {eta:.0f}s" if math.isfinite(eta) and done < total else ""
        print(
            f"{what}: {done}/{total} ({rate:.0f}/s{eta_text})",
            file=sys.stderr,
            flush=True,
        )

    return show


def add_records(
    bank: QuestionBank,
    records: Sequence[QuestionRecord] | Sequence[BankQuestion],
    *,
    embeddings: np.ndarray[Any, Any] | None = None,
    chunk_size: int = _CHUNK,
    progress: bool = True,
) -> int:
    """Add question records (or bank questions) in chunks; returns how many were new or changed.

    Unchanged questions already in the bank are skipped, which makes a rerun after a crash
    cheap. A progress line goes to stderr after each chunk when `progress`.
    """
    questions = [r if isinstance(r, BankQuestion) else BankQuestion.from_record(r) for r in records]
    show = _progress_printer(progress, "questions written")
    started = time.monotonic()
    written = 0
    for start in range(0, len(questions), chunk_size):
        chunk = questions[start : start + chunk_size]
        vectors = None if embeddings is None else embeddings[start : start + len(chunk)]
        written += bank.add_questions(chunk, embeddings=vectors)
        show(start + len(chunk), len(questions), started)
    return written


# ---------------------------------------------------------------------- CSV matrix


def import_matrix(
    bank: QuestionBank,
    matrix: CorrectnessMatrix | str | Path,
    records: Sequence[QuestionRecord],
    *,
    join: JoinKey = "auto",
    id_column: str | None = None,
    progress: bool = True,
) -> ImportReport:
    """Import a correctness matrix, joined with `records` on `join`, into `bank`.

    join="id": matrix ids are the full record ids; "native": the dataset's own ids
    (`native_id`); "auto" (default): whichever matches more rows. Matched questions are added
    (embedded), then every non-empty cell is recorded; empty cells are not written, so they
    stay masked (never counted as wrong). Files are read and joined before the bank is touched.
    """
    started = time.monotonic()
    if not isinstance(matrix, CorrectnessMatrix):
        matrix = read_matrix(matrix, id_column=id_column)
    by_row = join_matrix(matrix.ids, records, join)
    matched = list(by_row.values())
    unmatched = [i for i in matrix.ids if i not in by_row]
    results = {
        model: {by_row[k].id: v for k, v in cells.items() if k in by_row}
        for model, cells in matrix.results.items()
    }
    return _write(
        bank,
        matched,
        results,
        list(matrix.models),
        embeddings=None,
        how=f"embedded by {bank.embedder.id}",
        progress=progress,
        started=started,
        unmatched_rows=unmatched,
        unmatched_questions=len(records) - len(matched),
    )


# ---------------------------------------------------------------------- union-bank JSON


def _family_of(src: str) -> str:
    return SOURCE_FAMILIES.get(src.strip().lower().replace("-", "_"), "general")


def _outcome(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{where}: is_correct must be true/false, 0/1 or null, got {value!r}")


def import_union_bank(
    bank: QuestionBank,
    path: str | Path,
    *,
    embedding_model: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> ImportReport:
    """Import the SMCS authors' union-bank JSON into `bank`.

    Each record gives `question`, `src` (its family follows SOURCE_FAMILIES), `model_res`
    {model: {"is_correct": true/false/null}} (null or absent: masked) and `embedding`;
    optional `answer` and `category` are kept. Stored vectors are used only when they are known
    to come from the bank's embedder: `embedding_model` (or every record's `embedding_model`
    field) equals `bank.embedder.id` and every vector has the bank's dimension. Otherwise
    (another model, a dimension that differs, or no model named) every question is re-embedded
    with the bank's embedder. `limit` keeps the first records (for trials).
    """
    started = time.monotonic()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"union-bank file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(
            f"{path}: expected a JSON object mapping question ids to records "
            '({"<id>": {"question": ..., "src": ..., "model_res": {...}, "embedding": [...]}})'
        )
    items = list(data.items())[:limit]
    questions: list[BankQuestion] = []
    results: dict[str, dict[str, bool]] = {}
    vectors: list[Any] = []
    stated: set[str | None] = set()
    for qid, entry in items:
        where = f"{path}, record {qid!r}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected an object")
        text = entry.get("question")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: 'question' must be non-empty text")
        src = str(entry.get("src") or "")
        answer = entry.get("answer")
        questions.append(
            BankQuestion(
                id=str(qid),
                question=text,
                family=_family_of(src),
                source=src,
                answer=None if answer is None else str(answer),
                category=str(entry.get("category") or ""),
            )
        )
        model_res = entry.get("model_res") or {}
        if not isinstance(model_res, Mapping):
            raise ConfigError(f"{where}: 'model_res' must map model names to objects")
        for model, res in model_res.items():
            if not isinstance(res, Mapping):
                raise ConfigError(f"{where}, model {model!r}: expected {{'is_correct': ...}}")
            outcome = _outcome(res.get("is_correct"), f"{where}, model {model!r}")
            if outcome is not None:
                results.setdefault(str(model), {})[str(qid)] = outcome
        vectors.append(entry.get("embedding"))
        stated.add(entry.get("embedding_model"))
    source_model = embedding_model or (next(iter(stated)) if len(stated) == 1 else None)
    stored = _stored_vectors(vectors, bank.dimension)
    use_stored = stored is not None and source_model == bank.embedder.id
    if use_stored:
        how = f"stored vectors of {source_model}"
    else:
        why = (
            "no embedding model named"
            if source_model is None
            else f"stored by {source_model!r}"
            if stored is not None
            else "stored vectors missing or of another dimension"
        )
        how = f"embedded by {bank.embedder.id} ({why})"
    return _write(
        bank,
        questions,
        results,
        sorted(results),
        embeddings=stored if use_stored else None,
        how=how,
        progress=progress,
        started=started,
    )


def _write(
    bank: QuestionBank,
    questions: Sequence[QuestionRecord] | Sequence[BankQuestion],
    results: Mapping[str, Mapping[str, bool]],
    models: list[str],
    *,
    embeddings: np.ndarray[Any, Any] | None,
    how: str,
    progress: bool,
    started: float,
    unmatched_rows: list[str] | None = None,
    unmatched_questions: int = 0,
) -> ImportReport:
    """Write the questions, then their results, as one bulk write (`bank.building()`)."""
    recorded = sum(len(cells) for cells in results.values())
    with bank.building():
        written = add_records(bank, questions, embeddings=embeddings, progress=progress)
        bank.record_many(results)
    return ImportReport(
        questions=len(questions),
        written=written,
        models=models,
        results=recorded,
        masked=len(questions) * len(models) - recorded,
        unmatched_rows=unmatched_rows or [],
        unmatched_questions=unmatched_questions,
        embeddings=how,
        seconds=time.monotonic() - started,
    )


def _stored_vectors(vectors: Sequence[Any], dimension: int) -> np.ndarray[Any, Any] | None:
    """The stored embeddings as one float32 matrix, or None unless all have `dimension`."""
    if any(not isinstance(v, list) or len(v) != dimension for v in vectors):
        return None
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    return matrix if np.isfinite(matrix).all() else None

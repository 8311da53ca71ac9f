"""Recorded results on disk: a CSV correctness matrix and how its rows meet question records.

One reader and one join for every command that takes a matrix (`bank import`, `replay`): a
question id column (`--id-column`; default `question_id` if present, else the first column),
then one 0/1 column per model, an empty cell meaning "not measured".
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from smcs_graph.errors import ConfigError
from smcs_graph.questions.records import QuestionRecord

__all__ = [
    "ID_COLUMN_HELP",
    "CorrectnessMatrix",
    "JoinKey",
    "join_matrix",
    "native_id",
    "read_matrix",
]

JoinKey = Literal["auto", "native", "id"]
"""How matrix ids meet question records: the full record id, the dataset's own id
(`native_id`), or `auto`: whichever of the two matches more rows (the full id on a tie)."""

ID_COLUMN_HELP = (
    "matrix column holding question ids (default: question_id if present, else the first "
    "column); ids match the question file's full ids (e.g. mmlu_pro/70) or its own ids (70), "
    "whichever matches more rows"
)
"""The one description of `--id-column`, shared by `bank import` and `replay`."""

_TRUE = {"1", "1.0", "true", "True", "TRUE"}
_FALSE = {"0", "0.0", "false", "False", "FALSE"}


@dataclass
class CorrectnessMatrix:
    """A read correctness CSV: per model, the measured entries (question id -> correct)."""

    ids: list[str]
    models: list[str]
    results: dict[str, dict[str, bool]]
    masked: int


def read_matrix(path: str | Path, *, id_column: str | None = None) -> CorrectnessMatrix:
    """Read a CSV of a question id column and one 0/1 column per model (empty: not measured).

    `id_column` names the id column (default: `question_id` if present, else the first).
    Cells may be 0/1, 0.0/1.0 or true/false; anything else is an error naming its line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"matrix file not found: {path}; pass a CSV file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ConfigError(f"{path}: the file is empty; expected a header row")
        header = [h.strip() for h in header]
        if id_column is None:
            id_column = "question_id" if "question_id" in header else header[0]
        if id_column not in header:
            raise ConfigError(
                f"{path}: no id column {id_column!r} (--id-column); columns: {header}"
            )
        id_at = header.index(id_column)
        models = [h for i, h in enumerate(header) if i != id_at]
        if not models:
            raise ConfigError(f"{path}: no model columns after the id column {id_column!r}")
        repeated = sorted({m for m in models if models.count(m) > 1 or not m})
        if repeated:
            raise ConfigError(
                f"{path}: model column names must be unique and non-empty: {repeated}"
            )
        results: dict[str, dict[str, bool]] = {m: {} for m in models}
        ids: list[str] = []
        seen: set[str] = set()
        masked = 0
        for line, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"{path}, line {line}: {len(row)} cells but the header has {len(header)}"
                )
            qid = row[id_at].strip()
            if not qid:
                raise ConfigError(f"{path}, line {line}: empty question id")
            if qid in seen:
                raise ConfigError(f"{path}, line {line}: question id {qid!r} appears twice")
            seen.add(qid)
            ids.append(qid)
            for i, cell in enumerate(row):
                if i == id_at:
                    continue
                value = cell.strip()
                model = header[i]
                if not value:
                    masked += 1
                elif value in _TRUE:
                    results[model][qid] = True
                elif value in _FALSE:
                    results[model][qid] = False
                else:
                    raise ConfigError(
                        f"{path}, line {line}, column {model!r}: {value!r} is not 1, 0 or empty"
                    )
    return CorrectnessMatrix(ids, models, results, masked)


def native_id(record: QuestionRecord) -> str:
    """The dataset's own id of a record: its id without the '<source>/' prefix the loaders add
    (e.g. MMLU-Pro `question_id` 70 for record `mmlu_pro/70`)."""
    return record.id.split("/", 1)[1] if "/" in record.id else record.id


def join_matrix(
    ids: Sequence[str], records: Sequence[QuestionRecord], join: JoinKey = "auto"
) -> dict[str, QuestionRecord]:
    """Matrix id -> its question record, for the ids that have one (in the matrix's order).

    `ConfigError` when no id matches (with examples of both sides), or when the chosen join
    maps two records to one key.
    """
    if join not in ("auto", "native", "id"):
        raise ConfigError(f"join must be 'auto', 'native' or 'id', got {join!r}")
    full = {record.id: record for record in records}
    if join == "auto":
        natives = {native_id(record) for record in records}
        by_full = sum(1 for i in ids if i in full)
        join = "id" if by_full >= sum(1 for i in ids if i in natives) else "native"
    by_key = full
    if join == "native":
        by_key = {}
        for record in records:
            key = native_id(record)
            if key in by_key:
                raise ConfigError(
                    f"two questions share the join key {key!r} ({by_key[key].id!r} and "
                    f"{record.id!r}); join on 'id' or import the files separately"
                )
            by_key[key] = record
    matched = {i: by_key[i] for i in ids if i in by_key}
    if not matched:
        raise ConfigError(
            f"no matrix id matches a question (join on {join!r}): no question id of the matrix, "
            f"like {list(ids[:3])}, is a question's key, like {list(by_key)[:3]}; check the "
            "question file and the id column (--id-column)"
        )
    return matched

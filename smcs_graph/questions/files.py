"""Question files on disk: the rows of any JSON or JSONL file, and our own record JSONL."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from smcs_graph.questions.records import QuestionFormatError, QuestionRecord

__all__ = ["load_records", "read_rows", "save_records"]


def read_rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(row number, object) of a JSONL file, or of a JSON file holding a list of objects.

    Either may be gzipped (`.gz`). JSONL lines end at '\n' (a '\r' before it is dropped) and
    nowhere else: U+0085 or U+2028 inside a JSON string is text, not a line break. Rows that
    are not JSON objects raise `QuestionFormatError` naming the file and row.
    """
    if not path.is_file():
        raise FileNotFoundError(f"question file not found: {path}")
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise QuestionFormatError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 1]!r});"
            " save the file as UTF-8"
        ) from exc
    except (OSError, EOFError) as exc:  # unreadable, or a truncated .gz
        raise QuestionFormatError(f"{path}: cannot read the file ({exc})") from exc
    stripped = text.lstrip()
    if not stripped:
        return
    first = stripped[0]
    if first == "[":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise QuestionFormatError(f"{path}: not valid JSON ({exc})") from exc
        for number, row in enumerate(rows, start=1):
            yield number, _object(path, number, row)
        return
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionFormatError(f"{path}, line {number}: not valid JSON ({exc})") from exc
        yield number, _object(path, number, row)


def _object(path: Path, number: int, row: object) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise QuestionFormatError(f"{path}, row {number}: expected a JSON object")
    return row


def load_records(path: str | Path) -> list[QuestionRecord]:
    """Read a JSONL file of `QuestionRecord.to_json()` rows; ids must be unique."""
    path = Path(path)
    records: list[QuestionRecord] = []
    seen: set[str] = set()
    for number, row in read_rows(path):
        try:
            record = QuestionRecord.from_json(row)
        except QuestionFormatError as exc:
            raise QuestionFormatError(f"{path}, line {number}: {exc}") from exc
        if record.id in seen:
            raise QuestionFormatError(f"{path}, line {number}: duplicate question id {record.id!r}")
        seen.add(record.id)
        records.append(record)
    return records


def save_records(path: str | Path, records: Iterable[QuestionRecord]) -> None:
    """Write records as JSONL, atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

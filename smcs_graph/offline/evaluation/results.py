"""Results of `smcs eval`: one graded answer per (method, question), committed as it comes.

SQLite in WAL mode: each result is one committed transaction, so a killed run loses at most the
results in flight, and a rerun skips every (method, question) already stored. Failures (a model
that kept failing, a grader error) are kept apart and tried again by the next run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from smcs_graph.errors import ConfigError
from smcs_graph.offline._sqlite import open_wal, transaction

__all__ = ["ANY_VALUE", "MethodResult", "ResultStore"]

ANY_VALUE = object()
"""In `ResultStore.check_settings`'s `absent`: a setting no stored result depends on."""
_UNKNOWN = object()


@dataclass(frozen=True)
class MethodResult:
    """One method's graded answer to one test question."""

    method: str
    question_id: str
    family: str
    category: str
    correct: bool | None
    """None: the method does not apply to this question (e.g. a vote on code answers)."""
    answer: str
    extracted: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    calls: int = 0
    """Model calls the method needs for this question (whether or not they were cached)."""
    detail: Mapping[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    """Wall time of the method's calls on this question, as they took when made
    (`callpath.critical_path`); None: unknown (a cached call from before seconds were kept,
    or a result stored before this field)."""
    hit_limit: bool | None = None
    """Whether the reply that became the answer reached its token limit (None: unknown)."""
    no_final_answer: bool | None = None
    """Whether the answer, recovery included, states no final answer its family's contract
    extracts (None: the family has none, or a result stored before this field)."""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "detail": dict(self.detail)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MethodResult:
        """A stored result; fields newer than it take their defaults."""
        return cls(**dict(data))


class ResultStore:
    """The results of one evaluation folder, and the settings they were made with."""

    def __init__(self, path: str | Path | None) -> None:
        self._path = None if path is None else Path(path).expanduser()
        self._db = open_wal(
            self._path,
            [
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
                "CREATE TABLE IF NOT EXISTS results (method TEXT NOT NULL, question_id TEXT NOT "
                "NULL, payload TEXT NOT NULL, created REAL NOT NULL, "
                "PRIMARY KEY (method, question_id))",
                "CREATE TABLE IF NOT EXISTS failures (method TEXT NOT NULL, question_id TEXT NOT "
                "NULL, error TEXT NOT NULL, PRIMARY KEY (method, question_id))",
            ],
            what="an evaluation results file",
            hint="choose another --out folder",
        )

    @property
    def path(self) -> Path | None:
        return self._path

    def check_settings(
        self, settings: Mapping[str, Any], absent: Mapping[str, Any] | None = None
    ) -> None:
        """Record the run's settings, or refuse if this folder holds results of other settings.

        `absent`: for settings newer than a folder, the value their absence means (the
        behaviour before they existed; `ANY_VALUE`: no stored result depends on it). A folder
        without such a setting is accepted when the run's value is that one, and then records
        the run's settings.
        """
        blob = json.dumps(settings, sort_keys=True, default=str)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('settings', ?)", (blob,))
            return
        stored = json.loads(row[0])
        current = json.loads(blob)
        if stored == current:
            return
        for key in set(current) - set(stored):  # a setting newer than the folder
            meant = (absent or {}).get(key, _UNKNOWN)
            if meant is not _UNKNOWN:
                stored[key] = current[key] if meant is ANY_VALUE else meant
        if stored == current:
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'settings'", (blob,))
            return
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        details = "; ".join(
            f"{k}: stored {stored.get(k)!r}, now {current.get(k)!r}" for k in differ
        )
        raise ConfigError(
            f"{self._path} holds results made with other settings ({details}). Results of "
            "different settings must not be mixed: give another --out folder, or delete this "
            "one to start over."
        )

    def get(self, method: str, question_id: str) -> MethodResult | None:
        row = self._db.execute(
            "SELECT payload FROM results WHERE method = ? AND question_id = ?",
            (method, question_id),
        ).fetchone()
        return None if row is None else MethodResult.from_json(json.loads(row[0]))

    def put(self, result: MethodResult) -> None:
        """Commit one result (a stored result is kept) and clear its failure, if any."""
        payload = json.dumps(result.to_json(), ensure_ascii=False, default=str)
        with transaction(self._db):
            self._db.execute(
                "INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
                (result.method, result.question_id, payload, time.time()),
            )
            self._db.execute(
                "DELETE FROM failures WHERE method = ? AND question_id = ?",
                (result.method, result.question_id),
            )

    def fail(self, method: str, question_id: str, error: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO failures VALUES (?, ?, ?)", (method, question_id, error)
        )

    def results(self) -> list[MethodResult]:
        rows = self._db.execute("SELECT payload FROM results ORDER BY rowid").fetchall()
        return [MethodResult.from_json(json.loads(row[0])) for row in rows]

    def failures(self) -> dict[tuple[str, str], str]:
        rows = self._db.execute("SELECT method, question_id, error FROM failures").fetchall()
        return {(row[0], row[1]): row[2] for row in rows}

    def close(self) -> None:
        self._db.close()

"""`RunStore`: the runs awaiting feedback and the feedback received, in one SQLite file.

A finished run keeps what feedback needs (`RunRecord`: the question, its embedding as the run
computed it, the references, the final answer and who wrote it). A feedback outcome is an
`outcomes` row committed before the bank is touched (write-ahead): `pending()` lists the rows
not yet applied, so a process killed between the two redoes the write at its next start.

WAL mode (`offline/_sqlite.py`): one committed transaction per write, so a killed process leaves
whole rows or none, and several processes and threads can write the same file. Bounded: past
`max_runs` the oldest runs are evicted (and applied outcomes past the same bound).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smcs_graph.errors import ConfigError
from smcs_graph.offline._sqlite import open_wal, transaction

__all__ = ["DEFAULT_MAX_RUNS", "Outcome", "RunRecord", "RunStore", "runs_path"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RUNS = 10_000
"""Runs kept awaiting feedback; older ones are evicted (their feedback gets 'unknown run')."""
RUNS_SUFFIX = ".runs.sqlite"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT UNIQUE NOT NULL,
        bank TEXT NOT NULL,
        created REAL NOT NULL,
        body TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outcomes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT UNIQUE NOT NULL,
        request TEXT NOT NULL,
        plan TEXT NOT NULL,
        recorded REAL NOT NULL,
        applied REAL)""",
)


def runs_path(bank_where: str) -> Path:
    """The run store beside an on-disk bank folder: `<folder>.runs.sqlite`."""
    folder = Path(bank_where)
    return folder.with_name(folder.name + RUNS_SUFFIX)


@dataclass(frozen=True)
class RunRecord:
    """What one finished run keeps for its feedback."""

    run_id: str
    bank: str
    """The bank collection the run read (feedback must go to the same one)."""
    question: str
    embedding: list[float]
    references: dict[str, str]
    """Each referencer's answer text, by model."""
    answer: str
    producers: list[str]
    """The model(s) whose output is the final answer (see `feedback.apply`)."""
    family: str | None = None
    category: str = ""
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "embedding": self.embedding,
            "references": self.references,
            "answer": self.answer,
            "producers": self.producers,
            "family": self.family,
            "category": self.category,
        }

    @classmethod
    def from_row(cls, run_id: str, bank: str, created: float, body: str) -> RunRecord:
        data = json.loads(body)
        return cls(
            run_id=run_id,
            bank=bank,
            question=data["question"],
            embedding=[float(x) for x in data["embedding"]],
            references=dict(data["references"]),
            answer=data["answer"],
            producers=list(data["producers"]),
            family=data.get("family"),
            category=data.get("category") or "",
            created=created,
        )


@dataclass(frozen=True)
class Outcome:
    """One recorded feedback: the request as given (normalized) and the bank write it plans."""

    run_id: str
    request: dict[str, Any]
    plan: dict[str, Any]
    """{"question": BankQuestion fields, "new_question": bool, "cells": {model: bool}}."""
    applied: bool


class RunStore:
    """Runs awaiting feedback and the outcomes received, in one SQLite file (WAL).

    Thread-safe (one connection behind a lock) and safe for several processes on one file.
    `path=None`: in memory (tests).
    """

    def __init__(self, path: str | Path | None, *, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
            raise ConfigError(f"max_runs must be a positive integer, got {max_runs!r}")
        self._path = None if path is None else Path(path).expanduser().resolve()
        self._max_runs = max_runs
        self._lock = threading.Lock()
        self._db = open_wal(
            self._path,
            _SCHEMA,
            what="a run store",
            hint="delete it (runs awaiting feedback are lost) or choose another path",
            any_thread=True,
        )

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def max_runs(self) -> int:
        return self._max_runs

    def __repr__(self) -> str:
        return f"RunStore({str(self._path) if self._path else 'memory'!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ runs

    def add(self, run: RunRecord) -> None:
        """Keep `run` (one transaction), evicting the oldest runs past `max_runs`."""
        body = json.dumps(run.to_json(), separators=(",", ":"))
        with self._lock, transaction(self._db, immediate=True):
            self._db.execute(
                "INSERT OR REPLACE INTO runs (run_id, bank, created, body) VALUES (?, ?, ?, ?)",
                (run.run_id, run.bank, run.created, body),
            )
            for table in ("runs", "outcomes"):
                # Outcomes awaiting their bank write are never evicted.
                pending = " AND applied IS NOT NULL" if table == "outcomes" else ""
                self._db.execute(
                    f"DELETE FROM {table} WHERE seq <= (SELECT MAX(seq) FROM {table}) - ?{pending}",
                    (self._max_runs,),
                )

    def get(self, run_id: str) -> RunRecord | None:
        """The run `run_id`, or None when it is unknown or was evicted."""
        with self._lock:
            row = self._db.execute(
                "SELECT run_id, bank, created, body FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
        return None if row is None else RunRecord.from_row(*row)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    # ------------------------------------------------------------------ outcomes

    def record(
        self, run_id: str, request: Mapping[str, Any], plan: Mapping[str, Any]
    ) -> tuple[Outcome, bool]:
        """Commit the outcome of `run_id` unless it has one: (the stored outcome, new?).

        Atomic across processes: of two writers of the same run, one inserts, the other gets
        the first one's outcome back (and compares it with its own request).
        """
        with self._lock, transaction(self._db, immediate=True):
            existing = self._outcome(run_id)
            if existing is not None:
                return existing, False
            self._db.execute(
                "INSERT INTO outcomes (run_id, request, plan, recorded) VALUES (?, ?, ?, ?)",
                (run_id, _dumps(request), _dumps(plan), time.time()),
            )
        return Outcome(run_id, dict(request), dict(plan), applied=False), True

    def outcome(self, run_id: str) -> Outcome | None:
        """The recorded outcome of `run_id`, if any."""
        with self._lock:
            return self._outcome(run_id)

    def _outcome(self, run_id: str) -> Outcome | None:
        row = self._db.execute(
            "SELECT request, plan, applied FROM outcomes WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        return Outcome(run_id, json.loads(row[0]), json.loads(row[1]), row[2] is not None)

    def mark_applied(self, run_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outcomes SET applied = ? WHERE run_id = ? AND applied IS NULL",
                (time.time(), run_id),
            )

    def pending(self) -> list[Outcome]:
        """Outcomes recorded but not yet written to the bank, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, request, plan FROM outcomes WHERE applied IS NULL ORDER BY seq"
            ).fetchall()
        return [Outcome(r[0], json.loads(r[1]), json.loads(r[2]), False) for r in rows]


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_stores: dict[Path, RunStore] = {}
_stores_lock = threading.Lock()


def shared_store(path: str | Path, max_runs: int = DEFAULT_MAX_RUNS) -> RunStore:
    """One `RunStore` per file in this process (the graph and the feedback calls share it)."""
    key = Path(path).expanduser().resolve()
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = RunStore(key, max_runs=max_runs)
        return store

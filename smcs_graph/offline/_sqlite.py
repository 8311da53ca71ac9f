"""Crash-safe SQLite files for caches and results (profiling, evaluation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from smcs_graph.errors import ConfigError


def open_wal(
    path: Path | None,
    schema: Sequence[str],
    *,
    what: str,
    hint: str,
    any_thread: bool = False,
) -> sqlite3.Connection:
    """A connection in autocommit + WAL mode, `schema` statements run; `path=None` is in memory.

    `what` names the file with its article ("a response cache"), for error messages.
    WAL with synchronous=NORMAL: a committed transaction survives a killed process (not a power
    loss), which is what resuming after a crash needs. Errors name the file and say what to do.
    """
    if path is not None:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not {what}; give a file path")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(
            ":memory:" if path is None else str(path),
            isolation_level=None,
            check_same_thread=not any_thread,
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        for statement in schema:
            db.execute(statement)
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"cannot use {path} as {what}: {exc}; {hint}") from exc
    return db


@contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = False) -> Iterator[None]:
    """One committed transaction of an autocommit connection; rolled back on any exception.

    `immediate` takes the write lock at once (for a read-then-write that other processes race).
    """
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")

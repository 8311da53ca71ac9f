"""The response cache of offline jobs (profiling, evaluation), and model calls with retries.

`ResponseCache` keeps model responses in SQLite (WAL mode, `_sqlite.open_wal`) under a key
that is a SHA-256 of what determines the answer (`request_key`: the model, the prompt or
messages, the generation settings). Writes are insert-once (a second write of a key keeps the
first), so a resumed job never duplicates a response, and each write is one committed
transaction, so a killed job loses at most the responses it was writing.

`RetryPolicy.run` makes one model call, tried again with exponential backoff and jitter after a
transient failure (`is_transient`: connection errors, timeouts, HTTP 5xx, 408, 429).

Schema: version 2, one `responses` table of JSON payloads (`PRAGMA user_version`). Version-1
files (profiling's `responses` table of text and token counts, evaluation's `calls` table) are
migrated in one transaction when opened; their keys are unchanged, so their responses still hit.
A file of a newer version is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.messages import AIMessage

from smcs_graph.errors import ConfigError
from smcs_graph.offline._sqlite import open_wal, transaction

__all__ = [
    "SCHEMA_VERSION",
    "CachedResponse",
    "ResponseCache",
    "RetryPolicy",
    "is_transient",
    "request_key",
]

SCHEMA_VERSION = 2
"""The cache file's `PRAGMA user_version`; 0 is a new file or a version-1 file."""

_KEYS_PER_QUERY = 500  # under SQLite's limit on bound parameters
_METADATA = ("logprobs", "finish_reason", "model_name")
_T = TypeVar("_T")


def request_key(model: str, request: Mapping[str, Any]) -> str:
    """The cache key of a request: a SHA-256 over the model and `request` as canonical JSON.

    `request` holds whatever else determines the answer (prompt or messages, settings).
    """
    payload = {"model": model, **request}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    """One model response as stored: the parts of an `AIMessage` that callers read back."""

    content: str | list[Any]
    usage: Mapping[str, Any] | None = None
    logprobs: Any = None
    finish_reason: str | None = None
    model_name: str | None = None
    seconds: float | None = None
    """How long the call took when it was made (None: not measured, or stored before this
    field existed); a cached answer keeps its original call's seconds."""

    @classmethod
    def from_message(cls, message: AIMessage) -> CachedResponse:
        metadata = message.response_metadata or {}
        return cls(
            content=message.content,
            usage=dict(message.usage_metadata) if message.usage_metadata else None,
            **{key: metadata.get(key) for key in _METADATA},
        )

    def to_message(self) -> AIMessage:
        metadata = {key: getattr(self, key) for key in _METADATA if getattr(self, key) is not None}
        return AIMessage(
            content=self.content,
            usage_metadata=self.usage,
            response_metadata=metadata,
        )

    @property
    def text(self) -> str:
        """The text of the content (its text parts, joined, when it has parts)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            part if isinstance(part, str) else str(part.get("text", ""))
            for part in self.content
            if isinstance(part, str) or part.get("type") == "text"
        )

    @property
    def input_tokens(self) -> int:
        return int(self.usage.get("input_tokens", 0)) if self.usage else 0

    @property
    def output_tokens(self) -> int:
        return int(self.usage.get("output_tokens", 0)) if self.usage else 0

    def to_json(self) -> str:
        payload: dict[str, Any] = {"content": self.content, "usage": self.usage}
        payload.update({key: getattr(self, key) for key in _METADATA})
        if self.seconds is not None:
            payload["seconds"] = self.seconds
        return json.dumps(payload, ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, blob: str) -> CachedResponse:
        stored = json.loads(blob)
        return cls(
            content=stored["content"],
            usage=stored.get("usage"),
            seconds=stored.get("seconds"),
            **{key: stored.get(key) for key in _METADATA},
        )


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth retrying: connection errors, timeouts, 5xx, 408, 429."""
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:  # the OpenAI client's and httpx's transport errors (timeouts are subclasses)
        import httpx
        import openai

        transient: tuple[type[BaseException], ...] = (
            openai.APIConnectionError,
            httpx.TransportError,
        )
    except ImportError:
        return False
    return isinstance(exc, transient)


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` extra attempts after transient errors, the n-th after about
    `backoff_s * 2**n` seconds (jittered x0.5-1.5); `timeout_s` bounds each attempt."""

    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float | None = None

    async def run(
        self,
        attempt: Callable[[], Awaitable[_T]],
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> _T:
        """`attempt()`'s result; other errors, and the last transient one, are raised."""
        tries = 0
        while True:
            try:
                # asyncio.timeout, unlike wait_for, runs the call in this task (no task per call).
                async with asyncio.timeout(self.timeout_s):
                    return await attempt()
            except Exception as exc:
                if tries >= self.retries or not is_transient(exc):
                    raise
                delay = self.backoff_s * (2**tries) * (0.5 + random.random())
                tries += 1
                if on_retry is not None:
                    on_retry(exc)
                await asyncio.sleep(delay)


class ResponseCache:
    """Model responses on disk under `request_key`s; see the module docstring.

    `path=None` keeps the cache in memory (not resumable). One thread at a time (any thread).
    `fetch` makes identical requests in flight at once only once: the later ones wait.
    """

    def __init__(self, path: str | Path | None) -> None:
        self._path = None if path is None else Path(path).expanduser()
        hint = "give a response cache written by `smcs profile` or `smcs eval`, or a new file"
        self._db = open_wal(self._path, [], what="a response cache", hint=hint, any_thread=True)
        try:
            _prepare(self._db, self._path)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(
                f"cannot use {self._path} as a response cache: {exc}; {hint}"
            ) from exc
        except BaseException:
            self._db.close()
            raise
        self._inflight: dict[str, asyncio.Future[CachedResponse]] = {}
        self.hits = 0
        """Requests `fetch` answered from the cache (or from an identical call in flight)."""
        self.calls = 0
        """Requests `fetch` sent to a model (each one paid for)."""

    @property
    def path(self) -> Path | None:
        return self._path

    def get(self, key: str) -> CachedResponse | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else CachedResponse.from_json(row[0])

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedResponse]:
        """The stored responses among `keys` (absent keys are left out)."""
        found: dict[str, CachedResponse] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[start : start + _KEYS_PER_QUERY])
            rows = self._db.execute(
                f"SELECT key, response FROM responses WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for key, blob in rows:
                found[key] = CachedResponse.from_json(blob)
        return found

    def put(self, key: str, model: str, response: CachedResponse) -> None:
        """Commit one response (a second put of the same key keeps the first)."""
        self.put_many([(key, model, response)])

    def put_many(self, entries: Sequence[tuple[str, str, CachedResponse]]) -> None:
        """Commit (key, model, response) entries in one transaction; stored keys keep theirs."""
        now = time.time()
        rows = [(key, model, response.to_json(), now) for key, model, response in entries]
        with transaction(self._db):
            self._db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    async def fetch(
        self, key: str, model: str, call: Callable[[], Awaitable[CachedResponse]]
    ) -> CachedResponse:
        """The stored response for `key`, else `call()`'s, committed before it is returned."""
        stored = self.get(key)
        if stored is not None:
            self.hits += 1
            return stored
        pending = self._inflight.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[CachedResponse] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response = await call()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._inflight[key]
        self.put(key, model, response)
        self.calls += 1
        future.set_result(response)
        return response

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepare(db: sqlite3.Connection, path: Path | None) -> None:
    """Create the schema, or migrate a version-1 file, in one transaction (see the module doc)."""
    if int(db.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
        return
    with transaction(db, immediate=True):  # re-read under the lock: another process may migrate
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path} is a response cache of schema version {version}, newer than this "
                f"smcs-graph reads ({SCHEMA_VERSION}): upgrade smcs-graph, or give another file"
            )
        if version == SCHEMA_VERSION:
            return
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        profiled: list[tuple[str, str, str, int, int, float]] = []
        if "responses" in tables:
            columns = {row[1] for row in db.execute("PRAGMA table_info(responses)")}
            if "text" in columns:  # version 1 of profiling: text and token counts
                profiled = db.execute(
                    "SELECT key, model, text, input_tokens, output_tokens, created FROM responses"
                ).fetchall()
                db.execute("DROP TABLE responses")
        db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT NOT NULL,"
            " response TEXT NOT NULL, created REAL NOT NULL)"
        )
        db.executemany(
            "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?)",
            [
                (key, model, _v1_response(text, int(n_in), int(n_out)).to_json(), created)
                for key, model, text, n_in, n_out, created in profiled
            ],
        )
        if "calls" in tables:  # version 1 of evaluation: the payload is version 2's
            db.execute(
                "INSERT OR IGNORE INTO responses SELECT key, model, response, created FROM calls"
            )
            db.execute("DROP TABLE calls")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _v1_response(text: str, input_tokens: int, output_tokens: int) -> CachedResponse:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    return CachedResponse(text, usage)

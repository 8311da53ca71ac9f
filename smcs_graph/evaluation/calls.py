"""Model calls of an evaluation, made once each: a call cache on disk and a caching chat model.

Every evaluated method asks the pool's models through `CachedChatModel`, which answers from a
`CallCache` (SQLite in WAL mode) keyed by the real model, the messages, the generation settings
and an *occurrence* number. The occurrence counts identical requests within one `CallScope`
(one method on one question): the first request of a scope is occurrence 0, an identical second
one (e.g. two prior-drop subsets that drew the same references) is occurrence 1, a distinct
sample. Because each method on each question has its own scope, different methods that send the
same request share its response: the SMCS referencers' answers *are* the single-model answers,
Self-MoA's K samples are majority voting's K samples. Methods are therefore compared on the same
samples (a paired comparison), and a rerun after a crash replays every committed response.

Seeds: when the run sends a seed, the cache replaces it by one derived from the request's key,
so the same request (and occurrence) is generated with the same seed by every method, and
repeated occurrences get different seeds.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from smcs_graph._sqlite import open_wal

__all__ = ["CachedChatModel", "CallCache", "CallScope", "call_key", "call_scope"]


@dataclass
class CallScope:
    """Occurrence counters of identical requests within one method run on one question."""

    label: str
    counters: dict[str, int] = field(default_factory=dict)

    def next_occurrence(self, base_key: str) -> int:
        occurrence = self.counters.get(base_key, 0)
        self.counters[base_key] = occurrence + 1
        return occurrence


_SCOPE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar(
    "smcs_eval_call_scope", default=None
)


@contextmanager
def call_scope(label: str) -> Iterator[CallScope]:
    """Run the enclosed calls (and the tasks they start) in a fresh `CallScope`."""
    scope = CallScope(label)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def _message_payload(messages: Sequence[BaseMessage]) -> list[list[Any]]:
    return [[m.type, m.content] for m in messages]


def call_key(
    model: str, messages: Sequence[BaseMessage], settings: Mapping[str, Any], occurrence: int
) -> str:
    """SHA-256 over the model, messages, settings (the seed excluded) and occurrence."""
    payload = {
        "model": model,
        "messages": _message_payload(messages),
        "settings": {k: v for k, v in settings.items() if k != "seed"},
        "seeded": "seed" in settings,
        "occurrence": occurrence,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _to_stored(message: AIMessage) -> dict[str, Any]:
    metadata = message.response_metadata or {}
    return {
        "content": message.content,
        "usage": dict(message.usage_metadata) if message.usage_metadata else None,
        "logprobs": metadata.get("logprobs"),
        "finish_reason": metadata.get("finish_reason"),
        "model_name": metadata.get("model_name"),
    }


def _from_stored(stored: Mapping[str, Any]) -> AIMessage:
    metadata = {
        key: stored[key]
        for key in ("logprobs", "finish_reason", "model_name")
        if stored.get(key) is not None
    }
    return AIMessage(
        content=stored["content"],
        usage_metadata=stored.get("usage"),
        response_metadata=metadata,
    )


class CallCache:
    """Model responses on disk (SQLite, WAL): each new response is one committed transaction.

    `path=None` keeps the cache in memory (not resumable). Use it from one event loop thread.
    Identical requests in flight at once are made once: the later ones wait for the first.
    """

    def __init__(self, path: str | Path | None) -> None:
        self._path = None if path is None else Path(path).expanduser()
        self._db = open_wal(
            self._path,
            [
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, model TEXT NOT NULL,"
                " response TEXT NOT NULL, created REAL NOT NULL)"
            ],
            what="a call cache",
            hint="give the path of a cache written by `smcs eval`, or a new file",
        )
        self._inflight: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.hits = 0
        """Requests answered from the cache in this process."""
        self.calls = 0
        """Requests sent to a model in this process (each one paid for)."""

    @property
    def path(self) -> Path | None:
        return self._path

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT response FROM calls WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put(self, key: str, model: str, response: Mapping[str, Any]) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(response, ensure_ascii=False, default=str), time.time()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    async def fetch(
        self, key: str, model: str, call: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """The stored response for `key`, else `call()`'s, committed before it is returned."""
        stored = self.get(key)
        if stored is not None:
            self.hits += 1
            return stored
        pending = self._inflight.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
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


def _is_transient(exc: BaseException) -> bool:
    from smcs_graph.profiling import is_transient

    return is_transient(exc)


class CachedChatModel(BaseChatModel):
    """A pool model behind the evaluation's call cache (async only).

    `model_id` names the real model in cache keys, so aliases of one model (Self-MoA's K
    samplers) share its responses. At most `max_concurrency` uncached calls run at once;
    transient errors (connection, timeout, 5xx, 408, 429) are retried `retries` times with
    exponential backoff.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: BaseChatModel
    model_id: str
    store: CallCache
    max_concurrency: int = 4
    retries: int = 2
    backoff_s: float = 1.0

    _slots: asyncio.Semaphore | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "smcs-eval-cached"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError("the evaluation's cached models are async: use ainvoke")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        settings = dict(kwargs)
        if stop:
            settings["stop"] = stop
        scope = _SCOPE.get()
        base = call_key(self.model_id, messages, settings, 0)
        occurrence = scope.next_occurrence(base) if scope is not None else 0
        key = base if occurrence == 0 else call_key(self.model_id, messages, settings, occurrence)
        if "seed" in kwargs:
            kwargs["seed"] = int(key[:8], 16) & 0x7FFFFFFF
        stored = await self.store.fetch(
            key, self.model_id, lambda: self._call(messages, stop, kwargs)
        )
        return ChatResult(generations=[ChatGeneration(message=_from_stored(stored))])

    async def _call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        attempt = 0
        while True:
            try:
                async with self._slots:
                    reply = await self.inner.ainvoke(messages, stop=stop, **kwargs)
            except Exception as exc:
                if attempt >= self.retries or not _is_transient(exc):
                    raise
                await asyncio.sleep(self.backoff_s * (2**attempt) * (0.5 + random.random()))
                attempt += 1
                continue
            if not isinstance(reply, AIMessage):
                raise TypeError(f"model {self.model_id!r} returned {type(reply).__name__}")
            return _to_stored(reply)

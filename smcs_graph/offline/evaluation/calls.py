"""Model calls of an evaluation, made once each: a call cache on disk and a caching chat model.

Every evaluated method asks the pool's models through `CachedChatModel`, which answers from the
offline jobs' `ResponseCache` (`smcs_graph.offline.cache`) keyed by the real model, the messages,
the generation settings and an *occurrence* number. The occurrence counts identical requests
within one `CallScope` (one method on one question): the first request of a scope is occurrence
0, an identical second one (e.g. two prior-drop subsets that drew the same references) is
occurrence 1, a distinct sample. Because each method on each question has its own scope,
different methods that send the same request share its response: the SMCS referencers' answers
*are* the single-model answers, Self-MoA's K samples are majority voting's K samples. Methods are
therefore compared on the same samples (a paired comparison), and a rerun after a crash replays
every committed response.

Seeds: when the run sends a seed, the cache replaces it by one derived from the request's key,
so the same request (and occurrence) is generated with the same seed by every method, and
repeated occurrences get different seeds.

Each call of a scope is logged in `CallScope.log` (`callpath.CallLog`: stage, model, text, the
token limit reached, and the seconds the call took when it was made, which the cache keeps), for
the method's wall time and truncation (`smcs_graph.offline.evaluation.callpath`).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr

from smcs_graph.answers import hit_limit
from smcs_graph.offline.cache import CachedResponse, ResponseCache, RetryPolicy, request_key
from smcs_graph.offline.evaluation.callpath import CallLog

__all__ = ["CachedChatModel", "CallScope", "call_key", "call_scope"]


@dataclass
class CallScope:
    """Occurrence counters of identical requests within one method run on one question."""

    label: str
    counters: dict[str, int] = field(default_factory=dict)
    log: list[CallLog] = field(default_factory=list)
    """The scope's calls, in the order they returned."""

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
    """The cache key over the model, messages, settings (the seed excluded) and occurrence."""
    return request_key(
        model,
        {
            "messages": _message_payload(messages),
            "settings": {k: v for k, v in settings.items() if k != "seed"},
            "seeded": "seed" in settings,
            "occurrence": occurrence,
        },
    )


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
    store: ResponseCache
    max_concurrency: int = 4
    retries: int = 2
    backoff_s: float = 1.0

    _slots: asyncio.Semaphore | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "smcs-eval-cached"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
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
        if scope is not None:
            scope.log.append(_log_entry(self.model_id, messages, settings, stored, run_manager))
        return ChatResult(generations=[ChatGeneration(message=stored.to_message())])

    async def _call(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> CachedResponse:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        slots = self._slots

        took: list[float] = []

        async def attempt() -> BaseMessage:
            async with slots:  # held per attempt, not during the backoff
                started = time.perf_counter()
                reply = await self.inner.ainvoke(messages, stop=stop, **kwargs)
                took.append(time.perf_counter() - started)
                return reply

        reply = await RetryPolicy(self.retries, self.backoff_s).run(attempt)
        if not isinstance(reply, AIMessage):
            raise TypeError(f"model {self.model_id!r} returned {type(reply).__name__}")
        # The successful attempt's own seconds: no queueing, no backoff.
        return dataclasses.replace(CachedResponse.from_message(reply), seconds=round(took[-1], 4))


def _stage(run_manager: AsyncCallbackManagerForLLMRun | None) -> str:
    """The SMCS stage the call ran for (its `smcs:<stage>` tag; "call" when untagged)."""
    tags = run_manager.tags if run_manager is not None else []
    stages = [t[5:] for t in tags if t.startswith("smcs:") and not t.startswith("smcs:model:")]
    return stages[-1] if stages else "call"


def _log_entry(
    model: str,
    messages: Sequence[BaseMessage],
    settings: Mapping[str, Any],
    stored: CachedResponse,
    run_manager: AsyncCallbackManagerForLLMRun | None,
) -> CallLog:
    last = messages[-1] if messages else None
    limit = settings.get("max_tokens")
    return CallLog(
        stage=_stage(run_manager),
        model=model,
        seconds=stored.seconds,
        text=stored.text,
        hit_limit=hit_limit(stored.to_message(), limit if isinstance(limit, int) else None),
        prefilled=str(last.content) if isinstance(last, AIMessage) else None,
    )

"""What every node shares: the services it calls, the run's config, and one guarded model call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime

from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.pool import Pool, PoolModel
from smcs_graph.state import CallRecord, Failure

T = TypeVar("T")

# Timeouts of synchronous calls: the call runs here and the node waits at most the timeout. A
# timed-out call cannot be killed, only abandoned; its thread finishes on its own.
_TIMEOUT_EXECUTOR = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="smcs-call")


@dataclass(frozen=True)
class Services:
    """What the nodes call: the pool, the question bank and the embedder."""

    pool: Pool
    bank: QuestionBank
    embedder: Embedder
    config: SMCSConfig


def run_config(services: Services) -> SMCSConfig:
    """This run's SMCSConfig: the graph context if one was given, else the graph's default."""
    context: Any = None
    try:
        context = get_runtime().context
    except RuntimeError:  # called outside a graph run
        context = None
    if context is None:
        return services.config
    if isinstance(context, SMCSConfig):
        return context
    if isinstance(context, Mapping):  # plain JSON: the fields it sets override the graph's
        base = services.config
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return SMCSConfig.from_mapping({**fields, **context})
    raise TypeError(f"graph context must be an SMCSConfig or a mapping, got {type(context)}")


def progress(event: Mapping[str, Any]) -> None:
    """Emit a stage event on the graph's `custom` stream (a no-op outside streaming)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(dict(event))


def dual_node(
    sync_fn: Callable[..., T], async_fn: Callable[..., Coroutine[Any, Any, T]], name: str
) -> RunnableLambda[Any, T]:
    """A node with both a sync and an async body, so `invoke` and `ainvoke` both run natively."""
    return RunnableLambda(sync_fn, afunc=async_fn, name=name)


def _record(
    stage: str,
    member: PoolModel,
    index: int,
    started: float,
    message: AIMessage | None,
    error: BaseException | None,
) -> CallRecord:
    usage: Mapping[str, Any] = (message.usage_metadata if message is not None else None) or {}
    record = CallRecord(
        stage=stage,
        model=member.name,
        index=index,
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        total_tokens=int(usage.get("total_tokens", 0)),
        cost=member.cost(usage),
        seconds=round(time.perf_counter() - started, 4),
        ok=error is None,
    )
    if error is not None:
        record["error"] = describe_error(error)
    return record


def describe_error(error: BaseException) -> str:
    if isinstance(error, TimeoutError | concurrent.futures.TimeoutError | asyncio.TimeoutError):
        return "TimeoutError: no answer within the configured timeout"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _as_ai_message(result: Any, model_name: str) -> AIMessage:
    if not isinstance(result, AIMessage):
        raise TypeError(f"model {model_name!r} returned {type(result).__name__}, not an AIMessage")
    return result


@dataclass(frozen=True)
class CallOutcome:
    message: AIMessage | None
    record: CallRecord
    failure: Failure | None


def _outcome(
    stage: str,
    member: PoolModel,
    index: int,
    started: float,
    message: AIMessage | None,
    error: BaseException | None,
) -> CallOutcome:
    failure = (
        Failure(stage=stage, model=member.name, index=index, error=describe_error(error))
        if error is not None
        else None
    )
    return CallOutcome(message, _record(stage, member, index, started, message, error), failure)


def call_model(
    stage: str,
    member: PoolModel,
    index: int,
    messages: Sequence[BaseMessage],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    config: RunnableConfig | None,
    model: Any = None,
) -> CallOutcome:
    """One guarded synchronous call: endpoint concurrency cap, timeout, usage and cost."""
    runnable: Any = model if model is not None else member.chat_model
    started = time.perf_counter()
    try:
        if member.slots is not None:
            member.slots.acquire()
        try:
            if timeout is None:
                result = runnable.invoke(list(messages), config=config, **kwargs)
            else:
                future = _TIMEOUT_EXECUTOR.submit(
                    runnable.invoke, list(messages), config=config, **kwargs
                )
                result = future.result(timeout=timeout)
        finally:
            if member.slots is not None:
                member.slots.release()
        return _outcome(stage, member, index, started, _as_ai_message(result, member.name), None)
    except Exception as exc:  # a failing model is recorded, never fatal by itself
        return _outcome(stage, member, index, started, None, exc)


async def acall_model(
    stage: str,
    member: PoolModel,
    index: int,
    messages: Sequence[BaseMessage],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    config: RunnableConfig | None,
    model: Any = None,
) -> CallOutcome:
    """The async twin of `call_model`."""
    runnable = model if model is not None else member.chat_model
    started = time.perf_counter()
    try:
        if member.slots is not None:
            await asyncio.to_thread(member.slots.acquire)
        try:
            coro = runnable.ainvoke(list(messages), config=config, **kwargs)
            result = await (coro if timeout is None else asyncio.wait_for(coro, timeout))
        finally:
            if member.slots is not None:
                member.slots.release()
        return _outcome(stage, member, index, started, _as_ai_message(result, member.name), None)
    except Exception as exc:
        return _outcome(stage, member, index, started, None, exc)


def child_config(config: RunnableConfig | None, stage: str, model: str) -> RunnableConfig:
    """Config for an inner model call: tagged with the stage so tracing and streams can tell."""
    tags = [f"smcs:{stage}", f"smcs:model:{model}"]
    merged: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    merged["tags"] = [*(merged.get("tags") or []), *tags]
    merged["run_name"] = f"smcs:{stage}:{model}"
    return merged

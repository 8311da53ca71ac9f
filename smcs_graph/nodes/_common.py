"""What every node shares: the services it calls, the run's settings, and one guarded model call.

A model call (`ModelCall`, run by `call_model` or `acall_model`) waits for an endpoint slot,
calls the model and records tokens, cost, time and outcome, all under one deadline
(`call_deadline`), at which it is cancelled (`nodes/_deadline.py`). Its outcome feeds the
model's circuit breaker (`PoolModel.health`), which `select_priors` reads. A reply that its
token limit cut off before its family's final answer gets one recovery follow-up within the
same deadline (`nodes/_recovery.py`); `answer_call` builds a call with the family's limit.

Every node runs natively under both `invoke` and `ainvoke` (`dual_node`): `model_call_node`
builds the two that call a model, `threaded_node` those whose body blocks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.config import get_stream_writer
from langgraph.runtime import get_runtime

from smcs_graph import answers
from smcs_graph._input import message_text
from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.models import Pool, PoolModel
from smcs_graph.models.prompts import model_messages
from smcs_graph.nodes._deadline import (
    CallCancelled,
    acquire_slot,
    async_native,
    cancellable,
    in_own_thread,
    run_sync,
    wait_in_thread,
)
from smcs_graph.nodes._recovery import follow_up_call, recovered_outcome, time_left
from smcs_graph.state import CallRecord, Failure, Recovery, Skip, SMCSState

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    """What the nodes call: the pool, the question bank and the embedder; and the graph's
    default settings, for runs that give no context."""

    pool: Pool
    bank: QuestionBank
    embedder: Embedder
    settings: SMCSConfig


def run_settings(services: Services) -> SMCSConfig:
    """This run's settings: the graph context if one was given, else the graph's default."""
    context: Any = None
    try:
        context = get_runtime().context
    except RuntimeError:  # called outside a graph run
        context = None
    if context is None:
        return services.settings
    if isinstance(context, SMCSConfig):
        return context
    if isinstance(context, Mapping):  # plain JSON: the fields it sets override the graph's
        base = services.settings
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
        return SMCSConfig.from_mapping({**fields, **context})
    raise TypeError(f"graph context must be an SMCSConfig or a mapping, got {type(context)}")


def failure_summary(state: SMCSState) -> str:
    """The run's failed calls in one line, for the error that ends a run."""
    failures = state.get("failures") or []
    if not failures:
        return "no failure was recorded"
    return "; ".join(f"{f['stage']} {f['model']}#{f['index']}: {f['error']}" for f in failures)


EMPTY_ANSWER = "EmptyAnswer: the model returned no text"
"""A referencer's failure when its reply had no text (e.g. only tool calls): the model is up,
so it stays an aggregator candidate (it may be the one that calls the tools)."""


def next_aggregator(state: SMCSState, after: str | None) -> tuple[str | None, list[Skip]]:
    """The aggregator candidate after `after` (None: the first) that did not fail in this run
    (an empty answer is no failure of the model), and the candidates passed over on the way.
    A fixed aggregator is the only candidate."""
    selection = state["selection"]
    candidates = selection["aggregators"]
    start = 0 if after is None else candidates.index(after) + 1
    failed = {f["model"]: f for f in state.get("failures") or []}
    skipped: list[Skip] = []
    for name in candidates[start:]:
        failure = failed.get(name)
        if failure is None or failure["error"] == EMPTY_ANSWER or len(candidates) == 1:
            return name, skipped
        role = "a referencer" if failure["stage"] == "referencer" else "an aggregator"
        reason = f"failed as {role} in this run ({failure['error']})"
        skipped.append(Skip(model=name, stage="aggregate", reason=reason))
    return None, skipped


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


def call_deadline(member: PoolModel, stage_timeout: float | None) -> float | None:
    """Seconds a call to `member` may take in all: the pool entry's `timeout_s`, capped by the
    stage's timeout setting (None: no deadline; only a pool model built with `timeout_s=None`
    and a run with no stage timeout)."""
    limits = [t for t in (member.timeout_s, stage_timeout) if t is not None]
    return min(limits) if limits else None


def _malformed(error: BaseException) -> bool:
    """Whether `error` says the endpoint's body was not a chat completion (not JSON, not
    UTF-8, or not the expected shape), whatever wrapped it."""
    kinds: tuple[type[BaseException], ...] = (UnicodeDecodeError, json.JSONDecodeError)
    try:
        import openai

        kinds = (*kinds, openai.APIResponseValidationError)
    except ImportError:  # pragma: no cover - langchain-openai depends on it
        pass
    seen: BaseException | None = error
    for _ in range(5):  # the exception, then what it was raised from
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe_error(
    error: BaseException, member: PoolModel | None = None, deadline: float | None = None
) -> str:
    """One line for the trace: what failed, in words a user can act on."""
    if isinstance(error, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        within = f"{deadline:g} s" if deadline is not None else "the configured timeout"
        return f"TimeoutError: no answer within {within} (every attempt included)"
    if isinstance(error, CallCancelled):
        return f"Cancelled: {error}"
    if _malformed(error):
        url = getattr(member.chat_model, "openai_api_base", None) if member else None
        where = f"the endpoint {url}" if url else "the endpoint"
        model = f" for model {member.name!r}" if member else ""
        return (
            f"MalformedResponse: {where} returned a malformed response{model} (not a JSON "
            "chat completion); check that base_url points at an OpenAI-compatible API"
        )
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _as_ai_message(result: Any, model_name: str) -> AIMessage:
    if not isinstance(result, AIMessage):
        raise TypeError(f"model {model_name!r} returned {type(result).__name__}, not an AIMessage")
    return result


@dataclass(frozen=True)
class ModelCall:
    """One model call of a stage: `index` numbers it within the stage (a referencer's rank, an
    aggregation's index), `timeout` is the stage's timeout setting, `config` the caller's run
    config (the call runs under `child_config` of it) and `model` the runnable to call (None:
    `member.chat_model`; e.g. one with tools bound). `family` is the answer contract the
    conversation states, `max_tokens` the call's output-token limit (None: the model's own);
    with `recover`, a reply cut off at that limit before its final answer gets one follow-up
    (`nodes/_recovery.py`). `recovery` marks the follow-up itself."""

    stage: str
    member: PoolModel
    index: int
    messages: Sequence[BaseMessage]
    kwargs: Mapping[str, Any]
    timeout: float | None
    config: RunnableConfig | None
    model: Any = None
    family: str | None = None
    max_tokens: int | None = None
    recover: bool = False
    recovery: bool = False

    @property
    def runnable(self) -> Any:
        return self.model if self.model is not None else self.member.chat_model

    @property
    def run_config(self) -> RunnableConfig:
        return child_config(self.config, self.stage, self.member.name)


def answer_family(messages: Sequence[BaseMessage]) -> str | None:
    """The answer contract the latest user message states (`answers.detect_family`)."""
    for message in reversed(messages):
        if message.type == "human":
            return answers.detect_family(message_text(message))
    return None


def answer_call(
    stage: str,
    member: PoolModel,
    index: int,
    messages: Sequence[BaseMessage],
    settings: SMCSConfig,
    timeout: float | None,
    config: RunnableConfig | None,
    *,
    family: str | None = None,
    seed_offset: int = 0,
    model: Any = None,
    fusion: bool = False,
) -> ModelCall:
    """A call that answers the conversation under `settings`: its family's token limit
    (`tokens_for`) and `answer_recovery`, in the messages `member` is sent
    (`models.prompts.model_messages`: its system prompt, and unless `fusion`, its template).
    `family` None: `answer_family(messages)`."""
    family = family if family is not None else answer_family(messages)
    messages = model_messages(member, family, messages, template=not fusion)
    kwargs = member.call_kwargs(
        settings, seed_offset=seed_offset, max_tokens=settings.tokens_for(family)
    )
    limit = kwargs.get("max_tokens", getattr(member.chat_model, "max_tokens", None))
    return ModelCall(
        stage,
        member,
        index,
        messages,
        kwargs,
        timeout,
        config,
        model=model,
        family=family,
        max_tokens=limit if isinstance(limit, int) and not isinstance(limit, bool) else None,
        recover=settings.answer_recovery,
    )


@dataclass(frozen=True)
class CallOutcome:
    """A call's reply (None: it failed), its record, its failure; and, when a recovery
    follow-up ran, the follow-up's record and what it did (`message` is then the finished
    reply, or the original when the follow-up failed)."""

    message: AIMessage | None
    record: CallRecord
    failure: Failure | None
    follow_up: CallRecord | None = None
    recovery: Recovery | None = None

    @property
    def records(self) -> list[CallRecord]:
        """Every call made: the call, then its follow-up (calls, tokens and cost count both)."""
        return [self.record] if self.follow_up is None else [self.record, self.follow_up]


def _outcome(
    call: ModelCall,
    started: float,
    message: AIMessage | None,
    error: BaseException | None,
    deadline: float | None,
    *,
    breaker: bool = True,
) -> CallOutcome:
    member = call.member
    usage: Mapping[str, Any] = (message.usage_metadata if message is not None else None) or {}
    record = CallRecord(
        stage=call.stage,
        model=member.name,
        index=call.index,
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        total_tokens=int(usage.get("total_tokens", 0)),
        cost=member.cost(usage),
        seconds=round(time.perf_counter() - started, 4),
        ok=error is None,
    )
    if call.recovery:
        record["recovery"] = True
    elif message is not None:
        record["hit_limit"] = answers.hit_limit(message, call.max_tokens)
    failure = None
    if error is not None:
        record["error"] = describe_error(error, member, deadline)
        failure = Failure(
            stage=call.stage, model=member.name, index=call.index, error=record["error"]
        )
    if breaker and not isinstance(error, CallCancelled):  # an interrupt says nothing of it
        member.health.record(failure["error"] if failure else None)
    return CallOutcome(message, record, failure)


async def _guarded(call: ModelCall, deadline: float | None) -> Any:
    """The call itself: slot, model, release; cancelled at the deadline."""
    member, messages = call.member, list(call.messages)
    async with asyncio.timeout(deadline):
        await acquire_slot(member.slots)
        try:
            if async_native(member.chat_model):
                return await call.runnable.ainvoke(messages, config=call.run_config, **call.kwargs)
            # No async implementation: a thread of its own, left behind at the deadline.
            future = in_own_thread(
                call.runnable.invoke, messages, config=call.run_config, **call.kwargs
            )
            return await asyncio.wrap_future(future)
        finally:
            if member.slots is not None:
                member.slots.release()


async def acall_model(call: ModelCall) -> CallOutcome:
    """One guarded call: endpoint slot, the call and the client's retries, all within one
    deadline (`call_deadline(member, timeout)`), then usage, cost and the breaker's record;
    then, for a reply cut off before its final answer, the recovery follow-up in what is left
    of that deadline (`nodes/_recovery.py`)."""
    deadline = call_deadline(call.member, call.timeout)
    started = time.perf_counter()
    try:
        message = _as_ai_message(await _guarded(call, deadline), call.member.name)
    except Exception as exc:  # a failing model is recorded, never fatal by itself
        return _outcome(call, started, None, exc, deadline)
    outcome = _outcome(call, started, message, None, deadline)
    follow = follow_up_call(call, message)
    if follow is None:
        return outcome
    left, begun = time_left(deadline, started), time.perf_counter()
    try:
        if left is not None and left <= 0:
            return _no_time(call, outcome, follow, begun)
        reply = _as_ai_message(await _guarded(follow, left), call.member.name)
    except Exception as exc:  # the original reply stands
        return recovered_outcome(call, outcome, _outcome(follow, begun, None, exc, left))
    return recovered_outcome(call, outcome, _outcome(follow, begun, reply, None, left))


def _no_time(call: ModelCall, outcome: CallOutcome, follow: ModelCall, begun: float) -> CallOutcome:
    """The deadline left no time for the follow-up: recorded as failed, the model not blamed."""
    error = TimeoutError("no time left before the call's deadline for the recovery follow-up")
    failed = _outcome(follow, begun, None, error, 0.0, breaker=False)
    return recovered_outcome(call, outcome, failed)


def _invoke_holding_slot(call: ModelCall, deadline: float | None) -> Any:
    """A sync call on its own thread: the slot is held until the call really ends."""
    slots = call.member.slots
    if slots is not None and not slots.acquire(timeout=deadline):
        raise TimeoutError("no endpoint slot came free")
    try:
        return call.runnable.invoke(list(call.messages), config=call.run_config, **call.kwargs)
    finally:
        if slots is not None:
            slots.release()


def call_model(call: ModelCall) -> CallOutcome:
    """The sync twin of `acall_model`. OpenAI-compatible clients: the same coroutine, on the
    private call loop (cancelled at the deadline); other models: `invoke` on a thread of its
    own, waited for up to the deadline (see `nodes/_deadline.py`)."""
    started = time.perf_counter()
    if cancellable(call.member.chat_model):
        try:
            return run_sync(acall_model(call))
        except CallCancelled as exc:  # refused or cancelled on the way (interrupt, exit)
            return _outcome(call, started, None, exc, None)
    deadline = call_deadline(call.member, call.timeout)
    try:
        result = wait_in_thread(deadline, _invoke_holding_slot, call, deadline)
        message = _as_ai_message(result, call.member.name)
    except Exception as exc:  # a failing model is recorded, never fatal by itself
        return _outcome(call, started, None, exc, deadline)
    outcome = _outcome(call, started, message, None, deadline)
    follow = follow_up_call(call, message)
    if follow is None:
        return outcome
    left, begun = time_left(deadline, started), time.perf_counter()
    try:
        if left is not None and left <= 0:
            return _no_time(call, outcome, follow, begun)
        reply = _as_ai_message(
            wait_in_thread(left, _invoke_holding_slot, follow, left), call.member.name
        )
    except Exception as exc:  # the original reply stands
        return recovered_outcome(call, outcome, _outcome(follow, begun, None, exc, left))
    return recovered_outcome(call, outcome, _outcome(follow, begun, reply, None, left))


def model_call_node(
    name: str,
    services: Services,
    prepare: Callable[[Services, Any, RunnableConfig], ModelCall],
    finish: Callable[[Any, CallOutcome], dict[str, Any]],
) -> RunnableLambda[Any, dict[str, Any]]:
    """A node that makes one model call per task: `prepare(services, task, config)` says which,
    and `finish(task, outcome)` turns its outcome into the state update; `invoke` runs the call
    with `call_model`, `ainvoke` with `acall_model`."""

    def node(task: Any, config: RunnableConfig) -> dict[str, Any]:
        return finish(task, call_model(prepare(services, task, config)))

    async def anode(task: Any, config: RunnableConfig) -> dict[str, Any]:
        return finish(task, await acall_model(prepare(services, task, config)))

    return dual_node(node, anode, name)


def threaded_node(
    name: str, body: Callable[[Services, SMCSState], dict[str, Any]], services: Services
) -> RunnableLambda[Any, dict[str, Any]]:
    """A node whose body blocks (embedding, Chroma, numpy): `invoke` runs it as is, `ainvoke`
    on a worker thread, off the event loop (e.g. the LangGraph dev server's)."""

    def node(state: SMCSState) -> dict[str, Any]:
        return body(services, state)

    async def anode(state: SMCSState) -> dict[str, Any]:
        return await asyncio.to_thread(body, services, state)

    return dual_node(node, anode, name)


def child_config(config: RunnableConfig | None, stage: str, model: str) -> RunnableConfig:
    """Config for an inner model call: tagged with the stage so tracing and streams can tell."""
    tags = [f"smcs:{stage}", f"smcs:model:{model}"]
    merged: RunnableConfig = dict(config or {})  # type: ignore[assignment]
    merged["tags"] = [*(merged.get("tags") or []), *tags]
    merged["run_name"] = f"smcs:{stage}:{model}"
    return merged

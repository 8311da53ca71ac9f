"""Answer recovery in the guarded model call: a reply without its family's final answer (cut off
at its token limit, or, where the contract says so, ended without one: `answers.needs_recovery`)
is continued once from the family's forced prefix (`answers.recovery_messages`), by the same
model under the same slot rules, within what is left of the call's deadline (`nodes/_common.py`
runs it).

The follow-up is a call of its own in the trace (`CallRecord.recovery`), so calls, tokens and
cost count it; the original call's record says whether it hit its limit (`hit_limit`) and
whether the follow-up found a final answer (`recovered`). A follow-up that fails leaves the
original reply as it was. A fusion's perplexity scores the tokens the model generated: the
reply's logprobs, then the follow-up's when it returned them (the forced prefix is not
scored: the model did not choose it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage

from smcs_graph import answers
from smcs_graph._input import message_text
from smcs_graph.state import Recovery

if TYPE_CHECKING:
    from smcs_graph.nodes._common import CallOutcome, ModelCall

ENDING_CHARS = 120
"""Characters of the follow-up's ending kept in the trace (`Recovery.ending`)."""


def follow_up_call(call: ModelCall, message: AIMessage) -> ModelCall | None:
    """The follow-up that finishes `message`, the reply to `call` (None: none is needed)."""
    if not call.recover or call.recovery or call.family is None:
        return None
    if not answers.needs_recovery(call.family, message, call.max_tokens):
        return None
    tokens = answers.CONTRACTS[call.family].recovery_tokens
    kwargs = dict(call.kwargs)
    if "max_tokens" in kwargs:  # a model that takes no sampling kwargs keeps its own limit
        kwargs["max_tokens"] = tokens
    return dataclasses.replace(
        call,
        messages=answers.recovery_messages(call.messages, message_text(message), call.family),
        kwargs=kwargs,
        max_tokens=tokens,
        recovery=True,
    )


def time_left(deadline: float | None, started: float) -> float | None:
    """Seconds of the call's deadline left for the follow-up (None: no deadline)."""
    return None if deadline is None else deadline - (time.perf_counter() - started)


def recovered_outcome(call: ModelCall, original: CallOutcome, follow: CallOutcome) -> CallOutcome:
    """`original`, the outcome of `call`, with its follow-up: the finished reply when the
    follow-up answered, else the original reply; both records, and the `Recovery` for the
    trace."""
    assert original.message is not None and call.family is not None  # see `follow_up_call`
    record, family = original.record, call.family
    recovery = Recovery(
        stage=record["stage"],
        model=record["model"],
        index=record["index"],
        family=family,
        max_tokens=call.max_tokens,
        cut=answers.hit_limit(original.message, call.max_tokens),
        answered=False,
        ending="",
    )
    message = original.message
    if follow.message is not None:
        message = answers.recovered_message(original.message, follow.message, family)
        partial = message_text(original.message)
        recovery["answered"] = answers.final_answer(family, message_text(message)) is not None
        recovery["ending"] = message_text(message)[len(partial) :].strip()[:ENDING_CHARS]
        metadata = dict(message.response_metadata)
        metadata["smcs_recovery"] = {**metadata["smcs_recovery"], **_where(recovery)}
        logprobs = _joined_logprobs(original.message, follow.message)
        if logprobs is not None:
            metadata["logprobs"] = logprobs
        message = message.model_copy(update={"response_metadata": metadata})
    return dataclasses.replace(
        original,
        message=message,
        record={**record, "recovered": recovery["answered"]},
        follow_up=follow.record,
        recovery=recovery,
    )


def _where(recovery: Recovery) -> dict[str, Any]:
    """Which call was finished, and at what limit (added to `smcs_recovery`)."""
    return {
        "stage": recovery["stage"],
        "model": recovery["model"],
        "index": recovery["index"],
        "max_tokens": recovery["max_tokens"],
    }


def _joined_logprobs(original: AIMessage, follow: AIMessage) -> dict[str, Any] | None:
    """The generated tokens' logprobs: the reply's (without a trailing end-of-sequence entry),
    then the follow-up's when it has them; None when the reply had none."""
    first = _content(original)
    if first is None:
        return None
    while first and _end_of_sequence(first[-1]):
        first = first[:-1]
    return {"content": [*first, *(_content(follow) or [])]}


def _content(message: AIMessage) -> list[Mapping[str, Any]] | None:
    logprobs = (message.response_metadata or {}).get("logprobs")
    content: Sequence[Mapping[str, Any]] | None = (
        logprobs.get("content") if isinstance(logprobs, Mapping) else None
    )
    return list(content) if content else None


def _end_of_sequence(entry: Mapping[str, Any]) -> bool:
    return entry.get("token") == "" and not entry.get("bytes")

"""OpenAI response shapes for one SMCS answer: the completion body and its SSE stream.

SMCS knows its answer only after scoring every aggregation, so a stream sends the role chunk
at once, SSE comments as keep-alives while the run goes on, then the answer in one content (or
tool-call) chunk, the finish chunk and, with `stream_options.include_usage`, the usage chunk.
A trace, when asked for, is a top-level `smcs_trace` field (of the body, or of the finish
chunk); the answer text never carries it. The run's id (for `POST /v1/feedback`) is always there,
as a top-level `smcs_run_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage

from smcs_graph._input import message_text
from smcs_graph.server.errors import run_error
from smcs_graph.server.request import ChatRequest

__all__ = ["Completion", "trace_summary"]


@dataclass(frozen=True)
class Completion:
    """One chat completion's answer to `chat`, as a JSON body or as server-sent events."""

    chat: ChatRequest
    model: str
    """The model id the client asked for."""
    id: str
    created: int

    @classmethod
    def start(cls, chat: ChatRequest, model: str) -> Completion:
        """A new completion id, created now."""
        return cls(chat, model, f"chatcmpl-{uuid.uuid4().hex}", int(time.time()))

    def body(self, message: AIMessage) -> dict[str, Any]:
        """The `chat.completion` body for the run's answer (with the trace when asked for)."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": _message_body(message),
                    "logprobs": None,
                    "finish_reason": _finish_reason(message),
                }
            ],
            "usage": _usage(message),
        }
        if run_id := _trace(message).get("run_id"):
            body["smcs_run_id"] = run_id  # what POST /v1/feedback names the run by
        if self.chat.trace:
            body["smcs_trace"] = _trace(message)
        return body

    async def events(self, task: asyncio.Task[AIMessage], keepalive_s: float) -> AsyncIterator[str]:
        """The SSE stream of the run `task`; cancels the run if the client goes away."""
        try:
            yield self._chunk(choices=_choice({"role": "assistant", "content": ""}))
            while True:
                done, _ = await asyncio.wait({task}, timeout=keepalive_s)
                if done:
                    break
                yield ": keep-alive\n\n"
            if task.cancelled():  # the client went away: nobody is reading
                return
            try:
                message = task.result()
            except Exception as exc:
                # Headers (200) are gone already: report in-band, as OpenAI's API does.
                yield f"data: {json.dumps(run_error(exc).body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            if message.tool_calls:
                calls = [{"index": i, **call} for i, call in enumerate(_tool_calls(message))]
                yield self._chunk(choices=_choice({"tool_calls": calls}))
            elif text := message_text(message):
                yield self._chunk(choices=_choice({"content": text}))
            extra: dict[str, Any] = {}
            if run_id := _trace(message).get("run_id"):
                extra["smcs_run_id"] = run_id
            if self.chat.trace:
                extra["smcs_trace"] = _trace(message)
            yield self._chunk(choices=_choice({}, _finish_reason(message)), **extra)
            if self.chat.include_usage:
                yield self._chunk(choices=[], usage=_usage(message))
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():  # the client went away: stop the run
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _chunk(self, **fields: Any) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            **fields,
        }
        if self.chat.include_usage and "usage" not in body:
            body["usage"] = None
        return f"data: {json.dumps(body, default=str)}\n\n"


def trace_summary(message: AIMessage) -> str:
    """One header line: who answered, who aggregated, which candidate won, cost."""
    trace = _trace(message)
    return json.dumps(
        {
            "referencers": trace.get("referencers"),
            "aggregator": trace.get("aggregator"),
            "chosen": trace.get("chosen"),
            "candidates": len(trace.get("candidates") or []),
            "perplexity_available": trace.get("perplexity_available"),
            "cost": trace.get("cost"),
        },
        separators=(",", ":"),
    )


def _trace(message: AIMessage) -> dict[str, Any]:
    return message.response_metadata.get("smcs_trace") or {}


def _finish_reason(message: AIMessage) -> str:
    return "tool_calls" if message.tool_calls else "stop"


def _choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]


def _message_body(message: AIMessage) -> dict[str, Any]:
    text = message_text(message)
    body: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not message.tool_calls else None,
    }
    if message.tool_calls:
        body["tool_calls"] = _tool_calls(message)
    return body


def _usage(message: AIMessage) -> dict[str, int]:
    usage: Mapping[str, Any] = message.usage_metadata or {}
    prompt = int(usage.get("input_tokens", 0))
    completion = int(usage.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


def _tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in message.tool_calls
    ]

"""Test doubles: a scripted chat model with simulated latency, logprobs, failures and tools.

For unit tests and benchmarks of code built on smcs-graph; never used by the library itself.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, PrivateAttr

Reply = str | AIMessage
Responder = Callable[[list[BaseMessage], dict[str, Any]], Reply]
Latency = float | Callable[[list[BaseMessage], dict[str, Any]], float]


class FakeChatModel(BaseChatModel):
    """A chat model that answers from a script.

    `responses` are cycled in call order; `respond(messages, kwargs)` computes a reply instead.
    Each reply gets OpenAI-format token logprobs (one per whitespace token, `token_logprob`
    each, then the empty end-of-sequence entry llama.cpp appends) unless `logprobs` is False,
    and usage metadata (tokens counted by whitespace). `latency_s` (seconds, or a function of
    the call's messages and kwargs) sleeps, with asyncio.sleep in async calls; `error` is raised
    on every call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_name: str = "fake"
    responses: Sequence[Reply] = ("ok",)
    respond: Responder | None = None
    latency_s: Latency = 0.0
    logprobs: bool = True
    token_logprob: float = -0.5
    error: BaseException | None = None

    _cycle: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    call_log_size: int = 1000
    """How many recent calls `calls` keeps (bounded, so a long-running server on fakes does not
    grow without end)."""
    _calls: deque[dict[str, Any]] = PrivateAttr(default_factory=deque)

    @property
    def _llm_type(self) -> str:
        return "fake-chat"

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The most recent calls (up to `call_log_size`): their messages and keyword arguments."""
        return list(self._calls)

    def _delay(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> float:
        if callable(self.latency_s):
            return float(self.latency_s(messages, kwargs))
        return float(self.latency_s)

    def _reply(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> ChatResult:
        """The call's reply, logged in `calls`; `error`, when set, is raised instead."""
        if self.error is not None:
            raise self.error
        with self._lock:
            self._calls.append({"messages": messages, "kwargs": kwargs})
            while len(self._calls) > self.call_log_size:
                self._calls.popleft()
            if self.respond is None:
                if self._cycle is None:
                    self._cycle = itertools.cycle(self.responses)
                reply: Reply = next(self._cycle)
        if self.respond is not None:  # outside the lock: scripted replies may run concurrently
            reply = self.respond(messages, kwargs)
        message = reply if isinstance(reply, AIMessage) else AIMessage(content=reply)
        text = message.content if isinstance(message.content, str) else ""
        tokens = text.split()
        metadata = dict(message.response_metadata)
        if self.logprobs and "logprobs" not in metadata:
            content = [
                {"token": t, "logprob": self.token_logprob, "top_logprobs": []} for t in tokens
            ]
            metadata["logprobs"] = {"content": [*content, {"token": "", "logprob": 0.0}]}
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        message = message.model_copy(
            update={
                "response_metadata": {**metadata, "model_name": self.model_name},
                "usage_metadata": message.usage_metadata
                or {
                    "input_tokens": prompt_tokens,
                    "output_tokens": len(tokens),
                    "total_tokens": prompt_tokens + len(tokens),
                },
            }
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        delay = self._delay(messages, kwargs)
        if delay:
            time.sleep(delay)
        return self._reply(messages, kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        delay = self._delay(messages, kwargs)
        if delay:
            await asyncio.sleep(delay)
        return self._reply(messages, kwargs)

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

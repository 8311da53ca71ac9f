"""`SMCSChatModel`: the SMCS graph as a drop-in LangChain chat model.

What it streams: SMCS knows its answer only after every aggregation has been scored, so
`stream`/`astream` yield the chosen answer as one chunk (with usage and the trace) when the run
ends. Stage progress is observable through the graph's own streaming: stream the graph directly
(`stream_mode="updates"` for node updates, `"custom"` for per-call progress events), or, when
this model runs inside a LangGraph graph, stream the parent with `subgraphs=True`. Inner model
calls are tagged `nostream`, so they do not leak into a parent's `messages` stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph.state import CompiledStateGraph
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from smcs_graph._input import retrieval_query
from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.errors import ConfigError
from smcs_graph.feedback import FeedbackResult, apply_feedback
from smcs_graph.graph import build_graph, runnable_config
from smcs_graph.models import Pool
from smcs_graph.nodes import cancel_calls_on_interrupt

_SETTING_FIELDS = frozenset(f.name for f in dataclasses.fields(SMCSConfig))


class SMCSChatModel(BaseChatModel):
    """A chat model whose every answer is an SMCS run over a pool of chat models.

    Per-call overrides: any `SMCSConfig` field as a keyword (`model.invoke(msgs, k=3)` or
    `model.bind(n_aggregations=4)`). Tools bound with `bind_tools` go to the aggregator; when
    the chosen aggregation calls tools, those tool calls are returned. The run's trace is in
    `response_metadata["smcs_trace"]`; `usage_metadata` sums every underlying call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pool: Pool
    bank: QuestionBank
    embedder: Embedder | None = None
    config: SMCSConfig = Field(default_factory=SMCSConfig)
    """The model's default settings (`settings=` is accepted as an alias)."""
    runs: Any = True
    """Where runs are kept for `feedback`: True (beside an on-disk bank), a path, a
    `RunStore`, or False (see `build_graph`)."""

    _graph: CompiledStateGraph[Any, Any, Any, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _lift_config_fields(cls, values: Any) -> Any:
        """`SMCSChatModel(pool=..., bank=..., temperature=0, max_tokens=100)`: SMCSConfig fields
        given as constructor keywords (as LangChain's standard parameters are) go into `config`;
        so does `settings=`, the package's name for an SMCSConfig value."""
        if not isinstance(values, dict):
            return values
        if "settings" in values:
            if "config" in values:
                raise ConfigError("give SMCSChatModel settings= or config=, not both")
            values = {("config" if k == "settings" else k): v for k, v in values.items()}
        lifted = {k: values[k] for k in values if k in _SETTING_FIELDS}
        if not lifted:
            return values
        rest = {k: v for k, v in values.items() if k not in lifted}
        base = rest.get("config")
        if isinstance(base, SMCSConfig):
            rest["config"] = base.replace(**lifted)
        else:
            rest["config"] = SMCSConfig.from_mapping({**(base or {}), **lifted})
        return rest

    @property
    def settings(self) -> SMCSConfig:
        """The model's default settings (the `config` field)."""
        return self.config

    @property
    def _llm_type(self) -> str:
        return "smcs"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters: provider "smcs"; temperature and max tokens of the run."""
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="smcs",
            ls_model_name=model if isinstance(model, str) else "smcs",
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.config.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.config.max_tokens),
        )
        if stop:
            params["ls_stop"] = stop
        return params

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"pool": self.pool.names, **dataclasses.asdict(self.config)}

    @property
    def graph(self) -> CompiledStateGraph[Any, Any, Any, Any]:
        """The compiled SMCS graph this model runs (no checkpointer: it is one model call)."""
        if self._graph is None:
            self._graph = build_graph(
                self.pool, self.bank, self.embedder, self.config, runs=self.runs
            ).compile(checkpointer=False, name="smcs")
        return self._graph

    def feedback(
        self,
        run_id: str,
        *,
        gold: str | Mapping[str, Any] | None = None,
        correct: bool | None = None,
        verdicts: Mapping[str, bool] | None = None,
        family: str | None = None,
    ) -> FeedbackResult:
        """The outcome of the run `run_id` (its trace's `run_id`) grows the bank: a `gold`
        answer, a verdict on the final answer (`correct`), or `verdicts` per referencer
        (`smcs_graph.feedback.apply_feedback`)."""
        return apply_feedback(
            self.bank,
            run_id,
            gold=gold,
            correct=correct,
            verdicts=verdicts,
            family=family,
            runs=self.runs,
        )

    async def afeedback(
        self,
        run_id: str,
        *,
        gold: str | Mapping[str, Any] | None = None,
        correct: bool | None = None,
        verdicts: Mapping[str, bool] | None = None,
        family: str | None = None,
    ) -> FeedbackResult:
        """`feedback` off the event loop (grading and the bank write block)."""
        return await asyncio.to_thread(
            self.feedback, run_id, gold=gold, correct=correct, verdicts=verdicts, family=family
        )

    def _prepare(
        self, messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], SMCSConfig]:
        tools = kwargs.pop("tools", None) or []
        tool_choice = kwargs.pop("tool_choice", None)
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in _SETTING_FIELDS}
        unknown = [k for k in kwargs if not k.startswith("ls_")]
        if unknown:
            raise ConfigError(
                f"SMCSChatModel got unknown keyword argument(s) {unknown}; it accepts tools, "
                f"tool_choice, stop and SMCSConfig fields ({', '.join(sorted(_SETTING_FIELDS))})"
            )
        retrieval_query(messages)  # reject empty or non-text input before any model call
        settings = self.config.replace(**overrides) if overrides else self.config
        state = {"messages": messages, "tools": tools, "tool_choice": tool_choice}
        return state, settings

    @staticmethod
    def _run_config(settings: SMCSConfig, callbacks: Any) -> RunnableConfig:
        return runnable_config(settings, callbacks=callbacks, tags=["nostream", "smcs"])

    @staticmethod
    def _result(output: dict[str, Any], stop: list[str] | None) -> ChatResult:
        message: AIMessage = output["messages"][-1]
        if stop and isinstance(message.content, str):
            cut = min((i for s in stop if (i := message.content.find(s)) >= 0), default=-1)
            if cut >= 0:
                message = message.model_copy(update={"content": message.content[:cut]})
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"smcs_trace": output.get("trace")},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        state, settings = self._prepare(messages, kwargs)
        callbacks = _child_callbacks(run_manager)
        with cancel_calls_on_interrupt():  # Ctrl-C ends the run now, not at its calls' deadlines
            output = self.graph.invoke(
                state, self._run_config(settings, callbacks), context=settings
            )
        return self._result(output, stop)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        state, settings = self._prepare(messages, kwargs)
        callbacks = _child_callbacks(run_manager)
        output = await self.graph.ainvoke(
            state, self._run_config(settings, callbacks), context=settings
        )
        return self._result(output, stop)

    @staticmethod
    def _as_chunk(result: ChatResult) -> ChatGenerationChunk:
        message = result.generations[0].message
        assert isinstance(message, AIMessage)
        chunk = AIMessageChunk(
            content=message.content,
            usage_metadata=message.usage_metadata,
            response_metadata=message.response_metadata,
            tool_call_chunks=[
                tool_call_chunk(
                    name=call["name"],
                    args=_json(call["args"]),
                    id=call.get("id"),
                    index=i,
                )
                for i, call in enumerate(message.tool_calls)
            ],
            chunk_position="last",
        )
        return ChatGenerationChunk(message=chunk)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunk = self._as_chunk(self._generate(messages, stop, run_manager, **kwargs))
        if run_manager:
            run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
        yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunk = self._as_chunk(await self._agenerate(messages, stop, run_manager, **kwargs))
        if run_manager:
            await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
        yield chunk

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the aggregator receives them; a chosen aggregation's tool calls return."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)


def _child_callbacks(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> CallbackManager | AsyncCallbackManager | None:
    """Callbacks for the inner graph run, nested under this model's run (LLM run managers have
    no `get_child`; this is what it does for chain runs)."""
    if run_manager is None:
        return None
    manager_cls = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    manager = manager_cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager


def _json(value: Any) -> str:
    import json

    return json.dumps(value)

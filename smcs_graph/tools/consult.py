"""`SMCSConsultTool`: an agent asks the SMCS ensemble a hard sub-question."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, ToolException
from langgraph.graph import StateGraph
from pydantic import BaseModel, ConfigDict, Field

from smcs_graph._input import message_text
from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError, InvalidQuestionError, SMCSError
from smcs_graph.graph import runnable_config

DEFAULT_DESCRIPTION = (
    "Consult an ensemble of language models on a hard, self-contained sub-question (a "
    "calculation, a piece of code, a fact to double-check). Several models answer it "
    "independently and the best synthesis of their answers is returned. Slower and costlier "
    "than answering yourself: use it when a second, collective opinion matters. The ensemble "
    "does not see this conversation, so put every needed fact into the question."
)


class ConsultInput(BaseModel):
    """Arguments of the consult tool."""

    question: str = Field(
        description=(
            "The sub-question to put to the ensemble, self-contained: include every fact, "
            "number or code it needs; the ensemble does not see the conversation."
        ),
        min_length=1,
    )


class SMCSConsultTool(BaseTool):
    """Ask the SMCS ensemble a question; the answer is the tool's output.

    `content_and_artifact`: the agent reads the answer (plus, with `include_summary`, one line
    naming the models that answered and the aggregator); the full SMCS trace is the tool
    message's `artifact`, for the application, never shown to the agent's model.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "consult_ensemble"
    description: str = DEFAULT_DESCRIPTION
    args_schema: type[BaseModel] = ConsultInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True  # a failed ensemble run is reported to the agent, not raised

    target: Runnable[Any, Any]
    """An `SMCSChatModel` or a compiled SMCS graph."""
    include_summary: bool = False
    """Append one line saying which models answered and which one aggregated."""
    include_run_id: bool = False
    """Append the run's id (`[run id: ...]`), for an agent that reports outcomes with the
    feedback tool (`make_feedback_tool`)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """SMCSConfig fields applied to every consultation (e.g. {"k": 3})."""

    def _call(self, question: str, callbacks: Any) -> tuple[Any, RunnableConfig, dict[str, Any]]:
        """Input, run config and keywords for one consultation of the model or the graph."""
        if isinstance(self.target, SMCSChatModel):
            return [HumanMessage(question)], {"callbacks": callbacks}, dict(self.overrides)
        settings = _graph_settings(self.target, self.overrides)
        run = runnable_config(settings, callbacks=callbacks)
        return {"question": question}, run, {"context": settings}

    def _output(self, result: Any) -> tuple[str, dict[str, Any]]:
        if isinstance(result, AIMessage):
            answer, trace = message_text(result), result.response_metadata.get("smcs_trace")
        elif isinstance(result, Mapping):
            answer, trace = str(result.get("answer", "")), result.get("trace")
        else:  # pragma: no cover - guarded by make_consult_tool
            raise TypeError(f"unexpected SMCS output {type(result).__name__}")
        trace = dict(trace or {})
        notes = [summary(trace)] if self.include_summary and trace else []
        if self.include_run_id and trace.get("run_id"):
            notes.append(f"run id: {trace['run_id']}")
        if notes:
            answer = f"{answer}\n\n[{'; '.join(notes)}]"
        return answer, trace

    def _run(
        self, question: str, run_manager: CallbackManagerForToolRun | None = None
    ) -> tuple[str, dict[str, Any]]:
        payload, run, kwargs = self._call(
            question, run_manager.get_child() if run_manager else None
        )
        try:
            result = self.target.invoke(payload, run, **kwargs)
        except (SMCSError, InvalidQuestionError, ConfigError) as exc:
            raise ToolException(f"the ensemble could not answer: {exc}") from exc
        return self._output(result)

    async def _arun(
        self, question: str, run_manager: AsyncCallbackManagerForToolRun | None = None
    ) -> tuple[str, dict[str, Any]]:
        payload, run, kwargs = self._call(
            question, run_manager.get_child() if run_manager else None
        )
        try:
            result = await self.target.ainvoke(payload, run, **kwargs)
        except (SMCSError, InvalidQuestionError, ConfigError) as exc:
            raise ToolException(f"the ensemble could not answer: {exc}") from exc
        return self._output(result)


def _graph_settings(graph: Runnable[Any, Any], overrides: Mapping[str, Any]) -> SMCSConfig:
    """A consultation's settings: the graph's defaults (its context schema's, as `build_graph`
    set them) with `overrides` applied."""
    schema = getattr(graph, "context_schema", None)
    if not (isinstance(schema, type) and issubclass(schema, SMCSConfig)):
        schema = SMCSConfig
    defaults = schema()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(SMCSConfig)}
    return SMCSConfig.from_mapping({**fields, **overrides})


def summary(trace: Mapping[str, Any]) -> str:
    """One line: who answered, who aggregated, how many candidates were scored."""
    referencers = ", ".join(trace.get("referencers") or []) or "none"
    candidates = len(trace.get("candidates") or [])
    return (
        f"answered by {referencers}; aggregated by {trace.get('aggregator')}; best of "
        f"{candidates} candidate fusion(s)"
    )


def make_consult_tool(
    model_or_graph: SMCSChatModel | Runnable[Any, Any] | StateGraph[Any, Any, Any, Any],
    *,
    name: str = "consult_ensemble",
    description: str = DEFAULT_DESCRIPTION,
    include_summary: bool = False,
    include_run_id: bool = False,
    **overrides: Any,
) -> SMCSConsultTool:
    """A tool that consults SMCS: `model_or_graph` is an `SMCSChatModel`, a compiled SMCS
    graph, or an uncompiled one from `build_graph` (compiled here without a checkpointer).
    `overrides` are SMCSConfig fields for every consultation (validated now). The trace (the
    artifact) always carries the run's id; `include_run_id` also shows it to the agent."""
    if overrides:
        SMCSConfig.from_mapping(overrides)  # fail at construction, not at the agent's first call
    target: Runnable[Any, Any]
    if isinstance(model_or_graph, StateGraph):
        target = model_or_graph.compile(checkpointer=False, name="smcs")
    elif isinstance(model_or_graph, Runnable):
        target = model_or_graph
    else:
        raise ConfigError(
            "make_consult_tool needs an SMCSChatModel or an SMCS graph from build_graph "
            f"(got {type(model_or_graph).__name__})"
        )
    return SMCSConsultTool(
        name=name,
        description=description,
        target=target,
        include_summary=include_summary,
        include_run_id=include_run_id,
        overrides=overrides,
    )

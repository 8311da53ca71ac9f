"""The SMCS graph's state: what flows between nodes, and the trace it produces.

Lists filled by parallel branches (references, candidates, calls, failures) use an appending
reducer; `select_priors` overwrites them at the start of every run so that a checkpointed thread
does not mix turns.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class SupportExample(TypedDict):
    """A bank question in the support set (a few are kept for the trace)."""

    id: str
    question: str
    family: str
    similarity: float


class Selection(TypedDict):
    """What Retrieval-based Prior Selection decided for this question."""

    question: str
    bank_size: int
    support_size: int
    threshold: float
    priors: dict[str, float]
    referencers: list[str]
    aggregator: str
    k_requested: int
    k_used: int
    support_examples: list[SupportExample]
    notes: list[str]


class Reference(TypedDict):
    """One referencer's answer."""

    model: str
    rank: int
    text: str


class Candidate(TypedDict):
    """One aggregation: the aggregator's fusion of one prior-drop subset."""

    index: int
    subset: list[str]
    message: AIMessage
    logprobs: list[float] | None


class CallRecord(TypedDict):
    """One model call: who, for which stage, tokens, cost, time and outcome."""

    stage: str
    model: str
    index: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost: float
    seconds: float
    ok: bool
    error: NotRequired[str]


class Failure(TypedDict):
    """A call that raised or timed out; the run goes on without it while it can."""

    stage: str
    model: str
    index: int
    error: str


class SMCSInput(TypedDict, total=False):
    """Input: a conversation (the latest user message drives retrieval), optional tools."""

    messages: Annotated[list[AnyMessage], add_messages]
    question: str
    tools: list[dict[str, Any]]
    tool_choice: Any


class SMCSOutput(TypedDict, total=False):
    """Output: the conversation with the chosen answer appended, the answer text, the trace."""

    messages: Annotated[list[AnyMessage], add_messages]
    answer: str
    trace: dict[str, Any]


class SMCSState(SMCSInput, SMCSOutput, total=False):
    """Full state of one run."""

    selection: Selection
    started_at: float
    references: Annotated[list[Reference], operator.add]
    subsets: list[list[str]]
    candidates: Annotated[list[Candidate], operator.add]
    calls: Annotated[list[CallRecord], operator.add]
    failures: Annotated[list[Failure], operator.add]


class ReferencerTask(TypedDict):
    """Payload of one `Send` to the referencer node."""

    model: str
    rank: int
    messages: list[AnyMessage]


class AggregationTask(TypedDict):
    """Payload of one `Send` to the aggregate node."""

    index: int
    aggregator: str
    subset: list[str]
    references: list[Reference]
    messages: list[AnyMessage]
    tools: list[dict[str, Any]]
    tool_choice: Any

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

TRACE_DIGITS = 6
"""Decimals of priors and scores in the trace (for people and JSON). The graph computes with
full precision: state holds exact values and only the trace rounds."""


class SupportExample(TypedDict):
    """A bank question in the support set (a few are kept for the trace)."""

    id: str
    question: str
    family: str
    similarity: float


class Skip(TypedDict):
    """A model passed over: by the circuit breaker when referencers are chosen (stage
    "select_priors"), or as an aggregator candidate (stage "aggregate")."""

    model: str
    stage: str
    reason: str


class Selection(TypedDict):
    """What Retrieval-based Prior Selection decided for this question."""

    question: str
    bank_size: int
    support_size: int
    threshold: float
    priors: dict[str, float]
    """Every pool model's prior, at full precision (prior drop samples from these)."""
    referencers: list[str]
    aggregator: str
    aggregators: list[str]
    """Aggregator candidates in failover order: the fixed aggregator alone, else the
    referencers by prior."""
    k_requested: int
    k_used: int
    support_examples: list[SupportExample]
    notes: list[str]
    skipped: list[Skip]
    n_used: NotRequired[int]
    """Aggregations planned: `n_aggregations`, less what `max_calls` cut (0: no fusion)."""


class Reference(TypedDict):
    """One referencer's answer."""

    model: str
    rank: int
    text: str
    logprobs: NotRequired[list[float] | None]
    """Its token logprobs, kept under `references_as_candidates` (for the hybrid score)."""
    recovery: NotRequired[dict[str, Any]]
    """Set when the reply was cut off and finished by a follow-up (`answers.recovered_message`'s
    `smcs_recovery`)."""


class Candidate(TypedDict):
    """One aggregation: the aggregator's fusion of one prior-drop subset."""

    index: int
    subset: list[str]
    aggregator: str
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
    hit_limit: NotRequired[bool]
    """The reply reached its output-token limit (set on every call that answered)."""
    recovered: NotRequired[bool]
    """Set when a recovery follow-up ran after this call: whether a final answer was found
    after it."""
    recovery: NotRequired[bool]
    """True on the follow-up call itself (same stage, model and index as the call it
    finishes)."""


class Recovery(TypedDict):
    """A reply without its final answer (cut off at its token limit, or ended without one) and
    the follow-up that tried to finish it."""

    stage: str
    model: str
    index: int
    family: str
    max_tokens: int | None
    """The reply's limit (None: the model's own)."""
    cut: NotRequired[bool]
    """Whether the reply reached its limit (False: it ended without a final answer; absent in
    traces written before replies that ended were finished too: True)."""
    answered: bool
    """Whether a final answer was found after the follow-up."""
    ending: str
    """The forced prefix and what the follow-up wrote (e.g. "The answer is (B)"); empty when
    the follow-up failed."""


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
    aggregator: str
    """The aggregator candidate whose fusions run now (see `Selection.aggregators`)."""
    failing_over: bool
    """Set by `score` when no fusion came back and the next aggregator candidate takes over."""
    skipped: Annotated[list[Skip], operator.add]
    """Models passed over during the run (the selection's own are in `Selection.skipped`)."""
    run_notes: Annotated[list[str], operator.add]
    """What the run did beyond the selection's plan (failovers), for the trace's notes."""
    gate: dict[str, Any] | None
    """The adaptive gates' record (`nodes/gates.py`); None when no gate or cap is set."""
    deadline: float | None
    """The run's deadline (`time.time()` seconds), from `deadline_s`; None: none."""
    answer_family: str | None
    """The answer contract the latest user message states (`answers.detect_family`): it sets
    the calls' token limit and recovery; None: free text."""
    recoveries: Annotated[list[Recovery], operator.add]
    """Replies cut off at their token limit that got a recovery follow-up."""
    query_embedding: list[float]
    """The question's embedding from `select_priors`, kept with the run for feedback."""


class ReferencerTask(TypedDict):
    """Payload of one `Send` to the referencer node."""

    model: str
    rank: int
    messages: list[AnyMessage]
    deadline: NotRequired[float | None]
    """The run's deadline (`time.time()` seconds; see `deadline_s`)."""
    family: NotRequired[str | None]
    """The run's answer family (`SMCSState.answer_family`)."""


class AggregationTask(TypedDict):
    """Payload of one `Send` to the aggregate node."""

    index: int
    aggregator: str
    subset: list[str]
    references: list[Reference]
    messages: list[AnyMessage]
    tools: list[dict[str, Any]]
    tool_choice: Any
    deadline: NotRequired[float | None]
    """The run's deadline (`time.time()` seconds; see `deadline_s`)."""
    family: NotRequired[str | None]
    """The run's answer family (`SMCSState.answer_family`)."""

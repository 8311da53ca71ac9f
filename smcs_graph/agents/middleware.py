"""`SMCSRouterMiddleware`: SMCS selection for the model calls of a LangChain v1 agent.

Modes: `route` sends each call to the pool model with the highest prior for the latest user
message (one call; the agent binds its tools to that model); `ensemble` runs the SMCS graph
(an `SMCSChatModel` over the same pool and bank); `escalate` routes, and runs the ensemble when
the prior gate (`PriorGate`) says the priors do not single out one model.

The choice is made on the user's turn and kept for the whole tool loop, until the next user
message (`reroute_each_step=True` decides again at every call), so a conversation never
changes model between a tool call and its result. Every call appends a record to the agent
state's `smcs_routing` (which model answered, the decision, priors and gate; an ensemble step's
`run_id`, which `middleware.ensemble.feedback` takes), and the answer's `response_metadata`
names the model that answered (`smcs_model`).

A routed call is sent as the graph sends that model a referencer call
(`models.prompts.model_messages`), so the model gets the prompt its profile was measured with:
its pool entry's system prompt heads the agent's system message, and its template for the
conversation's family wraps the latest user message (in what is sent only; the agent's state
keeps the messages as they were). The family is the answer contract the latest user message
states (`answers.detect_family`; none stated: the free-text `instruction` template), or the
middleware's `family`; `templates=False` sends the system prompt only.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, cast, get_args

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
)
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langgraph.types import Command

from smcs_graph import answers
from smcs_graph._input import message_text, retrieval_query
from smcs_graph.agents.routing import PriorGate, RoutePriors, route_priors
from smcs_graph.bank import QuestionBank
from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.errors import ConfigError
from smcs_graph.models import Pool, PoolModel
from smcs_graph.models.prompts import TEMPLATE_FAMILIES, model_messages

__all__ = ["ENSEMBLE", "RouterMode", "SMCSRouterMiddleware", "SMCSRoutingState"]

RouterMode = Literal["route", "ensemble", "escalate"]
ENSEMBLE = "smcs"
"""The `model` a routing record names when the ensemble ran, before its aggregator is known."""


class SMCSRoutingState(AgentState[Any]):
    """Agent state with the router's record: one entry per model call, in call order."""

    smcs_routing: NotRequired[Annotated[list[dict[str, Any]], operator.add]]


@dataclass(frozen=True)
class _Plan:
    """Where one call goes: `decision` "route" (to `model`) or "ensemble"."""

    turn: str
    decision: Literal["route", "ensemble"]
    model: str
    reason: str
    priors: dict[str, float] | None
    gate: dict[str, Any] | None
    fresh: bool


class SMCSRouterMiddleware(AgentMiddleware[SMCSRoutingState, Any, Any]):
    """Route an agent's model calls over an SMCS pool by the priors of a question bank.

    `pool`, `bank` and `embedder` (default: the bank's) are those of `SMCSChatModel`;
    `settings` are the SMCS settings (prior rule, support set; the ensemble's run; the sampling
    keywords sent to a routed model). The agent's own model is never called. `escalate_threshold`
    and `escalate_margin` set the prior gate of `escalate` (see `PriorGate`). A routed model gets
    its own system prompt and, unless `templates` is False, its template for `family` (None:
    the family the latest user message states; see the module).
    """

    state_schema = SMCSRoutingState

    def __init__(
        self,
        pool: Pool,
        bank: QuestionBank,
        *,
        embedder: Embedder | None = None,
        settings: SMCSConfig | None = None,
        mode: RouterMode = "route",
        reroute_each_step: bool = False,
        escalate_threshold: float = 0.0,
        escalate_margin: float = 0.1,
        family: str | None = None,
        templates: bool = True,
    ) -> None:
        if mode not in get_args(RouterMode):
            raise ConfigError(
                f"mode must be one of {', '.join(get_args(RouterMode))} (got {mode!r})"
            )
        if family is not None and family not in TEMPLATE_FAMILIES:
            raise ConfigError(
                f"family must be one of {', '.join(TEMPLATE_FAMILIES)}, or None to detect it "
                f"from the user's message (got {family!r})"
            )
        super().__init__()
        self.pool = pool
        self.bank = bank
        self.embedder = embedder if embedder is not None else bank.embedder
        self.settings = settings if settings is not None else SMCSConfig()
        self.mode: RouterMode = mode
        self.reroute_each_step = reroute_each_step
        self.gate = PriorGate(threshold=escalate_threshold, margin=escalate_margin)
        self.family = family
        self.templates = templates
        self.ensemble = SMCSChatModel(
            pool=pool, bank=bank, embedder=self.embedder, config=self.settings
        )

    # -- the decision -------------------------------------------------------------------

    def _kept(self, request: ModelRequest[Any]) -> _Plan | None:
        """The plan already made on this user turn (None: decide now)."""
        if self.reroute_each_step:
            return None
        turn = _turn_key(request.state["messages"])
        for entry in reversed(_history(request)):
            if entry.get("turn") == turn and entry.get("mode") == self.mode:
                return _Plan(
                    turn=turn,
                    decision=entry["decision"],
                    model=entry["routed_to"],
                    reason=f"kept: decided at step {entry['decided_at']} on this user turn",
                    priors=entry["priors"],
                    gate=entry["gate"],
                    fresh=False,
                )
        return None

    def _decide(self, request: ModelRequest[Any]) -> _Plan:
        """Choose from the priors of the latest user message (blocking: embeds, reads the bank)."""
        turn = _turn_key(request.state["messages"])
        if self.mode == "ensemble":
            return _Plan(turn, "ensemble", ENSEMBLE, "mode is ensemble", None, None, True)
        priors: RoutePriors = route_priors(
            retrieval_query(_messages(request)),
            self.pool.names,
            self.bank,
            self.embedder,
            self.settings,
        )
        if self.mode == "escalate":
            gate = self.gate.decide(priors)
            if gate["uncertain"]:
                reason = f"escalated: {gate['reason']}"
                return _Plan(turn, "ensemble", ENSEMBLE, reason, priors.for_trace(), gate, True)
            reason = f"routed: {gate['reason']}"
            return _Plan(turn, "route", priors.top, reason, priors.for_trace(), gate, True)
        reason = "highest prior for the user's message"
        return _Plan(turn, "route", priors.top, reason, priors.for_trace(), None, True)

    # -- the call -----------------------------------------------------------------------

    def _routed(self, request: ModelRequest[Any], plan: _Plan) -> ModelRequest[Any]:
        if plan.decision == "ensemble":
            return request.override(model=self.ensemble)
        member = self.pool[plan.model]
        settings = {**member.call_kwargs(self.settings), **request.model_settings}
        system, messages = self._prompted(member, request)
        return request.override(
            model=member.chat_model,
            model_settings=settings,
            system_message=system,
            messages=messages,
        )

    def _prompted(
        self, member: PoolModel, request: ModelRequest[Any]
    ) -> tuple[SystemMessage | None, list[AnyMessage]]:
        """The system message and messages `member` is sent (`model_messages`)."""
        if not member.system_prompt and not (self.templates and member.templates):
            return request.system_message, list(request.messages)
        family = self.family if self.family is not None else _stated_family(_messages(request))
        head = [request.system_message] if request.system_message is not None else []
        sent = model_messages(member, family, [*head, *request.messages], template=self.templates)
        if sent and isinstance(sent[0], SystemMessage):
            return sent[0], cast("list[AnyMessage]", sent[1:])
        return None, cast("list[AnyMessage]", sent)

    def _finish(
        self, request: ModelRequest[Any], plan: _Plan, response: ModelResponse[Any] | AIMessage
    ) -> ExtendedModelResponse[Any]:
        """Name the model that answered on the message; append this call's routing record."""
        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        position = next(
            (i for i, m in reversed(list(enumerate(response.result))) if isinstance(m, AIMessage)),
            None,
        )
        answer = response.result[position] if position is not None else None
        trace = answer.response_metadata.get("smcs_trace") if answer is not None else None
        answered_by = plan.model
        priors = plan.priors
        if plan.decision == "ensemble" and isinstance(trace, dict):
            answered_by = str(trace.get("aggregator") or ENSEMBLE)
            priors = priors or trace.get("priors")
        history = _history(request)
        step = len(history) + 1
        entry = {
            "step": step,
            "turn": plan.turn,
            "mode": self.mode,
            "decision": plan.decision,
            "routed_to": plan.model,
            "model": answered_by,
            "decided_at": step if plan.fresh else _decided_at(history, plan.turn),
            "reason": plan.reason,
            "priors": priors,
            "gate": plan.gate,
            "usage": dict(answer.usage_metadata or {}) if isinstance(answer, AIMessage) else {},
            "run_id": trace.get("run_id") if isinstance(trace, dict) else None,
        }
        result = list(response.result)
        if isinstance(answer, AIMessage) and position is not None:
            metadata = {
                **answer.response_metadata,
                "smcs_model": answered_by,
                "smcs_decision": plan.decision,
                "smcs_mode": self.mode,
            }
            result[position] = answer.model_copy(update={"response_metadata": metadata})
        return ExtendedModelResponse(
            model_response=ModelResponse(
                result=result, structured_response=response.structured_response
            ),
            command=Command(update={"smcs_routing": [entry]}),
        )

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ExtendedModelResponse[Any]:
        """Send the call where the plan for this user turn says; record it."""
        plan = self._kept(request) or self._decide(request)
        return self._finish(request, plan, handler(self._routed(request, plan)))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ExtendedModelResponse[Any]:
        """As `wrap_model_call`; embedding and the bank read run off the event loop."""
        plan = self._kept(request)
        if plan is None:
            plan = await asyncio.to_thread(self._decide, request)
        return self._finish(request, plan, await handler(self._routed(request, plan)))


def _messages(request: ModelRequest[Any]) -> list[BaseMessage]:
    """The conversation the call sees, else the state's (a middleware may have trimmed it)."""
    if any(isinstance(m, HumanMessage) for m in request.messages):
        return list(request.messages)
    return list(request.state["messages"])


def _stated_family(messages: Sequence[BaseMessage]) -> str | None:
    """The answer contract the latest user message states (as the graph detects it)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return answers.detect_family(message_text(message))
    return None


def _history(request: ModelRequest[Any]) -> list[dict[str, Any]]:
    """The routing records of the run so far."""
    return list(cast("list[dict[str, Any]]", request.state.get("smcs_routing") or []))


def _turn_key(messages: Sequence[AnyMessage]) -> str:
    """Which user turn a call belongs to: the latest user message's id (or its position)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, HumanMessage):
            return message.id or f"#{index}"
    return "#none"


def _decided_at(history: Sequence[dict[str, Any]], turn: str) -> int:
    return next((e["decided_at"] for e in reversed(history) if e.get("turn") == turn), 0)

"""`SMCSDecisionModel`: SMCS prior selection as a LangChain decision model.

It answers `Choice` questions (the stock `ModelRouterMiddleware` asks one) from the priors of a
question bank, with no model call: each label's probability is its model's prior normalised
over the labels offered, and the choice is the label with the highest prior (ties: label order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from langchain_core.decisions import (
    BaseDecisionModel,
    Choice,
    ChoiceAnswer,
    ClassifierResponse,
    Question,
    State,
)
from langchain_core.messages import BaseMessage, HumanMessage
from pydantic import ConfigDict, Field

from smcs_graph._input import message_text, retrieval_query
from smcs_graph.agents.routing import candidate_names, route_priors, shares
from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.errors import ConfigError, InvalidQuestionError

__all__ = ["SMCSDecisionModel"]


class SMCSDecisionModel(BaseDecisionModel):
    """Choose among models by their SMCS priors for the state's question.

    `routes` maps a router label to the pool name the bank records (labels not in it are pool
    names themselves). `settings` supply the support set and prior rule, as for the graph.
    Answers' `probabilities` are the labels' priors normalised to sum to 1 (uniform when no
    label's model has support), `confidence` the chosen label's. The question is the state's
    latest user message (or the state itself when it is a string).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str = "smcs-priors"
    bank: QuestionBank
    embedder: Embedder | None = None
    settings: SMCSConfig = Field(default_factory=SMCSConfig)
    routes: dict[str, str] = Field(default_factory=dict)

    @property
    def _provider(self) -> str:
        return "smcs"

    def _classify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        text = _question(state)
        embedder = self.embedder if self.embedder is not None else self.bank.embedder
        answers: dict[str, Any] = {}
        for key, question in questions.items():
            if not isinstance(question, Choice):
                raise ConfigError(
                    f"SMCSDecisionModel answers Choice questions only; {key!r} is a "
                    f"{type(question).__name__}"
                )
            labels = list(question.criteria)
            names = candidate_names(labels, self.routes)
            priors = route_priors(text, names, self.bank, embedder, self.settings)
            probabilities = shares(np.asarray(priors.priors)).tolist()  # label order
            best = priors.order[0]
            answers[key] = ChoiceAnswer(
                type="choice",
                choice=labels[best],
                probabilities=_by_label(labels, probabilities),
                confidence=min(1.0, max(0.0, probabilities[best])),
            )
        return ClassifierResponse(model=self.model, answers=answers)

    async def _aclassify(self, state: State, questions: dict[str, Question]) -> ClassifierResponse:
        # Embedding and the bank read block: keep them off the event loop.
        return await asyncio.to_thread(self._classify, state, questions)


def _by_label(labels: Sequence[str], shares: Sequence[float]) -> dict[str, float]:
    return {label: float(share) for label, share in zip(labels, shares, strict=True)}


def _question(state: State) -> str:
    """The text to route on: a string state, a message, or the latest user message in a
    sequence of messages or a mapping's `messages`."""
    if isinstance(state, str):
        if not state.strip():
            raise InvalidQuestionError("the state to route on is an empty string")
        return state
    if isinstance(state, HumanMessage | BaseMessage):
        return retrieval_query([state]) if isinstance(state, HumanMessage) else message_text(state)
    messages: Any = state.get("messages") if isinstance(state, Mapping) else state
    if isinstance(messages, Sequence) and not isinstance(messages, str):
        return retrieval_query([m for m in messages if isinstance(m, BaseMessage)])
    raise InvalidQuestionError(
        "SMCSDecisionModel routes on a string, a message, or messages (under 'messages')"
    )

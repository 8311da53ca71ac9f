"""`make_rank_models_tool`: which pool models suit a question (prior selection alone)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field

from smcs_graph import core
from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import Embedder
from smcs_graph.errors import BankError
from smcs_graph.models import Pool
from smcs_graph.selection import prior_selection
from smcs_graph.state import TRACE_DIGITS

DEFAULT_DESCRIPTION = (
    "Rank the available language models for a question, without asking any of them: the "
    "question is matched against a bank of labeled questions, and each model's prior is its "
    "similarity-weighted record of correct answers on the most similar ones. Returns the models "
    "best first, each with its prior, the number of similar bank questions it was tested on "
    "and how many of those it got right. Use it to decide which model to ask or trust."
)


class RankModelsInput(BaseModel):
    """Arguments of the rank-models tool."""

    question: str = Field(
        description="The question to find the best-suited models for.", min_length=1
    )
    top: int | None = Field(
        default=None, ge=1, description="Return only the best `top` models (default: all)."
    )


class RankModelsTool(BaseTool):
    """Prior selection (RPS) as a tool: no model is called.

    Output (`content_and_artifact`): the agent reads a JSON ranking; the artifact is the same
    ranking as a dict, plus the support set's size and threshold.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "rank_models"
    description: str = DEFAULT_DESCRIPTION
    args_schema: type[BaseModel] = RankModelsInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True

    pool: Pool
    bank: QuestionBank
    embedder: Embedder
    config: SMCSConfig = Field(default_factory=SMCSConfig)
    """The settings prior selection runs under (the field keeps its documented name)."""

    def rank(self, question: str, top: int | None = None) -> dict[str, Any]:
        """The ranking as data: models best first with prior and support counts."""
        if not question.strip():
            raise ToolException("the question is empty; pass the question to rank models for")
        names = self.pool.names
        try:
            support, priors = prior_selection(
                question, names, self.bank, self.embedder, self.config
            )
        except BankError as exc:
            raise ToolException(f"the question bank could not be read: {exc}") from exc
        order = core.select_top_k(priors, len(names))  # SMCS's own order, ties by pool order
        measured = support.measured
        correct = np.where(measured, support.capability, 0.0)
        models = [
            {
                "rank": rank + 1,
                "model": names[i],
                "prior": round(float(priors[i]), TRACE_DIGITS),
                "support_questions_tested": int(measured[i].sum()),
                "support_questions_correct": int(correct[i].sum()),
            }
            for rank, i in enumerate(order[: top or len(names)])
        ]
        return {
            "question": question,
            "bank_size": support.bank_size,
            "support_size": len(support.question_ids),
            "support_families": sorted(set(support.families)),
            "models": models,
        }

    def _run(
        self,
        question: str,
        top: int | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        ranking = self.rank(question, top)
        return json.dumps(_for_agent(ranking)), ranking

    async def _arun(
        self,
        question: str,
        top: int | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        # Embedding and Chroma block: keep them off the event loop.
        ranking = await asyncio.to_thread(self.rank, question, top)
        return json.dumps(_for_agent(ranking)), ranking


def _for_agent(ranking: dict[str, Any]) -> dict[str, Any]:
    return {
        "support_size": ranking["support_size"],
        "bank_size": ranking["bank_size"],
        "models": ranking["models"],
    }


def make_rank_models_tool(
    pool: Pool,
    bank: QuestionBank,
    embedder: Embedder | None = None,
    config: SMCSConfig | None = None,
    *,
    name: str = "rank_models",
    description: str = DEFAULT_DESCRIPTION,
) -> RankModelsTool:
    """A tool that ranks `pool`'s models for a question from `bank` (no generation).

    `embedder` must be the bank's (default: `bank.embedder`); `config` (settings) supplies the
    support set's and the prior rule's settings, as for the graph (default: the paper's)."""
    return RankModelsTool(
        name=name,
        description=description,
        pool=pool,
        bank=bank,
        embedder=embedder if embedder is not None else bank.embedder,
        config=config if config is not None else SMCSConfig(),
    )

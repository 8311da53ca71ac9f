"""`SMCSFeedbackTool`: an agent reports the outcome of an ensemble consultation, and the bank
learns from it (`smcs_graph.feedback.apply_feedback`, the path `SMCSChatModel.feedback` and
`POST /v1/feedback` take)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForToolRun,
    CallbackManagerForToolRun,
)
from langchain_core.tools import BaseTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, field_validator

from smcs_graph.bank import QuestionBank
from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.errors import BankError, ConfigError
from smcs_graph.feedback import FeedbackError, apply_feedback

DEFAULT_DESCRIPTION = (
    "Report how an earlier ensemble consultation turned out, so the ensemble learns which of "
    "its models to trust on such questions. Give the run id the consultation returned (its "
    "'[run id: ...]' line) and exactly one outcome: 'gold', the right answer once you know it "
    "(each model's answer is graded against it), or 'correct', whether the ensemble's answer "
    "was right. Report each run once, and only outcomes you have checked."
)


class FeedbackInput(BaseModel):
    """Arguments of the feedback tool: a run id and exactly one outcome."""

    run_id: str = Field(
        description="The run id of the consultation (from its '[run id: ...]' line).",
        min_length=1,
    )
    gold: str | None = Field(
        default=None,
        description="The right answer to the consulted question, when known.",
    )
    correct: bool | None = Field(
        default=None,
        description="Whether the ensemble's answer was right (when the right answer is not known).",
    )
    verdicts: dict[str, bool] | None = Field(
        default=None,
        description="Per model that answered: whether its own answer was right.",
    )
    family: str | None = Field(
        default=None,
        description="How to grade 'gold': multiple_choice, math, numeric or code. Needed "
        "only when the question stated no answer format.",
    )

    @field_validator("gold", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        """A numeric gold answer (a model's `391`) is its text."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        return str(int(value)) if float(value).is_integer() else repr(value)


def _invalid_arguments(error: Any) -> str:
    """The tool error an agent reads for arguments that do not fit `FeedbackInput`."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in error.errors()
    )
    return (
        f"feedback not recorded: invalid arguments ({problems}). Call it with run_id and one "
        "of gold (the right answer), correct (true/false) or verdicts ({model: true/false})."
    )


class SMCSFeedbackTool(BaseTool):
    """Feedback on an SMCS run as a tool: the outcome grows `bank` (see `apply_feedback`).

    Output (`content_and_artifact`): the agent reads a JSON summary (status, whether the
    question was new, the model results set); the artifact is `FeedbackResult.to_json()`.
    Feedback that cannot be applied (a malformed outcome, an unknown or evicted run, a
    conflicting repeat, a read-only bank) is a tool error the agent reads, never a crash.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "smcs_feedback"
    description: str = DEFAULT_DESCRIPTION
    args_schema: type[BaseModel] = FeedbackInput
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: bool | str | Callable[[Any], str] | None = _invalid_arguments

    bank: QuestionBank
    """The bank the runs answered over."""
    runs: Any = True
    """Where the runs are kept (`apply_feedback`'s `runs`: the answering model's or graph's)."""

    def record(
        self,
        run_id: str,
        *,
        gold: str | None = None,
        correct: bool | None = None,
        verdicts: Mapping[str, bool] | None = None,
        family: str | None = None,
    ) -> dict[str, Any]:
        """Apply the outcome; the result as data. ToolException says why it was not."""
        try:
            result = apply_feedback(
                self.bank,
                run_id,
                gold=gold,
                correct=correct,
                verdicts=verdicts,
                family=family,
                runs=self.runs,
            )
        except (FeedbackError, BankError) as exc:
            raise ToolException(f"feedback not recorded: {exc}") from exc
        return result.to_json()

    def _run(
        self,
        run_id: str,
        gold: str | None = None,
        correct: bool | None = None,
        verdicts: dict[str, bool] | None = None,
        family: str | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        result = self.record(run_id, gold=gold, correct=correct, verdicts=verdicts, family=family)
        return _for_agent(result), result

    async def _arun(
        self,
        run_id: str,
        gold: str | None = None,
        correct: bool | None = None,
        verdicts: dict[str, bool] | None = None,
        family: str | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        # Grading and the bank write block: keep them off the event loop.
        result = await asyncio.to_thread(
            self.record, run_id, gold=gold, correct=correct, verdicts=verdicts, family=family
        )
        return _for_agent(result), result


def _for_agent(result: Mapping[str, Any]) -> str:
    return json.dumps(
        {
            "status": result["status"],
            "new_question": result["new_question"],
            "results_recorded": result["cells"],
            "not_recorded": result["kept"],
        }
    )


def make_feedback_tool(
    model_or_bank: SMCSChatModel | QuestionBank,
    *,
    runs: Any = None,
    name: str = "smcs_feedback",
    description: str = DEFAULT_DESCRIPTION,
) -> SMCSFeedbackTool:
    """A tool that records the outcome of an SMCS run: `model_or_bank` is the `SMCSChatModel`
    the consult tool runs (its bank and `runs`), or the bank of an SMCS graph, with `runs` the
    graph's `runs=` (default True: the store beside an on-disk bank). Pair it with
    `make_consult_tool(..., include_run_id=True)`, so the agent sees the ids it reports on."""
    if isinstance(model_or_bank, SMCSChatModel):
        bank, kept = model_or_bank.bank, model_or_bank.runs if runs is None else runs
    elif isinstance(model_or_bank, QuestionBank):
        bank, kept = model_or_bank, True if runs is None else runs
    else:
        raise ConfigError(
            "make_feedback_tool needs the SMCSChatModel that answers, or the QuestionBank an "
            f"SMCS graph answers over (with the graph's runs=); got {type(model_or_bank).__name__}"
        )
    return SMCSFeedbackTool(name=name, description=description, bank=bank, runs=kept)

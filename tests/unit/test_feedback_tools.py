"""The feedback tool: an agent reports a consultation's outcome by the run id the consult tool
showed it, and the bank gains the judged cells (fake models, hashing embedder)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from smcs_graph import ConfigError, QuestionBank, SMCSChatModel, SMCSConfig, build_graph
from smcs_graph.feedback import RunStore
from smcs_graph.testing import FakeChatModel
from smcs_graph.tools import FeedbackInput, make_consult_tool, make_feedback_tool

FAST = SMCSConfig(k=3, n_aggregations=2, n_sup_base=4, seed=1)
NEW = "What is 40 plus 2?"
MODELS = ["histo", "mathy", "weak"]
RUN_ID = re.compile(r"\[run id: ([0-9a-f]+)\]$")


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}


@pytest.fixture
def store() -> RunStore:
    return RunStore(None)


@pytest.fixture
def model(pool, bank, embedder, store) -> SMCSChatModel:
    return SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST, runs=store)


def _consult(model: SMCSChatModel, question: str = NEW) -> str:
    """The run id the consult tool shows the agent (checked against its trace)."""
    message = make_consult_tool(model, include_run_id=True).invoke(
        call("consult_ensemble", question=question)
    )
    shown = RUN_ID.search(message.content)
    assert shown is not None, message.content
    assert shown.group(1) == message.artifact["run_id"]
    assert message.content.startswith("The answer is 42.\n\n[")
    return shown.group(1)


def _cells(bank: QuestionBank, qid: str) -> dict[str, bool]:
    cap, measured = bank.capability(MODELS, [qid])
    return {m: bool(cap[i, 0]) for i, m in enumerate(MODELS) if measured[i, 0]}


def _feedback(tool: Any, **args: Any) -> ToolMessage:
    message = tool.invoke(call("smcs_feedback", **args))
    assert isinstance(message, ToolMessage)
    return message


def test_the_consult_tool_shows_the_run_id_only_when_asked(model) -> None:
    plain = make_consult_tool(model).invoke(call("consult_ensemble", question=NEW))
    assert plain.content == "The answer is 42." and plain.artifact["run_id"]
    both = make_consult_tool(model, include_summary=True, include_run_id=True).invoke(
        call("consult_ensemble", question=NEW)
    )
    assert re.fullmatch(
        r"The answer is 42\.\n\n\[answered by .+; run id: [0-9a-f]{32}\]", both.content
    )
    assert both.artifact["run_id"] != plain.artifact["run_id"]


def test_gold_through_the_tool_adds_the_question_and_the_graded_cells(model, bank) -> None:
    tool = make_feedback_tool(model)
    assert tool.name == "smcs_feedback" and tool.args_schema is FeedbackInput
    assert "run id" in tool.description
    size = len(bank)
    message = _feedback(tool, run_id=_consult(model), gold="42", family="numeric")
    assert message.status == "success"
    shown = json.loads(message.content)
    assert shown == {
        "status": "applied",
        "new_question": True,
        "results_recorded": {"mathy": True, "histo": False, "weak": False},
        "not_recorded": {},
    }
    assert len(bank) == size + 1
    assert _cells(bank, message.artifact["question_id"]) == shown["results_recorded"]
    assert bank.get([message.artifact["question_id"]])[0].question == NEW


def test_a_repeat_is_idempotent_and_a_numeric_gold_is_its_text(model, bank) -> None:
    tool = make_feedback_tool(model)
    run_id = _consult(model)
    first = _feedback(tool, run_id=run_id, gold=42, family="numeric")
    size = len(bank)
    again = _feedback(tool, run_id=run_id, gold="42", family="numeric")
    assert json.loads(first.content)["status"] == "applied"
    assert json.loads(again.content)["status"] == "already applied"
    assert len(bank) == size


def test_a_verdict_on_the_final_answer_sets_its_producers_cell(model, bank, store) -> None:
    run_id = _consult(model)
    message = _feedback(make_feedback_tool(model), run_id=run_id, correct=False)
    run = store.get(run_id)
    assert run is not None
    assert message.artifact["cells"] == dict.fromkeys(run.producers, False)
    assert _cells(bank, message.artifact["question_id"]) == message.artifact["cells"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"run_id": "0" * 32, "correct": True}, "unknown run id '0{32}'"),
        ({"gold": "42", "correct": True}, "give exactly one outcome"),
        ({}, "give exactly one outcome: 'gold'"),
        ({"verdicts": {"nobody": True}}, r"verdicts name model\(s\) \['nobody'\]"),
        ({"gold": "42", "family": "poetry"}, "poetry"),
    ],
)
def test_feedback_that_cannot_apply_is_a_tool_error_the_agent_reads(
    model, bank, args, message
) -> None:
    run_id = _consult(model)
    size = len(bank)
    reply = _feedback(make_feedback_tool(model), **{"run_id": run_id, **args})
    assert reply.status == "error"
    assert reply.content.startswith("feedback not recorded: ")
    assert re.search(message, reply.content), reply.content
    assert len(bank) == size


def test_a_conflicting_repeat_is_a_tool_error(model, bank) -> None:
    tool = make_feedback_tool(model)
    run_id = _consult(model)
    _feedback(tool, run_id=run_id, correct=True)
    reply = _feedback(tool, run_id=run_id, correct=False)
    assert reply.status == "error" and "already has different feedback" in reply.content


@pytest.mark.parametrize(
    ("args", "field"),
    [({"correct": "perhaps"}, "correct"), ({"run_id": 7, "correct": True}, "run_id")],
)
def test_arguments_that_do_not_fit_are_a_tool_error_not_a_crash(model, args, field) -> None:
    reply = _feedback(make_feedback_tool(model), **{"run_id": _consult(model), **args})
    assert reply.status == "error"
    assert reply.content.startswith(f"feedback not recorded: invalid arguments ({field}: ")
    assert "Call it with run_id and one of gold" in reply.content


def test_a_read_only_bank_is_a_tool_error(tmp_path, pool, embedder, monkeypatch) -> None:
    bank = QuestionBank.open(tmp_path / "bank", embedder)
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)
    run_id = _consult(model)
    size = len(bank)
    monkeypatch.setattr("os.access", lambda path, mode: False)
    reply = _feedback(make_feedback_tool(model), run_id=run_id, correct=True)
    assert reply.status == "error" and "read-only" in reply.content
    assert len(bank) == size


def test_a_bank_that_keeps_no_runs_is_a_tool_error(pool, bank, embedder) -> None:
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)
    reply = _feedback(make_feedback_tool(model), run_id=_consult(model), correct=True)
    assert reply.status == "error" and "keeps no runs" in reply.content


async def test_async_feedback(model, bank) -> None:
    run_id = _consult(model)
    reply = await make_feedback_tool(model).ainvoke(
        call("smcs_feedback", run_id=run_id, gold="42", family="numeric")
    )
    assert reply.status == "success" and reply.artifact["cells"]["mathy"] is True


def test_a_graphs_bank_and_runs(pool, bank, embedder, store) -> None:
    graph = build_graph(pool, bank, embedder, FAST, runs=store)
    message = make_consult_tool(graph, include_run_id=True).invoke(
        call("consult_ensemble", question=NEW)
    )
    run_id = message.artifact["run_id"]
    assert message.content.endswith(f"[run id: {run_id}]")
    reply = _feedback(make_feedback_tool(bank, runs=store), run_id=run_id, gold="42")
    assert reply.status == "error" and "send 'family'" in reply.content  # no contract stated
    reply = _feedback(
        make_feedback_tool(bank, runs=store), run_id=run_id, gold="42", family="numeric"
    )
    assert reply.artifact["cells"] == {"mathy": True, "histo": False, "weak": False}


def test_construction_errors() -> None:
    with pytest.raises(ConfigError, match="needs the SMCSChatModel that answers"):
        make_feedback_tool("a model")  # type: ignore[arg-type]


def _reporting_agent(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """The agent's model: consult, then report the gold answer under the id it was shown."""
    last = messages[-1]
    if isinstance(last, ToolMessage) and last.name == "consult_ensemble":
        shown = RUN_ID.search(str(last.content))
        assert shown is not None
        return AIMessage(
            "", tool_calls=[call("smcs_feedback", run_id=shown.group(1), gold=42, family="numeric")]
        )
    if isinstance(last, ToolMessage):
        return AIMessage(f"Reported: {last.content}")
    return AIMessage("", tool_calls=[call("consult_ensemble", question=NEW)])


def test_an_agent_consults_then_reports_the_outcome(model, bank) -> None:
    size = len(bank)
    tools = [make_consult_tool(model, include_run_id=True), make_feedback_tool(model)]
    agent = create_agent(model=FakeChatModel(respond=_reporting_agent), tools=tools)
    result = agent.invoke({"messages": [("user", "Work out 40 + 2, then tell me.")]})
    report = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.name == "smcs_feedback"
    )
    assert report.status == "success" and report.artifact["status"] == "applied"
    assert len(bank) == size + 1
    assert _cells(bank, report.artifact["question_id"])["mathy"] is True

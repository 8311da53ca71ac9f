"""Agent tools: consult the ensemble, rank the pool's models (fake models, hashing embedder)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from pydantic import ValidationError

from smcs_graph import ConfigError, HashingEmbedder, SMCSChatModel, SMCSConfig, build_graph
from smcs_graph.testing import FakeChatModel
from smcs_graph.tools import (
    ConsultInput,
    RankModelsInput,
    make_consult_tool,
    make_rank_models_tool,
)
from tests.unit.conftest import HISTORY, MATH, make_pool

FAST = SMCSConfig(k=3, n_aggregations=3, n_sup_base=4, seed=1)


def tool_call(name: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": "call-1", "type": "tool_call"}


@pytest.fixture
def model(pool, bank, embedder) -> SMCSChatModel:
    return SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)


def test_consult_tool_schema_and_description(model) -> None:
    tool = make_consult_tool(model)
    assert tool.name == "consult_ensemble"
    assert "ensemble" in tool.description and "self-contained" in tool.description
    assert tool.args_schema is ConsultInput
    assert tool.tool_call_schema.model_json_schema()["required"] == ["question"]
    with pytest.raises(ValidationError):
        tool.invoke({"question": ""})


def test_consult_returns_the_answer_and_keeps_the_trace_as_artifact(model, fakes) -> None:
    message = make_consult_tool(model).invoke(tool_call("consult_ensemble", question="12 + 30?"))
    assert isinstance(message, ToolMessage)
    assert message.content == "The answer is 42."
    assert message.artifact["referencers"] == ["mathy", "histo", "weak"]
    assert all(f.calls for f in fakes.values())


def test_consult_summary_names_who_answered(model) -> None:
    tool = make_consult_tool(model, include_summary=True, k=2)
    content = tool.invoke(tool_call("consult_ensemble", question="What is 12 plus 30?")).content
    answer, summary = content.split("\n\n")
    assert answer == "The answer is 42."
    assert summary == (
        "[answered by mathy, histo; aggregated by mathy; best of 3 candidate fusion(s)]"
    )


@pytest.mark.parametrize("compiled", [True, False])
async def test_consult_a_graph_compiled_or_not(pool, bank, embedder, compiled) -> None:
    builder = build_graph(pool, bank, embedder, FAST)
    target = builder.compile() if compiled else builder
    tool = make_consult_tool(target, k=1)
    message = await tool.ainvoke(tool_call("consult_ensemble", question="What is 12 plus 30?"))
    assert message.content == "The answer is 42."
    assert message.artifact["referencers"] == ["mathy"]  # the k=1 override reached the run


def test_a_failed_consultation_is_reported_to_the_agent(bank, embedder) -> None:
    broken = make_pool(mathy=FakeChatModel(error=ConnectionError("down")))
    model = SMCSChatModel(pool=broken, bank=bank, embedder=embedder, config=FAST)
    message = make_consult_tool(model).invoke(tool_call("consult_ensemble", question="2 + 2?"))
    assert message.status == "error"
    assert "the ensemble could not answer" in message.content and "down" in message.content


def test_consult_tool_construction_errors(model) -> None:
    with pytest.raises(ConfigError, match="needs an SMCSChatModel"):
        make_consult_tool("a model")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown SMCS setting"):
        make_consult_tool(model, colour="red")


def _consulting_agent_model(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """The agent's own model: consult the ensemble once, then report what it said."""
    if isinstance(messages[-1], ToolMessage):
        return AIMessage(f"The ensemble says: {messages[-1].content}")
    return AIMessage(
        "",
        tool_calls=[tool_call("consult_ensemble", question="What is 12 plus 30?")],
    )


def test_an_agent_consults_the_ensemble(model, fakes) -> None:
    agent_model = FakeChatModel(respond=_consulting_agent_model)
    agent = create_agent(model=agent_model, tools=[make_consult_tool(model)])
    result = agent.invoke({"messages": [("user", "Please work out 12 + 30 carefully.")]})
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert tool_message.content == "The answer is 42."
    assert tool_message.artifact["aggregator"] == "mathy"
    assert result["messages"][-1].content == "The ensemble says: The answer is 42."
    assert agent_model.calls[0]["kwargs"]["tools"][0]["function"]["name"] == "consult_ensemble"


def test_rank_models_puts_the_right_specialist_first_without_generating(
    pool, bank, embedder, fakes
) -> None:
    tool = make_rank_models_tool(pool, bank, embedder, FAST)
    assert tool.args_schema is RankModelsInput
    math = tool.invoke(tool_call("rank_models", question="What is 12 plus 30?"))
    ranking = json.loads(math.content)
    assert [m["model"] for m in ranking["models"]] == ["mathy", "histo", "weak"]
    assert [m["rank"] for m in ranking["models"]] == [1, 2, 3]
    best = ranking["models"][0]
    assert best["prior"] > 0
    assert best["support_questions_tested"] == ranking["support_size"] > 0
    assert best["support_questions_correct"] >= 1
    assert ranking["models"][2]["support_questions_correct"] == 0
    assert math.artifact["support_families"]
    history = tool.invoke(tool_call("rank_models", question="When did the Berlin Wall fall?"))
    assert json.loads(history.content)["models"][0]["model"] == "histo"
    assert all(not f.calls for f in fakes.values())  # prior selection alone


def priors_by_hand(embedder: HashingEmbedder, question: str) -> dict[str, float]:
    """Eqs. 3-4 on the conftest bank with numpy alone: cosine similarities to the 12 bank
    questions, the support set S >= gamma * (N_sup_base-th largest S), and V[m] = sum of S over
    the support questions model m answered right (mathy: math, histo: history, weak: none)."""
    vectors = np.asarray(embedder.embed([question, *MATH, *HISTORY]), dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit[1:] @ unit[0]
    threshold = FAST.gamma * np.sort(sims)[::-1][FAST.n_sup_base - 1]
    support = sims >= threshold
    right = {
        "mathy": np.arange(12) < len(MATH),
        "histo": np.arange(12) >= len(MATH),
        "weak": np.zeros(12, dtype=bool),
    }
    return {model: float(sims[support & mask].sum()) for model, mask in right.items()}


@pytest.mark.parametrize("question", ["Compute the sum of 7 and 8.", "When did Rome fall?"])
async def test_rank_models_priors_are_eq_4_and_the_graph_uses_them(
    model, pool, bank, embedder, question
) -> None:
    tool = make_rank_models_tool(pool, bank, embedder, FAST)
    expected = priors_by_hand(embedder, question)
    assert sorted(expected.values()) != [0.0, 0.0, 0.0]  # the support set has evidence
    ranking = tool.rank(question)
    got = {m["model"]: m["prior"] for m in ranking["models"]}
    assert got == pytest.approx(expected, abs=1e-6)
    assert [m["model"] for m in ranking["models"]] == sorted(
        expected, key=lambda name: (-expected[name], pool.names.index(name))
    )
    trace = (await model.ainvoke(question)).response_metadata["smcs_trace"]
    assert trace["priors"] == pytest.approx(expected, abs=1e-6)
    assert ranking["support_size"] == trace["support_size"]


async def test_rank_models_honours_top(pool, bank, embedder) -> None:
    tool = make_rank_models_tool(pool, bank, embedder, FAST)
    question = "Compute the sum of 7 and 8."
    top = await tool.ainvoke(tool_call("rank_models", question=question, top=1))
    assert [m["model"] for m in json.loads(top.content)["models"]] == ["mathy"]
    with pytest.raises(ValidationError):
        tool.invoke({"question": question, "top": 0})


def test_rank_models_defaults_to_the_banks_embedder(pool, bank) -> None:
    tool = make_rank_models_tool(pool, bank)
    assert tool.embedder is bank.embedder and tool.config == SMCSConfig()
    assert tool.rank("What is 9 times 6?")["models"][0]["model"] == "mathy"

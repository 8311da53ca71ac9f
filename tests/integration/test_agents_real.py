"""`SMCSRouterMiddleware` in a real `create_agent` run on the local pool (xllamacpp on loopback).

A tiny MiniLM bank records Qwen2.5-Coder-0.5B as right on arithmetic and SmolLM2-135M as right
on geography, so routing has a clear answer; a question both got right escalates.
"""

from __future__ import annotations

import functools

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from smcs_graph import BankQuestion, Pool, QuestionBank, SMCSConfig
from smcs_graph.agents import SMCSDecisionModel, SMCSRouterMiddleware
from smcs_graph.embedder import default_embedder
from smcs_graph.models.local import local_chat_model
from tests.integration.conftest import LOCAL_POOL, THREADS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SETTINGS = SMCSConfig(k=2, n_aggregations=2, n_sup_base=2, max_tokens=32, temperature=0, seed=0)
CODER, SMALL = "qwen2.5-coder-0.5b", "smollm2-135m"


@tool
def add(a: int, b: int) -> int:
    """Add two integers exactly."""
    return a + b


@functools.cache
def _bank() -> QuestionBank:
    bank = QuestionBank.in_memory(default_embedder())
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is 2 plus 2?", family="math"),
            BankQuestion(id="b", question="What is 5 times 3?", family="math"),
            BankQuestion(id="c", question="Name the capital of Peru.", family="geography"),
            BankQuestion(id="d", question="Name the capital of France.", family="geography"),
            BankQuestion(id="e", question="Write a short greeting.", family="chat"),
            BankQuestion(id="f", question="Write a friendly hello.", family="chat"),
        ]
    )
    bank.record_results(CODER, {"a": True, "b": True, "c": False, "d": False, "e": True, "f": True})
    bank.record_results(SMALL, {"a": False, "b": False, "c": True, "d": True, "e": True, "f": True})
    return bank


@pytest.fixture(scope="module")
def pool(local_servers: dict[str, str]) -> Pool:
    return Pool.from_chat_models(
        {name: local_chat_model(name, threads=THREADS) for name in LOCAL_POOL}
    )


def test_routed_agent_completes_a_question_and_records_the_model_per_step(pool: Pool) -> None:
    router = SMCSRouterMiddleware(pool, _bank(), settings=SETTINGS)
    agent = create_agent(pool[SMALL].chat_model, tools=[add], middleware=[router])
    question = "What is 17 plus 25? Use the add tool, then reply with the number."
    result = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": 8})
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    steps = result["smcs_routing"]
    assert answers and len(steps) == len(answers)
    assert not answers[-1].tool_calls and str(answers[-1].content).strip()
    assert [s["model"] for s in steps] == [CODER] * len(steps)  # the arithmetic expert
    assert [m.response_metadata["smcs_model"] for m in answers] == [CODER] * len(answers)
    assert steps[0]["priors"][CODER] > steps[0]["priors"][SMALL]
    assert all(s["usage"]["total_tokens"] > 0 for s in steps)


async def test_async_escalates_to_the_ensemble_when_the_priors_tie(pool: Pool) -> None:
    router = SMCSRouterMiddleware(pool, _bank(), settings=SETTINGS, mode="escalate")
    agent = create_agent(pool[SMALL].chat_model, middleware=[router])
    result = await agent.ainvoke({"messages": [HumanMessage("Write a warm greeting.")]})
    step = result["smcs_routing"][-1]
    assert step["decision"] == "ensemble" and step["gate"]["uncertain"] is True
    answer = result["messages"][-1]
    trace = answer.response_metadata["smcs_trace"]
    assert sorted(trace["referencers"]) == sorted(LOCAL_POOL)
    assert step["model"] == trace["aggregator"] == answer.response_metadata["smcs_model"]
    assert answer.usage_metadata["total_tokens"] == trace["usage"]["total_tokens"] > 0


def test_decision_model_picks_the_expert(pool: Pool) -> None:
    from langchain_core.decisions import Choice

    decider = SMCSDecisionModel(bank=_bank(), settings=SETTINGS)
    choice = Choice(instructions="Pick a model.", criteria={CODER: "code", SMALL: "facts"})
    response = decider.invoke({"state": "Name the capital of Chile.", "questions": {"m": choice}})
    assert response.choices["m"].choice == SMALL

"""The router middleware sends a routed model its own prompt (system prompt, family template), as
the graph's referencer call does, on scripted models.

The pool (conftest bank): 'mathy' is right on math and carries a system prompt and templates;
'histo' (right on history) carries none. Each model runs one tool round, then answers.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool

from smcs_graph import ConfigError, Pool, PoolModel, SMCSConfig
from smcs_graph.agents import SMCSRouterMiddleware
from smcs_graph.answers import CONTRACTS
from smcs_graph.models.prompts import model_messages
from smcs_graph.testing import FakeChatModel

SETTINGS = SMCSConfig(k=2, n_aggregations=2, n_sup_base=4, seed=1)
MATH_Q = "What is 12 plus 30?"
NUMERIC_Q = f"What is 12 plus 30? {CONTRACTS['numeric'].instruction}"
HISTORY_Q = "In which year did the French Revolution begin?"
OWN = "You are mathy, a careful calculator."
TEMPLATES = {"instruction": "Task: {question}\nBe exact.", "numeric": "Numbers: {question}"}
AGENT_SYSTEM = "Use the lookup tool once."


def _looping(name: str):
    """One tool call, then an answer signed with the model's name."""

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if kwargs.get("tools") and not isinstance(messages[-1], ToolMessage):
            return AIMessage(
                "", tool_calls=[{"name": "lookup", "args": {"topic": "x"}, "id": name}]
            )
        return AIMessage(f"{name} answers")

    return respond


@tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


def _pool(**mathy_prompts: Any) -> tuple[Pool, dict[str, FakeChatModel]]:
    fakes = {n: FakeChatModel(model_name=n, respond=_looping(n)) for n in ("mathy", "histo")}
    prompts = {"system_prompt": OWN, "templates": TEMPLATES, **mathy_prompts}
    return Pool(
        [
            PoolModel(name="mathy", chat_model=fakes["mathy"], **prompts),
            PoolModel(name="histo", chat_model=fakes["histo"]),
        ]
    ), fakes


def _agent(router: SMCSRouterMiddleware, **kwargs: Any) -> Any:
    never = FakeChatModel(model_name="agent", error=AssertionError("the agent model was called"))
    return create_agent(never, tools=[lookup], middleware=[router], **kwargs)


def _sent(fake: FakeChatModel) -> list[list[tuple[str, Any]]]:
    """Per call: the (type, content) of each message the model was sent."""
    return [[(m.type, m.content) for m in call["messages"]] for call in fake.calls]


def test_a_routed_model_gets_its_system_prompt_and_its_free_text_template(bank, embedder):
    pool, fakes = _pool()
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    result = _agent(router, system_prompt=AGENT_SYSTEM).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert result["messages"][-1].content == "mathy answers"
    calls = _sent(fakes["mathy"])
    assert len(calls) == 2  # the tool call, then the answer after the tool's result
    for sent in calls:  # every step of the loop: the same head
        assert sent[:2] == [
            ("system", f"{OWN}\n\n{AGENT_SYSTEM}"),
            ("human", f"Task: {MATH_Q}\nBe exact."),
        ]
    assert [t for t, _ in calls[1]] == ["system", "human", "ai", "tool"]
    # what the referencer call of the graph sends this model for the same conversation
    member = pool["mathy"]
    conversation = [SystemMessage(AGENT_SYSTEM), HumanMessage(MATH_Q)]
    assert calls[0] == [(m.type, m.content) for m in model_messages(member, None, conversation)]
    # the agent's state keeps the user's message as it was
    assert result["messages"][0].content == MATH_Q
    assert not any(isinstance(m, SystemMessage) for m in result["messages"])


def test_the_family_the_user_message_states_picks_the_template(bank, embedder):
    pool, fakes = _pool()
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    _agent(router).invoke({"messages": [HumanMessage(NUMERIC_Q)]})
    assert _sent(fakes["mathy"])[0] == [("system", OWN), ("human", f"Numbers: {NUMERIC_Q}")]


def test_a_family_set_on_the_middleware_overrides_detection(bank, embedder):
    pool, fakes = _pool()
    router = SMCSRouterMiddleware(
        pool, bank, embedder=embedder, settings=SETTINGS, family="numeric"
    )
    _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert _sent(fakes["mathy"])[0][1] == ("human", f"Numbers: {MATH_Q}")


def test_without_templates_only_the_system_prompt_is_sent(bank, embedder):
    pool, fakes = _pool()
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS, templates=False)
    _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert _sent(fakes["mathy"])[0] == [("system", OWN), ("human", MATH_Q)]


def test_a_template_without_a_system_prompt_keeps_the_agents_system_message(bank, embedder):
    pool, fakes = _pool(system_prompt="")
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    _agent(router, system_prompt=AGENT_SYSTEM).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert _sent(fakes["mathy"])[0] == [
        ("system", AGENT_SYSTEM),
        ("human", f"Task: {MATH_Q}\nBe exact."),
    ]


def test_a_model_without_prompts_gets_the_conversation_untouched(bank, embedder):
    pool, fakes = _pool()
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    _agent(router, system_prompt=AGENT_SYSTEM).invoke({"messages": [HumanMessage(HISTORY_Q)]})
    assert not fakes["mathy"].calls
    assert _sent(fakes["histo"])[0] == [("system", AGENT_SYSTEM), ("human", HISTORY_Q)]


async def test_async_routed_calls_get_the_prompt_too(bank, embedder):
    pool, fakes = _pool()
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    await _agent(router).ainvoke({"messages": [HumanMessage(MATH_Q)]})
    assert [sent[:2] for sent in _sent(fakes["mathy"])] == [
        [("system", OWN), ("human", f"Task: {MATH_Q}\nBe exact.")]
    ] * 2


@pytest.mark.filterwarnings("ignore::smcs_graph.nodes.score.PerplexityUnavailableWarning")
def test_an_ensemble_step_records_its_run_id_and_routed_steps_none(bank, embedder):
    pool, _ = _pool()
    ensemble = SMCSRouterMiddleware(
        pool, bank, embedder=embedder, settings=SETTINGS, mode="ensemble"
    )
    result = _agent(ensemble).invoke({"messages": [HumanMessage(MATH_Q)]})
    answers = [m for m in result["messages"] if isinstance(m, AIMessage)]
    ids = [s["run_id"] for s in result["smcs_routing"]]
    assert ids == [a.response_metadata["smcs_trace"]["run_id"] for a in answers]
    assert all(ids) and len(set(ids)) == 2
    routed = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    result = _agent(routed).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert [s["run_id"] for s in result["smcs_routing"]] == [None, None]


def test_an_unknown_family_is_refused(pool, bank) -> None:
    with pytest.raises(ConfigError, match="family must be one of multiple_choice, math"):
        SMCSRouterMiddleware(pool, bank, family="poetry")

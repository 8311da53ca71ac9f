"""SMCS in LangChain v1 agents: the router middleware and the decision model, on scripted models.

The pool (conftest): 'mathy' is right on the bank's math questions, 'histo' on history, 'weak'
on nothing. Each pool model scripts a tool loop (call `lookup`, then answer after the tool's
result), signing its answers, so each test sees which model answered each step. The agent's
own model raises if called: the middleware replaces it on every call.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware
from langchain_core.decisions import Choice, Noul
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from smcs_graph import ConfigError, QuestionBank, SMCSConfig
from smcs_graph.agents import PriorGate, SMCSDecisionModel, SMCSRouterMiddleware, route_priors
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import HISTORY, MATH, make_pool

SETTINGS = SMCSConfig(k=2, n_aggregations=2, n_sup_base=4, seed=1)
MATH_Q = "What is 12 plus 30?"
HISTORY_Q = "In which year did the French Revolution begin?"
# An ensemble step whose aggregations are tool calls has no logprobs to score (expected).
_NO_PERPLEXITY = pytest.mark.filterwarnings(
    "ignore::smcs_graph.nodes.score.PerplexityUnavailableWarning"
)


def _looping(name: str, rounds: int = 1):
    """A pool model's script: `rounds` tool calls, then an answer signed with its name (in an
    SMCS run, referencers get no tools: they answer at once)."""

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if not kwargs.get("tools"):
            return AIMessage(f"{name} answers")
        since_user = 0
        for message in reversed(messages):
            if isinstance(message, HumanMessage):
                break
            since_user += isinstance(message, ToolMessage)
        if since_user < rounds:
            call = {"name": "lookup", "args": {"topic": "x"}, "id": f"{name}-{since_user}"}
            return AIMessage("", tool_calls=[call])
        return AIMessage(f"{name} answers")

    return respond


def _pool(*names: str, rounds: int = 1):
    fakes = {n: FakeChatModel(model_name=n, respond=_looping(n, rounds)) for n in names}
    return make_pool(**fakes), fakes


@tool
def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


def _agent(middleware: Any, tools: list[Any] | None = None, **kwargs: Any) -> Any:
    never = FakeChatModel(model_name="agent", error=AssertionError("the agent model was called"))
    return create_agent(never, tools=tools or [lookup], middleware=[middleware], **kwargs)


def _answers(result: dict[str, Any]) -> list[AIMessage]:
    return [m for m in result["messages"] if isinstance(m, AIMessage)]


def _flip_math_to_histo(bank: QuestionBank) -> None:
    """Make 'histo' the math expert and 'mathy' wrong on math: priors change under the loop."""
    ids = [f"m{i}" for i in range(len(MATH))]
    bank.record_results("histo", dict.fromkeys(ids, True))
    bank.record_results("mathy", dict.fromkeys(ids, False))


def test_route_sends_every_step_to_the_top_prior_model(bank, embedder) -> None:
    pool, fakes = _pool("weak", "histo", "mathy", rounds=2)  # mathy last: not the tie-break
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    result = _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    answers = _answers(result)
    assert len(answers) == 3 and answers[-1].content == "mathy answers"
    assert [m.response_metadata["smcs_model"] for m in answers] == ["mathy"] * 3
    assert [m.response_metadata["model_name"] for m in answers] == ["mathy"] * 3
    assert len(fakes["mathy"].calls) == 3 and not fakes["histo"].calls and not fakes["weak"].calls
    # the routed model got the agent's tools and the settings' sampling keywords
    kwargs = fakes["mathy"].calls[0]["kwargs"]
    assert [t["function"]["name"] for t in kwargs["tools"]] == ["lookup"]
    assert kwargs["max_tokens"] == SETTINGS.max_tokens and kwargs["seed"] == SETTINGS.seed


def test_the_model_stays_fixed_within_a_tool_loop_even_when_priors_change(bank, embedder) -> None:
    pool, _ = _pool("mathy", "histo", "weak", rounds=2)

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up (and, here, rewrite the bank's math results)."""
        _flip_math_to_histo(bank)
        return "done"

    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    result = _agent(router, tools=[lookup]).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert [m.response_metadata["smcs_model"] for m in _answers(result)] == ["mathy"] * 3
    steps = result["smcs_routing"]
    assert [s["decided_at"] for s in steps] == [1, 1, 1]
    assert route_priors(MATH_Q, pool.names, bank, embedder, SETTINGS).top == "histo"  # it did


def test_reroute_each_step_follows_the_priors_inside_the_loop(bank, embedder) -> None:
    pool, _ = _pool("mathy", "histo", "weak", rounds=1)

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up (and rewrite the bank's math results)."""
        _flip_math_to_histo(bank)
        return "done"

    router = SMCSRouterMiddleware(
        pool, bank, embedder=embedder, settings=SETTINGS, reroute_each_step=True
    )
    result = _agent(router, tools=[lookup]).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert [m.response_metadata["smcs_model"] for m in _answers(result)] == ["mathy", "histo"]
    assert [s["decided_at"] for s in result["smcs_routing"]] == [1, 2]


def test_a_new_user_message_routes_again(bank, embedder) -> None:
    pool, _ = _pool("mathy", "histo", "weak", rounds=1)
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    agent = _agent(router, checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t"}}
    agent.invoke({"messages": [HumanMessage(MATH_Q)]}, thread)
    result = agent.invoke({"messages": [HumanMessage(HISTORY_Q)]}, thread)
    models = [m.response_metadata["smcs_model"] for m in _answers(result)]
    assert models == ["mathy", "mathy", "histo", "histo"]
    steps = result["smcs_routing"]
    assert [s["decided_at"] for s in steps] == [1, 1, 3, 3]
    assert steps[0]["turn"] != steps[2]["turn"]


def test_the_state_records_each_step_and_usage_sums(bank, embedder) -> None:
    pool, _ = _pool("mathy", "histo", "weak", rounds=2)
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    result = _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    answers, steps = _answers(result), result["smcs_routing"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [s["model"] for s in steps] == [m.response_metadata["smcs_model"] for m in answers]
    first = steps[0]
    assert first["mode"] == "route" and first["decision"] == "route" and first["gate"] is None
    expected = route_priors(MATH_Q, pool.names, bank, embedder, SETTINGS)
    assert first["priors"] == expected.for_trace() and first["priors"]["mathy"] > 0
    assert first["priors"]["mathy"] > max(first["priors"]["histo"], first["priors"]["weak"])
    assert "kept" in steps[1]["reason"] and "highest prior" in first["reason"]
    for step, message in zip(steps, answers, strict=True):
        assert message.usage_metadata and step["usage"] == dict(message.usage_metadata)
        assert step["usage"]["total_tokens"] > 0


def test_escalate_routes_when_the_priors_are_clear(bank, embedder) -> None:
    pool, fakes = _pool("mathy", "histo", "weak", rounds=1)
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS, mode="escalate")
    result = _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    steps = result["smcs_routing"]
    assert [s["decision"] for s in steps] == ["route", "route"]
    assert steps[0]["gate"]["uncertain"] is False and steps[0]["gate"]["margin"] >= 0.1
    assert len(fakes["mathy"].calls) == 2 and not fakes["histo"].calls and not fakes["weak"].calls
    assert all("smcs_trace" not in m.response_metadata for m in _answers(result))


def _with_twin(bank: QuestionBank):
    """A pool where 'twin' has exactly mathy's record: on math the top two priors tie."""
    ids = [f"m{i}" for i in range(len(MATH))] + [f"h{i}" for i in range(len(HISTORY))]
    bank.record_results("twin", {i: i.startswith("m") for i in ids})
    return _pool("mathy", "twin", "histo", rounds=1)


@_NO_PERPLEXITY
def test_escalate_runs_the_ensemble_when_the_priors_are_close(bank, embedder) -> None:
    pool, fakes = _with_twin(bank)
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS, mode="escalate")
    result = _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    steps, answers = result["smcs_routing"], _answers(result)
    assert [s["decision"] for s in steps] == ["ensemble", "ensemble"]
    assert steps[0]["gate"]["uncertain"] is True and steps[0]["gate"]["margin"] == 0
    trace = answers[-1].response_metadata["smcs_trace"]
    assert trace["referencers"] == ["mathy", "twin"]
    # every step is a full SMCS run: K referencers + n aggregations
    assert sum(len(f.calls) for f in fakes.values()) == 2 * (2 + 2)
    assert steps[-1]["model"] == trace["aggregator"] == answers[-1].response_metadata["smcs_model"]
    usage = answers[-1].usage_metadata
    assert usage and usage["total_tokens"] == sum(c["total_tokens"] for c in trace["calls"])
    assert steps[-1]["usage"] == dict(usage)


@_NO_PERPLEXITY
def test_ensemble_mode_runs_smcs_at_every_step(bank, embedder) -> None:
    pool, fakes = _pool("mathy", "histo", "weak", rounds=1)
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS, mode="ensemble")
    result = _agent(router).invoke({"messages": [HumanMessage(MATH_Q)]})
    assert [s["decision"] for s in result["smcs_routing"]] == ["ensemble", "ensemble"]
    assert sum(len(f.calls) for f in fakes.values()) == 2 * (2 + 2)
    assert result["smcs_routing"][0]["priors"]["mathy"] > 0  # from the run's trace


async def test_async_run_routes_and_keeps_the_model_in_the_loop(bank, embedder) -> None:
    pool, fakes = _pool("histo", "mathy", "weak", rounds=2)

    @tool
    async def lookup(topic: str) -> str:
        """Look a topic up (and rewrite the bank's math results)."""
        _flip_math_to_histo(bank)
        return "done"

    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS)
    result = await _agent(router, tools=[lookup]).ainvoke({"messages": [HumanMessage(MATH_Q)]})
    assert [m.response_metadata["smcs_model"] for m in _answers(result)] == ["mathy"] * 3
    assert [s["decided_at"] for s in result["smcs_routing"]] == [1, 1, 1]
    assert len(fakes["mathy"].calls) == 3 and not fakes["histo"].calls


@_NO_PERPLEXITY
async def test_async_escalate_runs_the_ensemble_when_unsure(bank, embedder) -> None:
    pool, fakes = _with_twin(bank)
    router = SMCSRouterMiddleware(pool, bank, embedder=embedder, settings=SETTINGS, mode="escalate")
    result = await _agent(router).ainvoke({"messages": [HumanMessage(MATH_Q)]})
    assert [s["decision"] for s in result["smcs_routing"]] == ["ensemble", "ensemble"]
    assert sum(len(f.calls) for f in fakes.values()) == 2 * (2 + 2)


def test_prior_gate_thresholds() -> None:
    from smcs_graph.agents import RoutePriors

    clear = RoutePriors(("a", "b"), (3.0, 1.0))
    assert PriorGate().decide(clear)["uncertain"] is False
    assert PriorGate(margin=0.7).decide(clear)["uncertain"] is True  # (3-1)/3 < 0.7
    assert PriorGate(threshold=0.8).decide(clear)["uncertain"] is True  # share 0.75
    assert PriorGate().decide(RoutePriors(("a", "b"), (0.0, 0.0)))["uncertain"] is True
    with pytest.raises(ConfigError):
        PriorGate(margin=2.0)


def test_bad_mode_is_rejected(pool, bank) -> None:
    with pytest.raises(ConfigError, match="mode must be one of"):
        SMCSRouterMiddleware(pool, bank, mode="vote")  # type: ignore[arg-type]


def test_decision_model_probabilities_are_normalised_priors(bank, embedder) -> None:
    decider = SMCSDecisionModel(
        bank=bank, embedder=embedder, settings=SETTINGS, routes={"fast": "weak", "deep": "mathy"}
    )
    question = Choice(instructions="Pick a model.", criteria={"fast": "cheap", "deep": "good"})
    response = decider.invoke({"state": HumanMessage(MATH_Q), "questions": {"route": question}})
    answer = response.choices["route"]
    priors = route_priors(MATH_Q, ["weak", "mathy"], bank, embedder, SETTINGS).priors
    assert answer.choice == "deep"
    assert answer.probabilities == pytest.approx(
        {"fast": priors[0] / sum(priors), "deep": priors[1] / sum(priors)}
    )
    assert answer.confidence == pytest.approx(answer.probabilities["deep"])
    with pytest.raises(ConfigError, match="Choice questions only"):
        decider.invoke({"state": MATH_Q, "questions": {"q": Noul(instructions="Is it math?")}})


@pytest.mark.filterwarnings("ignore::langchain_core._api.beta_decorator.LangChainBetaWarning")
def test_decision_model_drives_the_stock_model_router(bank, embedder) -> None:
    _, fakes = _pool("mathy", "histo", rounds=1)
    router = ModelRouterMiddleware(
        choices={
            "numbers": ModelChoice(model=fakes["mathy"], criteria="math"),
            "past": ModelChoice(model=fakes["histo"], criteria="history"),
        },
        instructions="Choose the model best suited to the question.",
        classifier=SMCSDecisionModel(
            bank=bank, embedder=embedder, routes={"numbers": "mathy", "past": "histo"}
        ),
    )
    result = _agent(router).invoke({"messages": [HumanMessage(HISTORY_Q)]})
    assert result["model_route"].choice == "past"
    assert (
        result["model_route"].probabilities["past"] > result["model_route"].probabilities["numbers"]
    )
    assert _answers(result)[-1].content == "histo answers" and not fakes["mathy"].calls


async def test_decision_model_async(bank, embedder) -> None:
    decider = SMCSDecisionModel(bank=bank, embedder=embedder)
    question = Choice(instructions="Pick.", criteria={"mathy": None, "histo": None})
    response = await decider.ainvoke(
        {"state": {"messages": [HumanMessage(HISTORY_Q)]}, "questions": {"q": question}}
    )
    assert response.choices["q"].choice == "histo"

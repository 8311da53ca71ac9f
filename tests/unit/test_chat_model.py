"""SMCSChatModel: invoke/ainvoke/stream, tools, agents, subgraphs, usage, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph

from smcs_graph import ConfigError, InvalidQuestionError, SMCSChatModel, SMCSConfig, build_graph
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import make_pool

FAST = SMCSConfig(k=3, n_aggregations=3, n_sup_base=4, seed=1)


@pytest.fixture
def model(pool, bank, embedder) -> SMCSChatModel:
    return SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)


def test_invoke_returns_the_answer_with_trace_and_summed_usage(model) -> None:
    message = model.invoke("What is 12 plus 30?")
    assert isinstance(message, AIMessage)
    assert message.content == "The answer is 42."
    trace = message.response_metadata["smcs_trace"]
    assert len(trace["calls"]) == 3 + 3
    assert message.usage_metadata is not None
    assert message.usage_metadata["total_tokens"] == sum(c["total_tokens"] for c in trace["calls"])
    assert message.usage_metadata["input_tokens"] == sum(c["input_tokens"] for c in trace["calls"])


async def test_ainvoke(model) -> None:
    message = await model.ainvoke([HumanMessage("What is 12 plus 30?")])
    assert message.content == "The answer is 42."


def test_stream_yields_the_answer_as_one_final_chunk(model) -> None:
    chunks = list(model.stream("What is 12 plus 30?"))
    assert len(chunks) == 1 and isinstance(chunks[0], AIMessageChunk)
    assert chunks[0].content == "The answer is 42."
    assert chunks[0].usage_metadata and chunks[0].usage_metadata["total_tokens"] > 0
    assert "smcs_trace" in chunks[0].response_metadata


async def test_astream(model) -> None:
    chunks = [c async for c in model.astream("What is 12 plus 30?")]
    assert "".join(str(c.content) for c in chunks) == "The answer is 42."


def test_per_call_overrides_and_unknown_keywords(model) -> None:
    message = model.invoke("What is 12 plus 30?", k=1)
    assert message.response_metadata["smcs_trace"]["referencers"] == ["mathy"]
    bound = model.bind(n_aggregations=2)
    assert (
        len(bound.invoke("What is 12 plus 30?").response_metadata["smcs_trace"]["candidates"]) == 2
    )
    with pytest.raises(ConfigError, match="unknown keyword"):
        model.invoke("What is 12 plus 30?", frobnicate=True)


def test_stop_sequences_cut_the_answer(model) -> None:
    assert model.invoke("What is 12 plus 30?", stop=[" is"]).content == "The answer"


@pytest.mark.parametrize("bad", ["", "   ", [HumanMessage(content=[])]])
def test_empty_input_is_rejected_before_any_model_call(model, fakes, bad) -> None:
    with pytest.raises(InvalidQuestionError):
        model.invoke(bad)
    assert all(not f.calls for f in fakes.values())


def test_usage_callback_sees_every_inner_call(model) -> None:
    with get_usage_metadata_callback() as cb:
        model.invoke("What is 12 plus 30?")
    inner = {name: usage for name, usage in cb.usage_metadata.items() if name != "smcs"}
    assert set(inner) == {"mathy", "histo", "weak"}


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _tool_using_aggregator(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """Aggregator script: call the tool first, then answer with its result."""
    if not kwargs.get("tools"):
        return AIMessage("I think it is 42.")
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return AIMessage(f"The product is {last.content}.")
    return AIMessage(
        "", tool_calls=[{"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call_1"}]
    )


def test_bind_tools_sends_tools_to_the_aggregator_and_returns_its_tool_calls(bank, embedder):
    aggregator = FakeChatModel(respond=_tool_using_aggregator)
    fakes = {"mathy": aggregator, "histo": FakeChatModel(responses=["6 times 7 is 42"])}
    model = SMCSChatModel(pool=make_pool(**fakes), bank=bank, embedder=embedder, config=FAST)
    message = model.bind_tools([multiply]).invoke("What is 6 times 7? Use the tool.")
    assert message.tool_calls and message.tool_calls[0]["name"] == "multiply"
    assert message.tool_calls[0]["args"] == {"a": 6, "b": 7}
    agg_calls = [c for c in aggregator.calls if c["kwargs"].get("tools")]
    assert agg_calls and agg_calls[0]["kwargs"]["tools"][0]["function"]["name"] == "multiply"
    # referencers answer in text: they never receive the tools
    referencer_calls = [c for c in aggregator.calls if not c["kwargs"].get("tools")]
    assert referencer_calls


def test_runs_inside_create_agent_with_a_tool_loop(bank, embedder) -> None:
    aggregator = FakeChatModel(respond=_tool_using_aggregator)
    fakes = {"mathy": aggregator, "histo": FakeChatModel(responses=["6 times 7 is 42"])}
    model = SMCSChatModel(pool=make_pool(**fakes), bank=bank, embedder=embedder, config=FAST)
    agent = create_agent(model=model, tools=[multiply])
    result = agent.invoke({"messages": [HumanMessage("What is 6 times 7?")]})
    kinds = [type(m).__name__ for m in result["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert result["messages"][2].content == "42"
    assert result["messages"][-1].content == "The product is 42."


def test_graph_as_a_subgraph_node_of_a_parent_graph(pool, bank, embedder) -> None:
    smcs = build_graph(pool, bank, embedder, FAST).compile(name="smcs")
    parent = StateGraph(MessagesState)
    parent.add_node("smcs", smcs)
    parent.add_node("after", lambda state: {"messages": [AIMessage("done")]})
    parent.add_edge(START, "smcs")
    parent.add_edge("smcs", "after")
    parent.add_edge("after", END)
    app = parent.compile()
    out = app.invoke({"messages": [HumanMessage("What is 12 plus 30?")]}, {"max_concurrency": 16})
    assert [m.content for m in out["messages"]] == [
        "What is 12 plus 30?",
        "The answer is 42.",
        "done",
    ]
    namespaces = {
        ns
        for ns, _ in app.stream({"messages": [HumanMessage("What is 12 plus 30?")]}, subgraphs=True)
    }
    assert any(ns and ns[0].startswith("smcs") for ns in namespaces)


def test_chat_model_inside_a_parent_graph_node_streams_stage_updates(model) -> None:
    def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    parent = StateGraph(MessagesState)
    parent.add_node("answer", answer)
    parent.add_edge(START, "answer")
    parent.add_edge("answer", END)
    app = parent.compile()
    inner_nodes: set[str] = set()
    for ns, update in app.stream(
        {"messages": [HumanMessage("What is 12 plus 30?")]}, subgraphs=True
    ):
        if ns:
            inner_nodes.update(update)
    assert {"select_priors", "referencer", "drop_subsets", "aggregate", "score"} <= inner_nodes
    # inner model calls are tagged nostream: the parent's messages stream shows no references
    tokens = [
        chunk.content
        for chunk, meta in app.stream(
            {"messages": [HumanMessage("What is 12 plus 30?")]}, stream_mode="messages"
        )
    ]
    assert "It began in 1789." not in tokens

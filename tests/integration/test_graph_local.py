"""The compiled SMCS graph end to end on real parts: local chat models over HTTP (xllamacpp on
127.0.0.1, through langchain-openai), the real MiniLM embedder, and a Chroma bank on disk."""

from __future__ import annotations

import math

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from smcs_graph import (
    SMCSChatModel,
    SMCSConfig,
    build_graph,
    core,
)

pytestmark = pytest.mark.integration

LOCAL = SMCSConfig(k=2, n_aggregations=3, n_sup_base=4, max_tokens=48, seed=0)
# The fixtures (`pool`, `disk_bank`, `embedder`) are the session's, in conftest.py.


def test_graph_runs_on_real_models_with_perplexity_from_their_logprobs(
    pool, disk_bank, embedder
) -> None:
    graph = build_graph(pool, disk_bank, embedder, LOCAL).compile(checkpointer=InMemorySaver())
    run = {"configurable": {"thread_id": "real"}, "max_concurrency": 16}
    out = graph.invoke({"question": "What is 5 times 8? Reply with the number only."}, run)
    trace = out["trace"]
    # retrieval put the math model first, and it aggregates
    assert trace["referencers"] == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    assert trace["aggregator"] == "qwen2.5-coder-0.5b"
    assert trace["failures"] == []
    assert len(trace["references"]) == 2 and all(r["text"] for r in trace["references"])
    assert len(trace["candidates"]) == 3
    assert trace["perplexity_available"] is True
    # perplexity in the trace is exp(-mean logprob) of the logprobs the server returned
    state = graph.get_state(run).values
    for cand, record in zip(
        sorted(state["candidates"], key=lambda c: c["index"]), trace["candidates"], strict=True
    ):
        raw = cand["message"].response_metadata["logprobs"]["content"]
        assert raw and all("logprob" in entry for entry in raw)
        logprobs = core.token_logprobs(raw)
        assert logprobs and len(logprobs) <= len(raw)
        expected = math.exp(-sum(logprobs) / len(logprobs))
        assert record["perplexity"] == pytest.approx(expected, abs=1e-5)  # trace rounds to 1e-6
        assert record["total"] == pytest.approx(record["similarity"] + 1 - expected, abs=1e-5)
    assert out["answer"] == next(c["text"] for c in trace["candidates"] if c["chosen"])
    # every call carries real token usage
    assert all(c["ok"] and c["output_tokens"] > 0 for c in trace["calls"])
    assert trace["usage"]["total_tokens"] == sum(c["total_tokens"] for c in trace["calls"])


async def test_chat_model_on_real_models_async_and_multi_turn(pool, disk_bank, embedder) -> None:
    model = SMCSChatModel(pool=pool, bank=disk_bank, embedder=embedder, config=LOCAL)
    message = await model.ainvoke(
        [
            HumanMessage("What is 2 plus 2? Reply with the number only."),
            AIMessage("4"),
            HumanMessage("What is the capital of France? Answer in one word."),
        ]
    )
    trace = message.response_metadata["smcs_trace"]
    assert trace["question"] == "What is the capital of France? Answer in one word."
    # the geography question now favours SmolLM2, which therefore aggregates
    assert trace["referencers"][0] == "smollm2-135m"
    assert isinstance(message.content, str) and message.content.strip()
    assert message.usage_metadata and message.usage_metadata["output_tokens"] > 0

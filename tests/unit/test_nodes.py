"""Node behaviour the graph tests do not pin: what prior drop samples from, when the aggregator
is asked for logprobs, and which settings reach LangGraph's run config."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables.config import ensure_config

from smcs_graph import (
    PerplexityUnavailableWarning,
    Pool,
    PoolModel,
    QuestionBank,
    SMCSChatModel,
    SMCSConfig,
    build_graph,
    core,
)
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.graph import runnable_config
from smcs_graph.testing import FakeChatModel
from smcs_graph.tools import make_consult_tool
from tests.unit.conftest import make_pool

RUN = {"max_concurrency": 16}


def test_prior_drop_samples_the_unrounded_priors(
    monkeypatch: pytest.MonkeyPatch, bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    """The trace shows priors to 6 decimals; sampling must use the exact values. Priors that
    differ only below 1e-6 round to one value, whose z-scores are all 0 (a uniform draw)."""
    exact = np.array([0.8000003, 0.8000001, 0.8000002])  # pool order a, b, c
    monkeypatch.setattr(core, "prior_scores", lambda *args, **kwargs: exact.copy())
    pool = make_pool(**{name: FakeChatModel(responses=[f"{name} says 4"]) for name in "abc"})
    settings = SMCSConfig(
        k=3, k_drop=1, n_aggregations=12, n_sup_base=4, seed=3, subset_draws="independent"
    )
    out = build_graph(pool, bank, embedder, settings).compile().invoke({"question": "2+2?"}, RUN)

    trace = out["trace"]
    assert trace["referencers"] == ["a", "c", "b"]  # by exact prior
    assert set(trace["priors"].values()) == {0.8}  # rounded for the trace only
    by_rank = np.array([exact[0], exact[2], exact[1]])
    expected = core.prior_drop_subsets(by_rank, 12, 1, rng=3, mode="paper")
    assert trace["subsets"] == [[trace["referencers"][i] for i in s] for s in expected]
    uniform = core.prior_drop_subsets(np.full(3, 0.8), 12, 1, rng=3, mode="paper")
    assert expected != uniform  # the test can tell the two apart


def _logprobs_on_request(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """An API that returns token logprobs only when the call asks for them."""
    reply = AIMessage(content="four")
    if kwargs.get("logprobs"):
        content = [{"token": "four", "logprob": -0.1, "top_logprobs": []}]
        reply = AIMessage(content="four", response_metadata={"logprobs": {"content": content}})
    return reply


def test_aggregator_is_asked_for_logprobs_even_without_sampling_kwargs(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    """A `class:` entry with `sampling_kwargs: false` and `logprobs: true` gets perplexity."""
    fake = FakeChatModel(logprobs=False, respond=_logprobs_on_request)
    pool = Pool(
        [
            PoolModel(name=name, chat_model=fake, logprobs=True, sampling_kwargs=False)
            for name in ("a", "b")
        ]
    )
    settings = SMCSConfig(k=2, k_drop=1, n_aggregations=2, n_sup_base=4, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerplexityUnavailableWarning)
        out = (
            build_graph(pool, bank, embedder, settings).compile().invoke({"question": "2+2?"}, RUN)
        )
    assert out["trace"]["perplexity_available"] is True
    aggregations = [c["kwargs"] for c in fake.calls if c["kwargs"].get("logprobs")]
    assert len(aggregations) == 2
    assert all(set(kw) == {"logprobs"} for kw in aggregations)  # still no sampling kwargs


def test_a_model_without_logprobs_is_not_asked_for_them(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    fake = FakeChatModel(logprobs=False, respond=_logprobs_on_request)
    pool = Pool([PoolModel(name=n, chat_model=fake, logprobs=False) for n in ("a", "b")])
    settings = SMCSConfig(k=2, k_drop=1, n_aggregations=2, n_sup_base=4, seed=1)
    with pytest.warns(PerplexityUnavailableWarning):
        out = (
            build_graph(pool, bank, embedder, settings).compile().invoke({"question": "2+2?"}, RUN)
        )
    assert out["trace"]["perplexity_available"] is False
    assert not any("logprobs" in c["kwargs"] for c in fake.calls)


def _recording_max_concurrency(seen: list[Any]) -> FakeChatModel:
    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        seen.append(ensure_config().get("max_concurrency"))
        return "four"

    return FakeChatModel(respond=respond)


def test_the_consult_tool_runs_a_graph_under_its_settings_and_their_max_concurrency(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    """The tool's overrides apply on top of the graph's own settings (not the paper's), and
    the run's LangGraph `max_concurrency` is the settings' one."""
    seen: list[Any] = []
    pool = make_pool(a=_recording_max_concurrency(seen), b=_recording_max_concurrency(seen))
    graph = build_graph(pool, bank, embedder, SMCSConfig(k=2, n_sup_base=4, max_concurrency=5))
    tool = make_consult_tool(graph, n_aggregations=3)
    message = tool.invoke(
        {"type": "tool_call", "name": "consult_ensemble", "args": {"question": "2+2?"}, "id": "1"}
    )
    used = message.artifact["config"]
    assert (used["k"], used["n_sup_base"], used["n_aggregations"]) == (2, 4, 3)
    assert seen and set(seen) == {5}


def test_the_chat_model_runs_under_the_calls_max_concurrency(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    seen: list[Any] = []
    pool = make_pool(a=_recording_max_concurrency(seen), b=_recording_max_concurrency(seen))
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, settings=SMCSConfig(k=2))
    assert model.settings is model.config and model.config.k == 2
    model.invoke("What is 2 plus 2?", max_concurrency=3, n_aggregations=2)
    assert seen and set(seen) == {3}
    with pytest.raises(ValueError, match="not both"):  # pydantic wraps it
        SMCSChatModel(pool=pool, bank=bank, settings=SMCSConfig(), config=SMCSConfig())


def test_runnable_config_carries_the_settings_max_concurrency() -> None:
    config = runnable_config(SMCSConfig(max_concurrency=9), tags=["x"])
    assert config == {"max_concurrency": 9, "tags": ["x"]}


def test_a_referencer_that_only_calls_tools_still_aggregates(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    """A top-prior model whose reference is tool calls without text has answered (it is up):
    it must stay the aggregator, so the tool calls come back, and is not failed over."""
    tool_call = {"name": "calc", "args": {"expr": "6*7"}, "id": "call_1"}
    mathy = FakeChatModel(
        model_name="mathy", responses=[{"content": "", "tool_calls": [tool_call]}]
    )
    pool = make_pool(mathy=mathy, histo=FakeChatModel(model_name="histo", responses=["42"]))
    graph = build_graph(pool, bank, embedder, SMCSConfig(k=2, n_aggregations=2, seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PerplexityUnavailableWarning)  # tool calls: no text
        out = graph.compile().invoke({"question": "What is 6 times 7?"}, RUN)
    trace = out["trace"]
    assert trace["referencers"][0] == "mathy" and trace["aggregator"] == "mathy"
    assert out["messages"][-1].tool_calls[0]["id"] == "call_1"

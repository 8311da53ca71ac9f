"""Answer recovery in the graph and in the guarded model call: a reply cut off at its family's
token limit before its final answer gets exactly one follow-up from the forced prefix; the
trace, usage and the answer say so; a finished reply, or recovery off, gets none."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from smcs_graph import QuestionBank, SMCSChatModel, SMCSConfig, answers, build_graph
from smcs_graph.cli._render import render_trace
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.models import PoolModel
from smcs_graph.nodes._common import acall_model, answer_call, call_model
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import make_pool

RUN = {"max_concurrency": 16}
LIMIT = 8
QUESTION = (
    "Which number is prime?\n\nOptions:\n(A) 4\n(B) 5\n(C) 6\n(D) 8\n\n"
    + answers.CONTRACTS["multiple_choice"].instruction
)
CUT = "Let us check each option in turn: four is even, so"  # 11 tokens, no answer
FINISHED = "Four is even; five is prime. The answer is (B)"  # 9 tokens, answered


def _length(text: str) -> AIMessage:
    """A reply the server stopped at its limit."""
    return AIMessage(content=text, response_metadata={"finish_reason": "length"})


def _is_follow_up(messages: list[BaseMessage]) -> bool:
    return isinstance(messages[-1], AIMessage)


def _script(reference: str, fusion: str = FINISHED, follow_up: str | AIMessage = "B)") -> Any:
    """Replies by role: the referencer's, the fusion's (a system message leads the aggregation
    messages), and the follow-up's (the conversation ends in the prefilled assistant turn)."""

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage | str:
        if _is_follow_up(messages):
            return follow_up
        if isinstance(messages[0], SystemMessage):
            return _length(fusion) if fusion is CUT else fusion
        return _length(reference) if reference is CUT else reference

    return respond


def _graph(bank: QuestionBank, embedder: HashingEmbedder, model: FakeChatModel, **settings: Any):
    config = SMCSConfig(k=1, n_aggregations=1, seed=0, max_tokens_multiple_choice=LIMIT, **settings)
    return build_graph(make_pool(solo=model), bank, embedder, config).compile()


def _run(graph: Any, path: str) -> dict[str, Any]:
    """The graph on `QUESTION`, by `invoke` (the sync call path) or `ainvoke` (`acall_model`)."""
    if path == "invoke":
        return graph.invoke({"question": QUESTION}, RUN)  # type: ignore[no-any-return]
    return asyncio.run(graph.ainvoke({"question": QUESTION}, RUN))  # type: ignore[no-any-return]


def _follow_ups(model: FakeChatModel) -> list[dict[str, Any]]:
    return [c for c in model.calls if _is_follow_up(c["messages"])]


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
def test_a_cut_off_reference_gets_one_follow_up_and_its_letter(
    path: str, bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    model = FakeChatModel(respond=_script(CUT))
    out = _run(_graph(bank, embedder, model), path)
    trace = out["trace"]

    assert trace["answer_family"] == "multiple_choice"
    (follow_up,) = _follow_ups(model)  # exactly one
    first = model.calls[0]
    assert first["kwargs"]["max_tokens"] == LIMIT  # the family's limit, not max_tokens
    assert follow_up["kwargs"]["max_tokens"] == answers.CONTRACTS["multiple_choice"].recovery_tokens
    assert follow_up["messages"][-1].content == CUT + "\n\nThe answer is ("
    reference = trace["references"][0]
    assert reference["recovered"] is True
    assert answers.final_answer("multiple_choice", reference["text"]) == "B"

    calls = [c for c in trace["calls"] if c["stage"] == "referencer"]
    assert [c.get("recovery", False) for c in calls] == [False, True]
    assert calls[0]["hit_limit"] is True and calls[0]["recovered"] is True
    (recovery,) = trace["recoveries"]
    assert recovery["model"] == "solo" and recovery["answered"] is True
    assert recovery["ending"] == "The answer is (B)"
    assert "solo's reference hit 8 tokens; recovered: The answer is (B)" in render_trace(
        trace, out["answer"]
    )


def test_usage_counts_the_follow_up(bank: QuestionBank, embedder: HashingEmbedder) -> None:
    model = FakeChatModel(respond=_script(CUT))
    out = _graph(bank, embedder, model).invoke({"question": QUESTION}, RUN)
    calls = out["trace"]["calls"]
    assert len(calls) == 3  # reference, its follow-up, the fusion
    follow_up = next(c for c in calls if c.get("recovery"))
    assert follow_up["output_tokens"] == 1  # "B)"
    usage = out["messages"][-1].usage_metadata
    assert usage["output_tokens"] == sum(c["output_tokens"] for c in calls)
    assert out["trace"]["usage_by_model"]["solo"]["calls"] == 3

    chat = SMCSChatModel(
        pool=make_pool(solo=FakeChatModel(respond=_script(CUT))),
        bank=bank,
        embedder=embedder,
        settings=SMCSConfig(k=1, n_aggregations=1, seed=0, max_tokens_multiple_choice=LIMIT),
    )
    reply = chat.invoke([HumanMessage(QUESTION)])
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == usage["output_tokens"]


@pytest.mark.parametrize(
    "reply",
    [
        _length("Five is prime, four is not. The answer is (B)"),  # at the limit, answered
        FINISHED,  # under the limit, answered
    ],
)
def test_a_reply_with_its_answer_gets_no_follow_up(
    reply: AIMessage | str, bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    model = FakeChatModel(respond=lambda messages, kwargs: reply)
    out = _graph(bank, embedder, model).invoke({"question": QUESTION}, RUN)
    assert _follow_ups(model) == []
    assert out["trace"]["recoveries"] == []
    assert not any(c.get("recovery") for c in out["trace"]["calls"])


def test_a_reply_that_ends_without_its_letter_gets_one_follow_up(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    ended = "Let us think about primes"  # under the limit, stopped, no answer line
    model = FakeChatModel(respond=_script(ended))
    out = _graph(bank, embedder, model).invoke({"question": QUESTION}, RUN)
    (follow_up,) = _follow_ups(model)
    assert follow_up["messages"][-1].content == ended + "\n\nThe answer is ("
    reference = out["trace"]["references"][0]
    assert answers.final_answer("multiple_choice", reference["text"]) == "B"
    (recovery,) = out["trace"]["recoveries"]
    assert recovery["cut"] is False and recovery["answered"] is True
    assert "solo's reference ended without a final answer; recovered: The answer is (B)" in (
        render_trace(out["trace"], out["answer"])
    )


def test_a_numeric_reply_that_ends_without_a_stated_number_gets_no_follow_up(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    question = "What is 6 times 7? " + answers.CONTRACTS["numeric"].instruction
    model = FakeChatModel(respond=lambda messages, kwargs: "Six sevens make 42")
    out = _graph(bank, embedder, model).invoke({"question": question}, RUN)
    assert out["trace"]["answer_family"] == "numeric"
    assert _follow_ups(model) == [] and out["trace"]["recoveries"] == []


def test_recovery_off_gets_no_follow_up(bank: QuestionBank, embedder: HashingEmbedder) -> None:
    model = FakeChatModel(respond=_script(CUT))
    out = _graph(bank, embedder, model, answer_recovery=False).invoke({"question": QUESTION}, RUN)
    assert _follow_ups(model) == []
    assert out["trace"]["references"][0]["text"] == CUT
    first = out["trace"]["calls"][0]
    assert first["hit_limit"] is True and "recovered" not in first


def test_free_text_gets_the_default_limit_and_no_recovery(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    model = FakeChatModel(respond=lambda messages, kwargs: _length(CUT))
    out = _graph(bank, embedder, model).invoke({"question": "Tell me about primes."}, RUN)
    assert out["trace"]["answer_family"] is None
    assert model.calls[0]["kwargs"]["max_tokens"] == SMCSConfig().max_tokens
    assert _follow_ups(model) == []


def test_a_cut_off_fusion_is_recovered_and_scored_with_both_calls_logprobs(
    bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    follow_up_reply = AIMessage(
        content="B)", response_metadata={"logprobs": {"content": [{"token": "B", "logprob": -3.0}]}}
    )
    model = FakeChatModel(respond=_script(FINISHED, fusion=CUT, follow_up=follow_up_reply))
    out = _graph(bank, embedder, model).invoke({"question": QUESTION}, RUN)
    trace = out["trace"]
    (follow_up,) = _follow_ups(model)
    assert isinstance(follow_up["messages"][0], SystemMessage)  # the aggregation messages
    assert answers.final_answer("multiple_choice", out["answer"]) == "B"
    (recovery,) = trace["recoveries"]
    assert recovery["stage"] == "aggregate" and recovery["answered"]
    assert out["messages"][-1].response_metadata["smcs_recovery"]["answered"] is True
    assert trace["candidates"][0]["recovered"] is True
    assert trace["perplexity_available"] is True
    # The generated tokens: the fusion's 11 at the fake's -0.5, then the follow-up's 1 at -3
    # (the fake's end-of-sequence entry after the cut reply is dropped; the prefix is unscored).
    expected = math.exp((11 * 0.5 + 3.0) / 12)
    assert trace["candidates"][0]["perplexity"] == pytest.approx(expected, abs=1e-5)
    assert "solo's fusion #0 hit 8 tokens; recovered" in render_trace(trace, out["answer"])


@pytest.mark.parametrize("path", ["invoke", "ainvoke"])
def test_a_failed_follow_up_keeps_the_original_reply(
    path: str, bank: QuestionBank, embedder: HashingEmbedder
) -> None:
    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage | str:
        if _is_follow_up(messages):
            raise ConnectionError("endpoint went away")
        return _script(CUT)(messages, kwargs)

    graph = _graph(bank, embedder, FakeChatModel(respond=respond))
    out = _run(graph, path)
    trace = out["trace"]
    assert trace["references"][0]["text"] == CUT  # the original, not lost
    assert trace["failures"] == []  # recorded, not fatal
    follow_up = next(c for c in trace["calls"] if c.get("recovery"))
    assert follow_up["ok"] is False and "endpoint went away" in follow_up["error"]
    assert trace["calls"][0]["recovered"] is False
    assert "the recovery follow-up failed" in render_trace(trace, out["answer"])


@pytest.mark.parametrize("path", ["call_model", "acall_model"])
def test_the_follow_up_ends_at_the_calls_deadline(path: str) -> None:
    """A follow-up slower than what is left of the call's timeout is cut there; the original
    reply stands."""

    def latency(messages: list[BaseMessage], kwargs: dict[str, Any]) -> float:
        return 5.0 if _is_follow_up(messages) else 0.0

    model = FakeChatModel(respond=_script(CUT), latency_s=latency)
    member = PoolModel(name="solo", chat_model=model)
    settings = SMCSConfig(max_tokens_multiple_choice=LIMIT)
    call = answer_call("single", member, 0, [HumanMessage(QUESTION)], settings, 0.5, None)
    assert call.family == "multiple_choice" and call.max_tokens == LIMIT
    outcome = call_model(call) if path == "call_model" else asyncio.run(acall_model(call))
    assert outcome.failure is None and outcome.message is not None
    assert outcome.message.content == CUT
    assert outcome.follow_up is not None and outcome.follow_up["error"].startswith("TimeoutError")
    assert [r.get("recovery", False) for r in outcome.records] == [False, True]

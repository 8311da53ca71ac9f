"""Answer recovery on a real local model: a multiple-choice reply cut off by a tiny token limit
gets one follow-up from the forced prefix over HTTP, and the finished text states a letter."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import HumanMessage

from smcs_graph import SMCSConfig, answers, build_graph
from smcs_graph._input import message_text
from smcs_graph.models import PoolModel
from smcs_graph.nodes._common import acall_model, answer_call
from smcs_graph.questions import QuestionRecord, prompt_for

pytestmark = pytest.mark.integration

LIMIT = 4
"""Far too few tokens to think it through: every reply is cut off before its answer line."""
SETTINGS = SMCSConfig(
    k=1, n_aggregations=1, n_sup_base=4, max_tokens=32, max_tokens_multiple_choice=LIMIT, seed=0
)
RECORD = QuestionRecord(
    id="capital-italy",
    family="multiple_choice",
    question="What is the capital of Italy?",
    choices=("Madrid", "Rome", "Berlin", "Paris"),
    answer="B",
)
RUN = {"max_concurrency": 16}


def test_a_cut_off_answer_is_finished_by_one_follow_up_through_the_graph(
    pool,
    disk_bank,
    embedder,
) -> None:
    graph = build_graph(pool, disk_bank, embedder, SETTINGS).compile()
    out = graph.invoke({"question": prompt_for(RECORD)}, RUN)
    trace = out["trace"]
    assert trace["answer_family"] == "multiple_choice" and trace["failures"] == []

    replies = [c for c in trace["calls"] if not c.get("recovery")]
    follow_ups = [c for c in trace["calls"] if c.get("recovery")]
    assert [c["stage"] for c in replies] == ["referencer", "aggregate"]
    assert all(c["hit_limit"] is True and c["output_tokens"] == LIMIT for c in replies)
    # The reference was cut before its answer line: exactly one follow-up finished it (a fusion
    # that stated its letter within the limit needs none).
    where = [(r["stage"], r["model"], r["index"]) for r in trace["recoveries"]]
    assert ("referencer", trace["referencers"][0], 0) in where
    assert sorted(where) == sorted((c["stage"], c["model"], c["index"]) for c in follow_ups)
    assert all(c["ok"] and 0 < c["output_tokens"] <= 4 for c in follow_ups)
    assert all(
        r["answered"] and r["ending"].startswith("The answer is (") for r in trace["recoveries"]
    )
    assert answers.final_answer("multiple_choice", trace["references"][0]["text"]) is not None
    assert answers.final_answer("multiple_choice", out["answer"]) is not None
    assert out["messages"][-1].usage_metadata["output_tokens"] == sum(
        c["output_tokens"] for c in trace["calls"]
    )


def test_the_guarded_call_recovers_a_reply_as_smcs_eval_asks_it(local_chat_models) -> None:
    name = "qwen2.5-coder-0.5b"
    member = PoolModel(name=name, chat_model=local_chat_models[name])
    call = answer_call(
        "single", member, 0, [HumanMessage(prompt_for(RECORD))], SETTINGS, 60.0, None
    )
    outcome = asyncio.run(acall_model(call))
    assert outcome.failure is None and outcome.message is not None
    assert outcome.record["hit_limit"] is True and outcome.follow_up is not None
    assert outcome.follow_up["ok"] and outcome.record["recovered"] is True
    assert answers.final_answer("multiple_choice", message_text(outcome.message)) is not None

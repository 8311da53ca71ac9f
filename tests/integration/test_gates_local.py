"""The prior gate on the real local pool: a confident question is answered by one model call,
and the same question with the gate out of reach runs the full method."""

from __future__ import annotations

import pytest

from smcs_graph import SMCSConfig, build_graph

pytestmark = pytest.mark.integration

ADAPTIVE = SMCSConfig(
    k=2,
    n_aggregations=1,
    n_sup_base=4,
    max_tokens=32,
    seed=0,
    collaboration="adaptive",
    # Qwen is right on every math question of the bank and at 50 % bank-wide: its shrunk
    # P(correct) on a math question lies strictly between 0.5 and 1.
    prior_gate_threshold=0.5,
)
QUESTION = "What is 5 times 8? Reply with the number only."
RUN = {"max_concurrency": 16}


def test_prior_gate_answers_a_confident_question_with_one_call(
    pool,
    disk_bank,
    embedder,
) -> None:
    out = (
        build_graph(pool, disk_bank, embedder, ADAPTIVE)
        .compile()
        .invoke({"question": QUESTION}, RUN)
    )
    trace = out["trace"]
    assert trace["gate"]["decision"] == "alone" and trace["gate"]["stage"] == "prior"
    assert trace["gate"]["model"] == "qwen2.5-coder-0.5b"
    assert 0.5 <= trace["gate"]["p_correct"]["qwen2.5-coder-0.5b"] < 1.0
    assert [(c["stage"], c["model"]) for c in trace["calls"]] == [
        ("referencer", "qwen2.5-coder-0.5b")
    ]
    assert trace["candidates"] == [] and out["answer"]


def test_a_gate_out_of_reach_runs_the_full_method(
    pool,
    disk_bank,
    embedder,
) -> None:
    settings = ADAPTIVE.replace(prior_gate_threshold=1.0)
    out = (
        build_graph(pool, disk_bank, embedder, settings)
        .compile()
        .invoke({"question": QUESTION}, RUN)
    )
    trace = out["trace"]
    assert trace["gate"]["decision"] == "collaborate"
    stages = [c["stage"] for c in trace["calls"]]
    assert stages.count("referencer") == 2 and stages.count("aggregate") == 1
    assert len(trace["candidates"]) == 1

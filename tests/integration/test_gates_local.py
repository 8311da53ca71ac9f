"""The prior gate on the real local pool: a confident question is answered by one model call,
and the same question with the gate out of reach runs the full method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from smcs_graph import BankQuestion, Pool, QuestionBank, SMCSConfig, build_graph
from smcs_graph.embedder import default_embedder

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
QUESTIONS = {
    "math-1": ("math", "What is 3 plus 4? Reply with the number only."),
    "math-2": ("math", "What is 6 times 7? Reply with the number only."),
    "math-3": ("math", "What is 10 minus 2? Reply with the number only."),
    "geo-1": ("geography", "What is the capital of Italy? Answer in one word."),
    "geo-2": ("geography", "What is the capital of Spain? Answer in one word."),
    "geo-3": ("geography", "What is the capital of Germany? Answer in one word."),
}
QUESTION = "What is 5 times 8? Reply with the number only."
RUN = {"max_concurrency": 16}


@pytest.fixture(scope="module")
def graph_parts(
    tmp_path_factory: pytest.TempPathFactory, local_chat_models: dict[str, Any]
) -> tuple[Pool, QuestionBank, Any]:
    embedder = default_embedder()
    path: Path = tmp_path_factory.mktemp("gates-bank")
    bank = QuestionBank.open(path, embedder)
    bank.add_questions(
        [BankQuestion(id=i, question=q, family=f) for i, (f, q) in QUESTIONS.items()]
    )
    bank.record_results("qwen2.5-coder-0.5b", {i: f == "math" for i, (f, _) in QUESTIONS.items()})
    bank.record_results("smollm2-135m", {i: f != "math" for i, (f, _) in QUESTIONS.items()})
    return Pool.from_chat_models(local_chat_models), bank, embedder


def test_prior_gate_answers_a_confident_question_with_one_call(graph_parts) -> None:
    pool, bank, embedder = graph_parts
    out = build_graph(pool, bank, embedder, ADAPTIVE).compile().invoke({"question": QUESTION}, RUN)
    trace = out["trace"]
    assert trace["gate"]["decision"] == "alone" and trace["gate"]["stage"] == "prior"
    assert trace["gate"]["model"] == "qwen2.5-coder-0.5b"
    assert 0.5 <= trace["gate"]["p_correct"]["qwen2.5-coder-0.5b"] < 1.0
    assert [(c["stage"], c["model"]) for c in trace["calls"]] == [
        ("referencer", "qwen2.5-coder-0.5b")
    ]
    assert trace["candidates"] == [] and out["answer"]


def test_a_gate_out_of_reach_runs_the_full_method(graph_parts) -> None:
    pool, bank, embedder = graph_parts
    settings = ADAPTIVE.replace(prior_gate_threshold=1.0)
    out = build_graph(pool, bank, embedder, settings).compile().invoke({"question": QUESTION}, RUN)
    trace = out["trace"]
    assert trace["gate"]["decision"] == "collaborate"
    stages = [c["stage"] for c in trace["calls"]]
    assert stages.count("referencer") == 2 and stages.count("aggregate") == 1
    assert len(trace["candidates"]) == 1

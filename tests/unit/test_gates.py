"""The adaptive collaboration gates on scripted models: prior gate, agreement gate, max_calls."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from smcs_graph import Pool, QuestionBank, SMCSConfig, build_graph
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.nodes.gates import agreement, fit_budget
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import make_pool

FAST = SMCSConfig(k=3, n_aggregations=4, n_sup_base=4, seed=7)
RUN = {"max_concurrency": 32}
MATH_Q = "What is 12 plus 30 added together?"


def _run(
    pool: Pool,
    bank: QuestionBank,
    embedder: HashingEmbedder,
    question: str = MATH_Q,
    **changes: Any,
) -> dict[str, Any]:
    graph = build_graph(pool, bank, embedder, FAST.replace(**changes)).compile()
    return graph.invoke({"messages": [HumanMessage(question)]}, RUN)


def _calls(fakes: dict[str, FakeChatModel]) -> int:
    return sum(len(f.calls) for f in fakes.values())


def _p_top(pool: Pool, bank: QuestionBank, embedder: HashingEmbedder) -> float:
    """The top model's P(correct) on MATH_Q, read from a run that never stops at the gate."""
    gate = _run(pool, bank, embedder, collaboration="adaptive", prior_gate_threshold=1.0)["trace"][
        "gate"
    ]
    assert gate["decision"] == "collaborate" and gate["model"] == "mathy"
    return float(gate["p_correct"]["mathy"])


def test_defaults_make_the_same_calls_as_the_full_method(pool, bank, embedder, fakes) -> None:
    out = _run(pool, bank, embedder)
    trace = out["trace"]
    assert trace["gate"] is None
    stages = [c["stage"] for c in trace["calls"]]
    assert stages.count("referencer") == 3 and stages.count("aggregate") == 4
    assert _calls(fakes) == 7
    assert len(trace["candidates"]) == 4


def test_prior_gate_answers_alone_with_one_call_when_confident(pool, bank, embedder, fakes) -> None:
    p_top = _p_top(pool, bank, embedder)
    assert 0.5 < p_top < 1.0  # mathy is right on every math question, shrunk toward 50 %
    for fake in fakes.values():
        fake._calls.clear()
    out = _run(pool, bank, embedder, collaboration="adaptive", prior_gate_threshold=p_top - 1e-5)
    trace = out["trace"]
    assert _calls(fakes) == 1 and len(fakes["mathy"].calls) == 1
    assert out["answer"] == "The answer is 42."
    assert trace["referencers"] == ["mathy"] and trace["candidates"] == []
    assert trace["gate"]["decision"] == "alone" and trace["gate"]["stage"] == "prior"
    assert "answered by mathy alone: P(correct)" in trace["gate"]["reason"]
    assert set(trace["gate"]["p_correct"]) == {"mathy", "histo", "weak"}
    assert [c["stage"] for c in trace["calls"]] == ["referencer"]


def test_prior_gate_collaborates_when_not_confident(pool, bank, embedder, fakes) -> None:
    p_top = _p_top(pool, bank, embedder)
    for fake in fakes.values():
        fake._calls.clear()
    out = _run(pool, bank, embedder, collaboration="adaptive", prior_gate_threshold=p_top + 1e-3)
    assert _calls(fakes) == 7
    assert out["trace"]["gate"]["decision"] == "collaborate"
    assert len(out["trace"]["candidates"]) == 4


def test_prior_gate_answers_alone_when_the_gain_is_too_small(pool, bank, embedder, fakes) -> None:
    out = _run(
        pool,
        bank,
        embedder,
        collaboration="adaptive",
        prior_gate_threshold=1.0,
        min_collaboration_gain=1.0,
    )
    assert _calls(fakes) == 1
    assert out["trace"]["gate"]["decision"] == "alone"
    assert "expected gain" in out["trace"]["gate"]["reason"]


def test_agreement_gate_skips_the_fusions_when_the_references_agree(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["12 + 30 = 42, so \\boxed{42}."]),
        "histo": FakeChatModel(responses=["Adding them: \\boxed{ 42 }"]),
        "weak": FakeChatModel(responses=["The answer is 42."]),
    }
    out = _run(make_pool(**fakes), bank, embedder, agreement_gate=True)
    trace = out["trace"]
    assert _calls(fakes) == 3
    assert [c["stage"] for c in trace["calls"]] == ["referencer"] * 3
    assert trace["gate"]["decision"] == "alone" and trace["gate"]["stage"] == "agreement"
    assert trace["gate"]["agreement"]["answers"] == ["42", "42", "42"]
    assert out["answer"] == "12 + 30 = 42, so \\boxed{42}."  # the top-prior reference


def test_agreement_gate_fuses_when_the_references_differ(pool, bank, embedder, fakes) -> None:
    out = _run(pool, bank, embedder, agreement_gate=True)
    trace = out["trace"]
    assert _calls(fakes) == 7
    assert trace["gate"]["decision"] == "collaborate"
    assert trace["gate"]["agreement"]["agree"] is False
    assert len(trace["candidates"]) == 4


def test_agreement_gate_uses_embeddings_without_an_extractor(bank, embedder) -> None:
    same = "It began in 1789 with the storming of the Bastille."
    fakes = {name: FakeChatModel(responses=[same]) for name in ("mathy", "histo", "weak")}
    question = "In which year did the French Revolution start?"
    out = _run(make_pool(**fakes), bank, embedder, question, agreement_gate=True)
    assert _calls(fakes) == 3
    assert out["trace"]["gate"]["agreement"]["method"] == "embedding similarity"


@pytest.mark.parametrize(
    ("max_calls", "referencers", "aggregations"),
    [(7, 3, 4), (5, 3, 2), (3, 2, 1), (1, 1, 0)],
)
def test_max_calls_caps_the_calls(
    pool, bank, embedder, fakes, max_calls, referencers, aggregations
) -> None:
    out = _run(pool, bank, embedder, max_calls=max_calls)
    trace = out["trace"]
    stages = [c["stage"] for c in trace["calls"]]
    assert _calls(fakes) == max_calls
    assert stages.count("referencer") == referencers
    assert stages.count("aggregate") == aggregations
    assert trace["referencers"][0] == "mathy"
    if aggregations:
        assert trace["gate"]["caps"] == {
            "max_calls": max_calls,
            "k": referencers,
            "n_aggregations": aggregations,
        }
    else:
        assert trace["gate"]["stage"] == "budget" and out["answer"] == "The answer is 42."


def test_the_gate_edge_is_drawn(pool, bank, embedder) -> None:
    drawn = build_graph(pool, bank, embedder).compile().get_graph()
    edges = {(e.source, e.target, e.conditional) for e in drawn.edges}
    assert ("drop_subsets", "aggregate", True) in edges
    assert ("drop_subsets", "score", True) in edges


def test_fit_budget_shrinks_n_first_then_k() -> None:
    assert fit_budget(3, 4, None) == (3, 4)
    assert fit_budget(3, 4, 10) == (3, 4)
    assert fit_budget(3, 4, 4) == (3, 1)
    assert fit_budget(3, 4, 3) == (2, 1)
    assert fit_budget(3, 4, 1) == (1, 0)


def test_agreement_extracts_by_family(embedder) -> None:
    assert agreement(["The answer is (B).", "Answer: B"], "multiple_choice", embedder, 0.9)["agree"]
    assert not agreement(["Answer: B", "Answer: C"], "multiple_choice", embedder, 0.9)["agree"]
    assert agreement(["#### 1,000", "The answer is 1000"], "numeric", embedder, 0.9)["agree"]
    assert not agreement(["\\boxed{1}", "no idea"], "math", embedder, 0.9)["agree"]


def test_references_as_candidates_can_beat_a_worse_fusion(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."]),
        "histo": FakeChatModel(responses=["It began in 1789."]),
        # The fixed aggregator writes a confused fusion (perplexity e^3).
        "weak": FakeChatModel(responses=["I do not know."], token_logprob=-3.0),
    }
    out = _run(make_pool(**fakes), bank, embedder, aggregator="weak", references_as_candidates=True)
    trace = out["trace"]
    sources = [c["source"] for c in trace["candidates"]]
    assert sources == ["fusion"] * 4 + ["reference"] * 3
    winner = next(c for c in trace["candidates"] if c["chosen"])
    assert winner["source"] == "reference" and out["answer"] != "I do not know."
    assert all(c["kwargs"].get("logprobs") is True for c in fakes["mathy"].calls)
    assert _calls(fakes) == 7


def test_references_are_no_candidates_by_default(pool, bank, embedder, fakes) -> None:
    trace = _run(pool, bank, embedder)["trace"]
    assert len(trace["candidates"]) == 4
    assert all("source" not in c for c in trace["candidates"])
    assert "logprobs" not in fakes["histo"].calls[0]["kwargs"]


def test_deadline_answers_with_the_references_that_arrived(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."]),
        "histo": FakeChatModel(responses=["It began in 1789."], latency_s=5.0),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    out = _run(make_pool(**fakes), bank, embedder, deadline_s=1.0)
    trace = out["trace"]
    # the slow reference was cut at the deadline (cancelled), not waited for
    assert ["TimeoutError" in f["error"] for f in trace["failures"]] == [True]
    assert out["answer"] == "The answer is 42."
    assert trace["gate"]["stage"] == "deadline" and "referencer histo" in trace["gate"]["reason"]
    assert [f["model"] for f in trace["failures"]] == ["histo"]
    assert not [c for c in trace["calls"] if c["stage"] == "aggregate"]


def test_deadline_cuts_slow_fusions_and_does_not_fail_over(bank, embedder) -> None:
    def slow_fusion(messages: Any, kwargs: dict[str, Any]) -> float:
        return 5.0 if kwargs.get("logprobs") else 0.0  # only aggregations ask for logprobs

    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."], latency_s=slow_fusion),
        "histo": FakeChatModel(responses=["It began in 1789."]),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    out = _run(make_pool(**fakes), bank, embedder, deadline_s=1.0)
    trace = out["trace"]
    fusions = [c for c in trace["calls"] if c["stage"] == "aggregate"]
    assert fusions and all("TimeoutError" in c.get("error", "") for c in fusions)  # cut, not waited
    assert out["answer"] == "The answer is 42." and trace["fallback"]
    assert "deadline reached: no failover to the next aggregator" in trace["notes"]
    assert {c["model"] for c in trace["calls"] if c["stage"] == "aggregate"} == {"mathy"}

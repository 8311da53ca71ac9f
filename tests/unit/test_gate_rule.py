"""The prior gate's own rule (`gate_rule`) and what `smcs calibrate` counts beyond the threshold:
answer-recovery follow-ups, a confidence bound on the calls target, and the rule choice."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import HumanMessage

from smcs_graph import BankQuestion, QuestionBank, SMCSConfig, build_graph
from smcs_graph.errors import ConfigError
from smcs_graph.offline.calibrate import bank_held_out, choose_threshold
from smcs_graph.offline.calibrate.choice import (
    choose_rule,
    followup_flags,
    rule_table,
    with_followups,
)
from smcs_graph.offline.calibrate.thresholds import HeldOut, point
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import make_pool

_POOL = ["alpha", "beta", "gamma"]
_WORDS = ["prime", "angle", "river", "empire", "vote", "atom", "gene", "loop", "orbit", "poem"]
_SKILL = {"alpha": (0.8, 0.3, 0.5), "beta": (0.3, 0.8, 0.4), "gamma": (0.2, 0.2, 0.7)}


def _bank(embedder: Any, drop: frozenset[str] = frozenset()) -> QuestionBank:
    """90 questions in 3 families, each model right with its family skill (seeded); `drop`:
    question ids left out (the bank without them)."""
    rng = np.random.default_rng(7)
    questions, outcomes = [], {m: {} for m in _POOL}
    for i in range(90):
        family = ("math", "history", "code")[i % 3]
        words = " ".join(rng.choice(_WORDS, size=4))
        qid = f"q{i:02d}"
        questions.append(BankQuestion(id=qid, question=f"{family} {words} {i}", family=family))
        for m in _POOL:
            outcomes[m][qid] = bool(rng.random() < _SKILL[m][i % 3])
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions([q for q in questions if q.id not in drop])
    for m in _POOL:
        bank.record_results(m, {q: v for q, v in outcomes[m].items() if q not in drop})
    return bank


def _fakes() -> dict[str, FakeChatModel]:
    return {m: FakeChatModel(model_name=m, responses=[f"{m} says 42."]) for m in _POOL}


def _alone(settings: SMCSConfig, bank: QuestionBank, embedder: Any, question: str) -> Any:
    """The model that answers `question` alone (the gate always stops: threshold 0)."""
    fakes = _fakes()
    graph = build_graph(make_pool(**fakes), bank, embedder, settings).compile()
    out = graph.invoke({"messages": [HumanMessage(question)]}, {"max_concurrency": 8})
    gate = out["trace"]["gate"]
    assert gate["decision"] == "alone"
    called = [m for m, f in fakes.items() if f.calls]
    assert called == [gate["model"]] and out["messages"][-1].content == f"{gate['model']} says 42."
    return gate


def test_the_gate_answers_alone_with_its_own_rules_most_probable_model(embedder) -> None:
    from smcs_graph.selection import fitted_rule, p_correct, prior_selection

    bank = _bank(embedder)
    base = SMCSConfig(
        k=3, n_aggregations=2, n_sup_base=12, collaboration="adaptive", prior_gate_threshold=0.0
    )
    own = base.replace(gate_rule="shrunk")
    differ = []
    for i in range(40):
        question = f"{('math', 'history', 'code')[i % 3]} {_WORDS[i % 10]} {_WORDS[(3 * i) % 10]}"
        support, priors = prior_selection(question, _POOL, bank, embedder, base)
        p = p_correct(support, _POOL, bank, own, priors)
        # The gate rule's P(correct) is that rule's own, not a calibration of paper's priors.
        alone = base.replace(prior_rule="shrunk")
        s2, pr2 = prior_selection(question, _POOL, bank, embedder, alone)
        expected = fitted_rule(bank, alone, calibrated=True).p_correct(
            _POOL, _evidence(s2), np.asarray(pr2)
        )
        np.testing.assert_allclose(p, np.clip(expected, 0, 1), atol=1e-12)
        if _POOL[int(np.argmax(priors))] != _POOL[int(np.argmax(p))]:
            differ.append((question, _POOL[int(np.argmax(priors))], _POOL[int(np.argmax(p))]))
    assert differ, "no question where the paper prior and the shrunk P(correct) disagree"
    question, paper_top, shrunk_top = differ[0]
    assert _alone(base, bank, embedder, question)["model"] == paper_top
    gate = _alone(own, bank, embedder, question)
    assert gate["model"] == shrunk_top and gate["rule"] == "shrunk"


def _evidence(support: Any) -> Any:
    from smcs_graph.selection import _evidence as evidence

    return evidence(support)


def test_calibration_holds_out_the_gate_rule_with_the_selections_referencers(embedder) -> None:
    bank = _bank(embedder)
    base = SMCSConfig(k=2, n_aggregations=2, n_sup_base=12)
    paper = bank_held_out(bank, _POOL, base, folds=0)
    own = bank_held_out(bank, _POOL, base.replace(gate_rule="shrunk"), folds=0)
    assert paper.rule == "paper" and own.rule == "shrunk"
    assert own.referencers == paper.referencers  # selection keeps prior_rule
    assert all(top in refs for top, refs in zip(own.top, own.referencers, strict=True))
    assert own.top != paper.top  # the gate's model follows its own rule somewhere
    # Equal to the gate the graph runs on the bank without the question.
    from smcs_graph.selection import p_correct, prior_selection

    snap = bank._snap()
    settings = base.replace(gate_rule="shrunk")
    for qid in ("q05", "q40"):
        without = _bank(embedder, drop=frozenset({qid}))
        row = snap.index[qid]
        support, priors = prior_selection(
            snap.texts[row], _POOL, without, embedder, settings, snap.matrix[row]
        )
        p = p_correct(support, _POOL, without, settings, priors, snap.matrix[row])
        i = own.question_ids.index(qid)
        assert abs(own.p_top[i] - p[_POOL.index(own.top[i])]) <= 1e-9


def _held(p_top: list[float], refs: tuple[str, ...] = ("a", "b", "c")) -> HeldOut:
    size = len(p_top)
    return HeldOut(
        question_ids=[f"q{i}" for i in range(size)],
        top=[refs[0]] * size,
        p_top=np.array(p_top),
        top_right=np.ones(size, dtype=bool),
        any_right=np.ones(size, dtype=bool),
        top_measured=np.ones(size, dtype=bool),
        k=len(refs),
        n=2,
        referencers=[refs] * size,
    )


def test_followups_count_where_a_family_recovers_answers() -> None:
    held = _held([0.1, 0.2, 0.3])
    families = {"q0": "multiple_choice", "q1": "math", "q2": "code"}
    replies = {
        ("q0", "a"): "B is right because...\n\nThe answer is (B)",  # finished by a follow-up
        ("q0", "b"): "The answer is (B). Because ...",
        ("q1", "a"): "x = 2\n\nThe final answer is $\\boxed{2}$",
        ("q1", "b"): "so $\\boxed{2}$",
        ("q2", "a"): "def f():\n\nThe answer is (",  # code: no recovery, never a follow-up
    }
    flags = followup_flags(replies, families)
    assert flags == {
        ("q0", "a"): True,
        ("q0", "b"): False,
        ("q1", "a"): True,
        ("q1", "b"): False,
        ("q2", "a"): False,
    }
    counted = with_followups(held, flags, families, aggregator="a")
    alone, full = counted.costs()
    # q0: a's reply had one (alone 2); escalated: a 2 + b 1 + c (no reply: its rate on the
    # family, none measured: 0) 1 + two fusions by a, each like a's reply: 2 + 2.
    assert alone.tolist() == [2.0, 2.0, 1.0]
    assert full.tolist() == [8.0, 8.0, 5.0]
    assert counted.followup_rate == pytest.approx(2 / 9)
    assert with_followups(held, {}, families, None) is held


def test_a_confidence_bound_escalates_fewer_than_the_mean() -> None:
    held = _held([i / 100 for i in range(100)])
    mean = choose_threshold(held, max_calls=2)
    bounded = choose_threshold(held, max_calls=2, confidence=0.9)
    assert mean.chosen.calls <= 2 and mean.chosen.escalation_rate == 0.25
    # 25 escalated of 100 at 5 calls: sd of the calls 1.74, z 1.28: the bound is 0.22 above.
    assert bounded.chosen.calls_bound <= 2 < point(held, mean.threshold, 0.9).calls_bound
    assert bounded.chosen.escalation_rate < mean.chosen.escalation_rate
    assert "90 % confidence" in bounded.target
    with pytest.raises(ConfigError, match=r"in \[0.5, 1\)"):
        choose_threshold(held, max_calls=2, confidence=1.0)


def test_follow_ups_lower_the_threshold_for_the_same_calls() -> None:
    held = _held([i / 100 for i in range(100)])
    families = {q: "math" for q in held.question_ids}
    flags = {(q, m): True for q in held.question_ids for m in ("a", "b", "c")}
    counted = with_followups(held, flags, families, aggregator=None)
    # Every answer takes 2 calls: 2 alone already, nothing may escalate.
    assert choose_threshold(counted, max_calls=2).chosen.escalation_rate == 0.0
    assert choose_threshold(held, max_calls=2).chosen.escalation_rate == 0.25


def _ruled(right: list[bool], ece_shift: float) -> Any:
    held = _held([0.5 + ece_shift] * len(right))
    held = dataclasses.replace(held, top_right=np.array(right))
    return choose_threshold(held, max_calls=2)


def test_the_rule_choice_takes_the_best_calibrated_of_the_tied() -> None:
    base = [True] * 60 + [False] * 40
    slightly_worse = [True] * 59 + [False] * 41  # one question: within one standard error
    much_worse = [True] * 45 + [False] * 55
    results = {
        "paper": _ruled(much_worse, 0.0),
        "hier": _ruled(slightly_worse, 0.09),  # P 0.59 against 0.59 observed: ECE 0
        "learned": _ruled(base, 0.3),  # P 0.8 against 0.6 observed
    }
    choice = choose_rule(results)
    assert choice.tied == ["hier", "learned"] and choice.rule == "hier"
    assert "<- chosen" in rule_table(choice).splitlines()[4]
    alone = choose_rule({"learned": results["learned"]})
    assert alone.rule == "learned" and alone.tied == ["learned"]
    with pytest.raises(ConfigError, match="no prior rule"):
        choose_rule({})

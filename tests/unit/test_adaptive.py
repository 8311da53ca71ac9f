"""Issue 13 on scripted models: distinct prior-drop subsets, the max_cost budget, budgets as
call keywords (chat model, server, `smcs ask`), and the gate's calibration on a known bank."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from starlette.testclient import TestClient

from smcs_graph import (
    BankQuestion,
    Pool,
    PoolModel,
    QuestionBank,
    SMCSChatModel,
    SMCSConfig,
    build_graph,
)
from smcs_graph.cli import main
from smcs_graph.core import prior_drop_distribution, prior_drop_subsets
from smcs_graph.core.prior_rules import BankArrays
from smcs_graph.errors import ConfigError
from smcs_graph.nodes import gates
from smcs_graph.nodes.gates import CostModel, fit_cost
from smcs_graph.offline.calibrate import (
    bank_held_out,
    choose_threshold,
    held_out,
    write_settings,
)
from smcs_graph.offline.calibrate.heldout import fold_of
from smcs_graph.offline.calibrate.thresholds import HeldOut
from smcs_graph.server import ServerSettings, create_app
from smcs_graph.testing import FakeChatModel

FAST = SMCSConfig(k=3, n_aggregations=4, n_sup_base=4, seed=7)
RUN = {"max_concurrency": 32}
MATH_Q = "What is 12 plus 30 added together?"


def _old_prior_drop_subsets(priors: Any, n: int, k_drop: int, seed: int) -> list[tuple[int, ...]]:
    """The i.i.d. draws as they were before `distinct` existed (copied from the old code)."""
    p = prior_drop_distribution(priors)
    size = max(p.shape[0] - k_drop, 1)
    gen = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        remaining, drawn = list(range(p.shape[0])), []
        for _ in range(size):
            weights = p[remaining]
            cumulative = np.cumsum(weights)
            pos = int(np.searchsorted(cumulative, gen.random() * float(weights.sum()), "right"))
            pos = min(pos, int(np.flatnonzero(weights > 0.0)[-1]))
            drawn.append(remaining.pop(pos))
        out.append(tuple(drawn))
    return out


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
def test_independent_draws_are_the_old_draws(seed: int) -> None:
    priors = [0.9, 0.2, 0.5, 0.1, 0.4]
    assert prior_drop_subsets(priors, 8, 2, rng=seed) == _old_prior_drop_subsets(priors, 8, 2, seed)


@pytest.mark.parametrize("seed", range(6))
def test_distinct_draws_give_n_different_subsets_when_there_are_enough(seed: int) -> None:
    priors = [5.0, 1.0, 0.9, 0.8]  # peaked: the independent draws repeat the top subset
    independent = prior_drop_subsets(priors, 4, 1, rng=seed)
    distinct = prior_drop_subsets(priors, 4, 1, rng=seed, distinct=True)
    assert len({frozenset(s) for s in distinct}) == 4 == math.comb(4, 3)
    assert distinct[0] == independent[0]  # the first draw is the same
    assert distinct == prior_drop_subsets(priors, 4, 1, rng=seed, distinct=True)  # seeded


def test_distinct_draws_repeat_only_once_every_subset_is_used() -> None:
    subsets = prior_drop_subsets([3.0, 2.0, 1.0], 5, 1, rng=0, distinct=True)
    sets = [frozenset(s) for s in subsets]
    assert len(set(sets[:3])) == 3 and len(set(sets[3:])) == 2


def test_distinct_falls_back_to_the_most_probable_unused_subset(monkeypatch) -> None:
    import itertools

    from smcs_graph.core import epe

    monkeypatch.setattr(epe, "DISTINCT_TRIES", 1)  # every repeat goes to the fallback
    priors = [5.0, 1.0, 0.9, 0.8, 0.1]
    p = prior_drop_distribution(priors)
    subsets = prior_drop_subsets(priors, 3, 2, rng=0, distinct=True)
    assert len({frozenset(s) for s in subsets}) == 3
    ranked = sorted(
        itertools.combinations(range(5), 3), key=lambda c: -epe.subset_probability(p, c)
    )
    # Every subset after the first is the first draw, or the most probable one not used yet.
    for i in range(1, 3):
        used = {frozenset(s) for s in subsets[:i]}
        best = next(c for c in ranked if frozenset(c) not in used)
        independent = prior_drop_subsets(priors, 3, 2, rng=0)
        assert frozenset(subsets[i]) in (frozenset(best), *map(frozenset, independent))
    # The probabilities of all subsets of a size sum to 1 (exact up to 6 positions).
    total = sum(epe.subset_probability(p, c) for c in itertools.combinations(range(5), 3))
    assert total == pytest.approx(1.0)


def test_the_graph_fuses_distinct_subsets_by_default(pool, bank, embedder) -> None:
    graph = build_graph(pool, bank, embedder, FAST.replace(n_aggregations=3)).compile()
    trace = graph.invoke({"messages": [HumanMessage(MATH_Q)]}, RUN)["trace"]
    assert len({frozenset(s) for s in trace["subsets"]}) == 3
    assert [sorted(c["subset"]) for c in trace["candidates"]] == [
        sorted(s) for s in trace["subsets"]
    ]


# ------------------------------------------------------------------ max_cost


def _priced_pool(price: float = 1e6) -> tuple[Pool, dict[str, FakeChatModel]]:
    """Every call costs `price` per Mtok of output: with max_tokens=100, 100 units a call
    at the default price; input is free."""
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."]),
        "histo": FakeChatModel(responses=["It began in 1789."]),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    members = [
        PoolModel(name=name, chat_model=fake, output_cost_per_mtok=price)
        for name, fake in fakes.items()
    ]
    return Pool(members), fakes


@pytest.mark.parametrize(
    ("max_cost", "referencers", "aggregations"),
    [(1e9, 3, 4), (700, 3, 4), (699, 3, 3), (350, 2, 1), (199, 1, 0), (0, 1, 0)],
)
def test_max_cost_shrinks_n_then_k_never_below_one_call(
    bank, embedder, max_cost, referencers, aggregations
) -> None:
    pool, fakes = _priced_pool()
    settings = FAST.replace(max_tokens=100, max_cost=max_cost)
    out = build_graph(pool, bank, embedder, settings).compile().invoke({"question": MATH_Q}, RUN)
    stages = [c["stage"] for c in out["trace"]["calls"]]
    assert stages.count("referencer") == referencers
    assert stages.count("aggregate") == aggregations
    assert sum(len(f.calls) for f in fakes.values()) == referencers + aggregations
    caps = out["trace"]["gate"]["caps"]
    assert caps["planned_cost"] == pytest.approx(100 * (referencers + aggregations))
    assert caps["full_cost"] == pytest.approx(700)
    assert "max_cost=" in out["trace"]["gate"]["reason"]


def test_models_without_prices_cost_nothing(pool, bank, embedder, fakes) -> None:
    settings = FAST.replace(max_cost=0)
    out = build_graph(pool, bank, embedder, settings).compile().invoke({"question": MATH_Q}, RUN)
    assert sum(len(f.calls) for f in fakes.values()) == 7
    assert out["trace"]["gate"]["caps"]["planned_cost"] == 0


def test_cost_model_counts_prompt_and_fused_references() -> None:
    costs = CostModel(
        referencers=[(1e6, 0.0)] * 3, aggregator=None, prompt_tokens=10, max_tokens=5, k_drop=1
    )
    # 3 referencers read 10 tokens; a fusion reads 10 + 2 references x 5 + the instructions.
    assert costs.cost(3, 0) == 30
    assert costs.cost(3, 1) > 30 + 20
    assert fit_cost(3, 4, costs.cost(3, 1), costs) == (3, 1)


# ------------------------------------------------------------------ budgets on every surface


def test_chat_model_takes_budgets_as_call_keywords(pool, bank, embedder, fakes) -> None:
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)
    reply = model.invoke(MATH_Q, max_calls=2, deadline_s=30)
    trace = reply.response_metadata["smcs_trace"]
    assert len(trace["calls"]) == 2 == sum(len(f.calls) for f in fakes.values())
    assert trace["gate"]["caps"]["max_calls"] == 2
    with pytest.raises(ConfigError, match="max_cost must be a number >= 0"):
        model.invoke(MATH_Q, max_cost=-1)


def _ask(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "smcs",
        "messages": [{"role": "user", "content": MATH_Q}],
        "smcs": {"trace": True, **(extra or {})},
    }
    return body


def test_server_budgets_within_the_operator_caps(pool, bank, embedder, fakes) -> None:
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)
    server = ServerSettings(max_calls_cap=3, deadline_s_cap=60)
    with TestClient(create_app(model, server)) as client:
        above = client.post("/v1/chat/completions", json=_ask({"max_calls": 4}))
        assert above.status_code == 400, above.text
        error = above.json()["error"]
        assert error["code"] == "above_cap" and error["param"] == "smcs.max_calls"
        assert "cap of 3" in error["message"]
        late = client.post("/v1/chat/completions", json=_ask({"deadline_s": 61}))
        assert late.status_code == 400 and late.json()["error"]["param"] == "smcs.deadline_s"
        bad = client.post("/v1/chat/completions", json=_ask({"max_cost": "lots"}))
        assert bad.status_code == 400 and "max_cost" in bad.json()["error"]["message"]

        one = client.post("/v1/chat/completions", json=_ask({"max_calls": 1, "max_cost": 5}))
        assert one.status_code == 200, one.text
        assert len(one.json()["smcs_trace"]["calls"]) == 1
        capped = client.post("/v1/chat/completions", json=_ask())  # no budget: the cap applies
        assert capped.status_code == 200, capped.text
        assert len(capped.json()["smcs_trace"]["calls"]) == 3


def test_server_settings_check_the_caps() -> None:
    with pytest.raises(ConfigError, match="max_calls_cap must be an integer >= 1"):
        ServerSettings(max_calls_cap=0)
    with pytest.raises(ConfigError, match="deadline_s_cap must be a number > 0"):
        ServerSettings(deadline_s_cap=0)


@pytest.fixture
def ask_cli(monkeypatch, tmp_path, pool, bank):
    """`smcs ask` in process on the scripted pool and the in-memory bank."""
    import smcs_graph.cli._common as common
    import smcs_graph.cli.ask as ask

    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(
        "models:\n  - name: mathy\n    base_url: http://127.0.0.1:9/v1\n"
        "smcs:\n  k: 3\n  n_aggregations: 4\n  n_sup_base: 4\n  seed: 7\n"
    )
    monkeypatch.setattr(common, "load_pool", lambda args, raw: pool)
    monkeypatch.setattr(ask, "open_bank", lambda args, create: bank)
    return ["ask", MATH_Q, "--pool", str(pool_file), "--bank", str(tmp_path), "--quiet"]


def test_ask_collaborate_adaptive_prints_the_gate_decision(ask_cli, fakes, capsys) -> None:
    code = main([*ask_cli, "--collaborate", "adaptive", "--set", "prior_gate_threshold=0.1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "gate: answered by mathy alone: P(correct) 0." in out and ">= 0.1" in out
    assert sum(len(f.calls) for f in fakes.values()) == 1


def test_ask_collaborate_always_overrides_the_pool_file(ask_cli, fakes, capsys) -> None:
    args = [*ask_cli, "--set", "collaboration=adaptive", "--set", "prior_gate_threshold=0"]
    assert main([*args, "--collaborate", "always"]) == 0
    assert sum(len(f.calls) for f in fakes.values()) == 7


def test_ask_budget_flags(ask_cli, fakes, capsys) -> None:
    assert main([*ask_cli, "--max-calls", "3", "--max-cost", "10", "--deadline", "60"]) == 0
    out = capsys.readouterr().out
    assert "gate: max_calls=3, max_cost=10" in out and "k=2, n_aggregations=1" in out
    assert sum(len(f.calls) for f in fakes.values()) == 3


# ------------------------------------------------------------------ calibration


def _held(p_top: list[float], top_right: list[bool], any_right: list[bool]) -> HeldOut:
    return HeldOut(
        question_ids=[f"q{i}" for i in range(len(p_top))],
        top=["a"] * len(p_top),
        p_top=np.array(p_top),
        top_right=np.array(top_right),
        any_right=np.array(any_right),
        top_measured=np.ones(len(p_top), dtype=bool),
        k=3,
        n=2,
    )


def test_the_threshold_meets_the_calls_target_by_hand() -> None:
    held = _held(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
        [False, False, False, True, False, True, True, True, True, True],
        [True, True, False, True, True, True, True, True, True, True],
    )
    # K + n = 5: 2 calls on average allow (2 - 1) / (5 - 1) = 25 % escalated, 2 of 10.
    result = choose_threshold(held, max_calls=2)
    assert result.threshold == 0.3
    assert result.chosen.escalation_rate == 0.2 and result.chosen.calls == pytest.approx(1.8)
    assert result.chosen.accuracy_low == 0.6 and result.chosen.accuracy_high == 0.8
    assert choose_threshold(held, escalation_rate=0.5).threshold == 0.6
    assert choose_threshold(held, max_calls=5).threshold == 1.0
    assert choose_threshold(held, max_calls=1).chosen.escalation_rate == 0.0


def test_impossible_targets_are_refused() -> None:
    held = _held([0.5, 0.6], [True, False], [True, True])
    with pytest.raises(ConfigError, match="at least one call"):
        choose_threshold(held, max_calls=0.5)
    with pytest.raises(ConfigError, match=r"fraction in \[0, 1\]"):
        choose_threshold(held, escalation_rate=1.5)


def _arrays(emb: Any, cap: Any, measured: Any, names: list[str]) -> BankArrays:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return BankArrays(unit.astype(np.float32), cap, measured, ["c"] * len(emb), names)


def test_held_out_leaves_each_question_out_of_its_own_estimate() -> None:
    # Two clusters of 4 questions; model a is right on cluster x only, b on none.
    emb = np.array([[1, 0.01 * i] for i in range(4)] + [[0.01 * i, 1] for i in range(4)])
    cap = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float64)
    measured = np.ones_like(cap, dtype=bool)
    settings = SMCSConfig(
        k=2, n_aggregations=1, n_sup_base=3, shrink_strength=0.0, prior_rule="shrunk"
    )
    arrays = _arrays(emb, cap, measured, ["a", "b"])
    held = held_out(arrays, list("abcdefgh"), ["a", "b"], settings)
    assert held.k == 2 and held.n == 1 and held.escalated_calls == 3
    assert held.scheme == "leave-one-out" and held.fits == 8
    assert held.platt_fits == 0  # 14 held-out outcomes: the gate's shrunk fallback
    assert held.top == ["a"] * 8
    # Strength 0: P(correct) is a's accuracy on the nearest OTHER questions of its cluster.
    np.testing.assert_allclose(held.p_top, [1.0] * 4 + [0.0] * 4)
    assert held.top_right.tolist() == [True] * 4 + [False] * 4


def test_a_bank_without_results_is_refused() -> None:
    none = np.zeros((2, 3))
    arrays = _arrays(np.eye(3), none, none.astype(bool), ["a", "b"])
    with pytest.raises(ConfigError, match="no results for the pool's models"):
        held_out(arrays, ["x", "y", "z"], ["a", "b"], SMCSConfig())
    with pytest.raises(ConfigError, match=r"give 0 \(leave-one-out\) or at least 2 folds"):
        fold_of(10, 1, seed=0)


_WORDS = ["prime", "angle", "river", "empire", "vote", "atom", "gene", "loop", "orbit", "poem"]
_FAMILIES = ("math", "history", "code")
_POOL = ["alpha", "beta", "gamma"]
_SKILL = {"alpha": (0.8, 0.3, 0.5), "beta": (0.3, 0.8, 0.4), "gamma": (0.2, 0.2, 0.7)}


def _skill_bank(embedder: Any, drop: set[str] = frozenset()) -> QuestionBank:
    """90 questions in 3 families; each model right with its family skill (seeded), a few
    results unmeasured; `drop`: question ids left out (the bank without them)."""
    rng = np.random.default_rng(7)
    questions, outcomes = [], {m: {} for m in _POOL}
    for i in range(90):
        family = _FAMILIES[i % 3]
        words = " ".join(rng.choice(_WORDS, size=4))
        qid = f"q{i:02d}"
        questions.append(BankQuestion(id=qid, question=f"{family} {words} {i}", family=family))
        for m in _POOL:
            right = bool(rng.random() < _SKILL[m][i % 3])
            if rng.random() > 0.05:
                outcomes[m][qid] = right
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions([q for q in questions if q.id not in drop])
    for m in _POOL:
        bank.record_results(m, {q: v for q, v in outcomes[m].items() if q not in drop})
    return bank


@pytest.mark.parametrize("rule", ["paper", "shrunk", "hier", "learned"])
def test_calibrate_gives_the_gates_p_correct_on_the_bank_without_the_question(
    embedder, rule: str
) -> None:
    from smcs_graph.selection import fitted_rule, p_correct, prior_selection

    settings = SMCSConfig(k=2, n_aggregations=2, n_sup_base=12, prior_rule=rule)
    full = _skill_bank(embedder)
    held = bank_held_out(full, _POOL, settings, folds=0)
    assert held.scheme == "leave-one-out" and len(held.question_ids) == 90
    assert held.rule == rule and held.platt_fits == held.fits == 90  # Platt, not the fallback
    snap = full._snap()
    for qid in ("q04", "q31", "q77"):
        without = _skill_bank(embedder, drop={qid})
        assert fitted_rule(without, settings, calibrated=True).calibration is not None
        row = snap.index[qid]
        query = snap.matrix[row]
        support, priors = prior_selection(
            snap.texts[row], _POOL, without, embedder, settings, query
        )
        p = p_correct(support, _POOL, without, settings, priors)
        gate = gates.prior_gate(dict(zip(_POOL, p, strict=True)), _referencers(priors), settings)
        i = held.question_ids.index(qid)
        assert held.top[i] == gate["model"]
        assert abs(held.p_top[i] - p[_POOL.index(gate["model"])]) <= 1e-9


def _referencers(priors: Any) -> list[str]:
    from smcs_graph.core import select_top_k

    return [_POOL[i] for i in select_top_k(np.asarray(priors), 2)]


def test_cross_fitted_folds_give_the_gate_on_the_bank_without_the_fold(embedder) -> None:
    from smcs_graph.selection import p_correct, prior_selection

    settings = SMCSConfig(k=2, n_aggregations=2, n_sup_base=12, prior_rule="shrunk")
    full = _skill_bank(embedder)
    held = bank_held_out(full, _POOL, settings, folds=3, seed=5)
    assert held.scheme == "3-fold cross-fitting" and held.fits == 3
    snap = full._snap()
    assignment = fold_of(len(snap.ids), 3, seed=5)
    fold = {snap.ids[i] for i in np.flatnonzero(assignment == assignment[10])}
    without = _skill_bank(embedder, drop=fold)
    qid = snap.ids[10]
    support, priors = prior_selection(
        snap.texts[10], _POOL, without, embedder, settings, snap.matrix[10]
    )
    p = p_correct(support, _POOL, without, settings, priors)
    i = held.question_ids.index(qid)
    top = _referencers(priors)[0]
    assert held.top[i] == top and abs(held.p_top[i] - p[_POOL.index(top)]) <= 1e-9


def test_settings_are_written_keeping_comments(tmp_path: Path) -> None:
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(
        "# my pool\nmodels:\n  - name: m  # the model\n    base_url: http://127.0.0.1:9/v1\n"
        "smcs:\n  k: 3   # all of them\n  prior_gate_threshold: 0.9  # old\n\n"
    )
    values = {"collaboration": "adaptive", "prior_gate_threshold": 0.31}
    assert write_settings(pool_file, values) == pool_file
    text = pool_file.read_text()
    assert "# my pool" in text and "- name: m  # the model" in text
    assert "  k: 3   # all of them" in text and "  prior_gate_threshold: 0.31  # old" in text
    assert '  collaboration: "adaptive"' in text
    from smcs_graph.models.pool import read_pool_file

    settings = read_pool_file(pool_file).settings
    assert settings.collaboration == "adaptive" and settings.prior_gate_threshold == 0.31
    copy = tmp_path / "copy.yaml"
    write_settings(pool_file, {"prior_gate_threshold": 0.5}, copy)
    assert read_pool_file(copy).settings.prior_gate_threshold == 0.5
    assert read_pool_file(pool_file).settings.prior_gate_threshold == 0.31


def test_the_packaged_pool_file_is_never_written(capsys) -> None:
    from smcs_graph.embedded.default import LOCAL_POOL_FILE

    before = LOCAL_POOL_FILE.read_text()
    with pytest.raises(ConfigError, match="--out FILE"):
        write_settings(LOCAL_POOL_FILE, {"prior_gate_threshold": 0.5})
    assert main(["calibrate", "--max-calls", "2"]) == 2
    assert "ships inside the smcs_graph package" in capsys.readouterr().err
    assert LOCAL_POOL_FILE.read_text() == before

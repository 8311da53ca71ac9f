"""`smcs eval`'s cost columns and new rows on scripted models: calls, tokens and median wall time
per question, truncation per family, the oracle, adaptive SMCS, the Pareto front, old folders."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from smcs_graph import Pool, QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.offline.cache import CachedResponse, ResponseCache
from smcs_graph.offline.evaluation.callpath import CallLog, chains, critical_path
from smcs_graph.offline.evaluation.generation import EvalOptions, evaluate, expand_methods
from smcs_graph.offline.evaluation.generation_report import (
    pareto_front,
    render_markdown,
    report_json,
    summarize,
    write_report,
)
from smcs_graph.offline.evaluation.results import MethodResult, ResultStore
from smcs_graph.testing import FakeChatModel
from tests.unit import test_eval
from tests.unit.test_eval import (
    CHOICE_IDS,
    CONFIG,
    NUMERIC_IDS,
    TEST_RECORDS,
    _solve,
    _user_text,
    by_method,
    make_pool,
    run,
    scripted,
)

embedder = test_eval.embedder  # the fixtures of test_eval
eval_bank = test_eval.eval_bank


def run_cached(bank: QuestionBank, out: Path, cache: Path, **options: Any) -> Any:
    return evaluate(
        make_pool(),
        bank,
        TEST_RECORDS,
        CONFIG,
        out,
        cache=cache,
        options=EvalOptions(progress=False, **options),
    )


def summary(result: Any, row: str) -> Any:
    return next(s for s in summarize(result) if s.row == row)


# --------------------------------------------------------------------------- wall time


def test_critical_path_is_the_slowest_call_of_each_stage_with_its_recovery() -> None:
    log = [
        CallLog("referencer", "a", 1.0, "The answer is 3", False),
        CallLog("referencer", "b", 3.0, "The answer is 4", False),
        CallLog("aggregate", "a", 1.5, "long reasoning", True),
        CallLog("aggregate", "a", 0.5, "short", False),
        # the follow-up that finishes the cut-off fusion: it runs after it, not beside it
        CallLog("aggregate", "a", 1.0, "4", True, prefilled="long reasoning\n\nThe answer is "),
    ]
    replies = chains(log)
    assert len(replies) == 4
    recovered = replies[2]
    assert recovered.text == "long reasoning\n\nThe answer is 4" and recovered.hit_limit
    assert recovered.seconds == 2.5 and recovered.recovered
    assert critical_path(replies) == 3.0 + 2.5
    unknown = [*log, CallLog("aggregate", "b", None, "x", False)]
    assert critical_path(chains(unknown)) is None  # a cached call from before seconds were kept
    assert critical_path([]) is None


def _set_seconds(cache: Path, seconds: dict[str, float]) -> None:
    """Give every stored response of each model the recorded seconds `seconds[model]`."""
    with sqlite3.connect(cache) as db:
        for key, model, blob in db.execute("SELECT key, model, response FROM responses"):
            payload = json.loads(blob)
            payload["seconds"] = seconds[model]
            db.execute(
                "UPDATE responses SET response = ? WHERE key = ?", (json.dumps(payload), key)
            )


def test_wall_time_per_question_replays_the_seconds_recorded_with_the_calls(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    cache = tmp_path / "calls.sqlite"
    methods = ("single", "best-single", "smcs", "vote-all", "oracle")
    first = run_cached(eval_bank, tmp_path / "first", cache, methods=methods)
    assert first.calls_made > 0
    timed = [r for r in first.results if r.seconds is not None]
    assert len(timed) == len(first.results)  # fresh calls record their seconds
    _set_seconds(cache, {"calc": 2.0, "geo": 5.0, "weak": 1.0})
    second = run_cached(eval_bank, tmp_path / "second", cache, methods=methods)
    assert second.calls_made == 0  # all cached: wall time comes from the recorded seconds
    rows = {s.row: s for s in summarize(second)}
    assert rows["single:calc"].median_seconds == 2.0
    assert rows["single:geo"].median_seconds == 5.0
    assert rows["best-single"].median_seconds == 2.0
    assert rows["vote-all"].median_seconds == rows["oracle"].median_seconds == 5.0
    # SMCS (K=2 referencers, n=3 fusions): the slowest referencer plus the slowest fusion.
    for result in (r for r in second.results if r.method == "smcs"):
        referencers = result.detail["referencers"]
        slowest = max({"calc": 2.0, "geo": 5.0, "weak": 1.0}[m] for m in referencers)
        aggregator = {"calc": 2.0, "geo": 5.0, "weak": 1.0}[result.detail["aggregator"]]
        assert result.seconds == slowest + aggregator
    assert "median s/q" in render_markdown(second)
    assert report_json(second)["methods"][0]["median_seconds"] is not None


def test_cached_responses_from_before_have_unknown_seconds(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("old", "m", CachedResponse("The answer is 3"))
        cache.put("new", "m", CachedResponse("The answer is 3", seconds=1.25))
        assert cache.get("old") is not None and cache.get("old").seconds is None  # type: ignore[union-attr]
        assert cache.get("new").seconds == 1.25  # type: ignore[union-attr]


# --------------------------------------------------------------------------- calls and tokens


def test_each_row_reports_calls_and_tokens_per_question(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    result = run(eval_bank, tmp_path / "eval", methods=("single", "smcs", "oracle"))
    n = len(TEST_RECORDS)
    smcs = summary(result, "smcs")
    assert smcs.results == n and smcs.per_question(smcs.calls) == 2 + 3
    single = summary(result, "single:calc")
    assert single.per_question(single.calls) == 1
    assert single.per_question(single.input_tokens) == single.input_tokens / n > 0
    methods = {m["row"]: m for m in report_json(result)["methods"]}
    assert methods["smcs"]["per_question"]["calls"] == 5
    # The oracle reads every single answer: their calls, with the recovery follow-ups of the
    # weak model's multiple-choice replies, which end without a letter.
    singles = [summary(result, f"single:{name}") for name in ("calc", "geo", "weak")]
    weak = singles[-1]
    choice_share = len(CHOICE_IDS) / n
    assert weak.per_question(weak.calls) == pytest.approx(1 + choice_share)
    expected = sum(s.per_question(s.calls) for s in singles)
    assert methods["oracle"]["per_question"]["calls"] == pytest.approx(expected)
    header = render_markdown(result).splitlines()
    assert any("calls/q | in tok/q | out tok/q | median s/q" in line for line in header)


# --------------------------------------------------------------------------- truncation


def cut_off(name: str) -> FakeChatModel:
    """Right on both families, but every answer runs into its token limit before the answer
    line (finish_reason "length"); a recovery follow-up (`finish`) then states the answer."""

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
        if isinstance(messages[-1], AIMessage):  # the recovery follow-up
            prompt = _user_text(messages[:-1])
            right = _solve(prompt)[0]
            return right.split("(")[-1] if "(" in right else right.split()[-1]
        if isinstance(messages[0], SystemMessage):
            return "fused"
        return AIMessage(
            content="Let me think about this step by step and", response_metadata={}
        ).model_copy(update={"response_metadata": {"finish_reason": "length"}})

    return FakeChatModel(model_name=name, respond=respond)


def test_truncation_per_family_hit_limit_and_no_final_answer(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    pool = make_pool()
    pool["weak"].chat_model = cut_off("weak")
    recovered = run(eval_bank, tmp_path / "on", pool=pool, methods=("single",))
    weak = summary(recovered, "single:weak")
    for family in ("numeric", "multiple_choice"):
        cell = weak.truncation[family]
        assert cell["hit_limit"] == cell["hit_known"] == cell["results"] > 0  # 100 % hit
        assert cell["no_final_answer"] == 0  # the follow-up stated it
    assert weak.correct == len(TEST_RECORDS)
    calc = summary(recovered, "single:calc").truncation["numeric"]
    assert calc["hit_limit"] == 0 and calc["no_final_answer"] == 0
    assert summary(recovered, "single:weak").per_question(weak.calls) == 2  # + the follow-up

    pool = make_pool()
    pool["weak"].chat_model = cut_off("weak")
    config = CONFIG.replace(answer_recovery=False)
    raw = run(eval_bank, tmp_path / "off", pool=pool, config=config, methods=("single",))
    cell = summary(raw, "single:weak").truncation["multiple_choice"]
    assert cell["hit_limit"] == cell["no_final_answer"] == cell["final_known"] > 0  # 100 %
    markdown = render_markdown(raw)
    assert "## Truncation (hit limit / no final answer, %)" in markdown
    assert "| single weak | 100.0 / 100.0 | 100.0 / 100.0 |" in markdown


def test_smcs_truncation_is_the_chosen_fusions(eval_bank: QuestionBank, tmp_path: Path) -> None:
    pool = make_pool()
    inner = scripted("numeric")
    assert inner.respond is not None
    answer = inner.respond

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
        text = answer(messages, kwargs)
        if isinstance(messages[0], SystemMessage):  # every fusion is cut off at its limit
            return AIMessage(content=str(text), response_metadata={"finish_reason": "length"})
        return text

    pool["calc"].chat_model = FakeChatModel(model_name="calc", respond=respond)
    config = CONFIG.replace(aggregator="calc")
    result = run(eval_bank, tmp_path / "eval", pool=pool, config=config, methods=("smcs",))
    smcs = [r for r in result.results if r.method == "smcs"]
    assert smcs and all(r.hit_limit is True for r in smcs)
    assert all(c["hit_limit"] is True for r in smcs for c in r.detail["candidates"])
    # the fusion stated its answer although it hit the limit: a final answer was found
    assert all(r.no_final_answer is False for r in smcs)


# --------------------------------------------------------------------------- new rows


def test_oracle_is_right_when_any_single_answer_is_right_and_makes_no_call(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    run(eval_bank, tmp_path / "eval", methods=("single",))
    resumed = run(eval_bank, tmp_path / "eval", methods=("single", "oracle"))
    assert resumed.calls_made == 0 and resumed.cache_hits == 0  # no call, not even a cached one
    table = by_method(resumed)
    assert all(table["oracle"].values())  # calc knows arithmetic, geo geography
    oracle = {r.question_id: r for r in resumed.results if r.method == "oracle"}
    assert {tuple(oracle[i].detail["right"]) for i in NUMERIC_IDS} == {("calc",)}
    assert {tuple(oracle[i].detail["right"]) for i in CHOICE_IDS} == {("geo",)}
    assert all(oracle[r.id].answer == _solve(r.question)[0] for r in TEST_RECORDS)


def test_adaptive_rows_follow_the_prior_gate_threshold(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    config = CONFIG.replace(collaboration="adaptive", prior_gate_threshold=0.0)
    result = run(
        eval_bank,
        tmp_path / "eval",
        config=config,
        methods=("smcs", "smcs-adaptive", "single"),
        thresholds=(0.0, 1.0),
    )
    assert not result.failures
    assert result.rows[:3] == ["smcs", "smcs-adaptive", "smcs-adaptive@0"]
    rows = {s.row: s for s in summarize(result)}
    n = len(TEST_RECORDS)
    # `smcs` stays the paper's method whatever the run's gates; the run's gate answers alone
    assert rows["smcs"].calls == n * 5
    assert rows["smcs-adaptive"].calls == rows["smcs-adaptive@0"].calls == n
    assert rows["smcs-adaptive@1"].calls > n
    assert any("always collaborating" in note for note in result.notes)
    alone = [r for r in result.results if r.method == "smcs-adaptive@0"]
    assert all(len(r.detail["referencers"]) >= 1 for r in alone)
    paths = write_report(result, tmp_path / "eval")
    assert paths["calls"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_expand_methods_adds_the_threshold_rows() -> None:
    rows = expand_methods(["smcs", "smcs-adaptive", "oracle"], ["a"], [], [0.9, 0.5, 0.5])
    assert rows == ["smcs", "smcs-adaptive", "smcs-adaptive@0.5", "smcs-adaptive@0.9", "oracle"]
    assert expand_methods(["smcs"], ["a"], [], [0.7]) == ["smcs", "smcs-adaptive@0.7"]
    with pytest.raises(ConfigError, match="between 0 and 1"):
        EvalOptions(thresholds=(1.5,))


def test_pareto_front_is_the_best_accuracy_for_at_most_that_many_calls() -> None:
    points = [
        (1.0, 40.0),  # best single: on the front
        (1.0, 30.0),  # as many calls, less accurate
        (5.0, 38.0),  # more calls, less accurate than one call
        (1.6, 45.0),  # adaptive: on the front
        (3.0, 45.0),  # as accurate with more calls: off
        (7.0, 50.0),  # on the front
    ]
    assert pareto_front(points) == [0, 3, 5]
    assert pareto_front([(2.0, 10.0), (2.0, 10.0)]) == [0, 1]
    assert pareto_front([]) == []


# --------------------------------------------------------------------------- MoA on the local pool


def test_moa_and_self_moa_run_with_a_fixed_aggregator_and_no_logprobs(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    pool = Pool.from_chat_models(
        {
            name: scripted(knows).model_copy(update={"logprobs": False})
            for name, knows in (("calc", "numeric"), ("geo", "multiple_choice"), ("weak", "none"))
        }
    )
    config = CONFIG.replace(aggregator="calc")  # as the local pool file fixes it
    result = run(
        eval_bank, tmp_path / "eval", pool=pool, config=config, methods=("moa", "self-moa")
    )
    assert not result.failures
    for row in ("moa", "self-moa"):
        runs = [r for r in result.results if r.method == row]
        assert len(runs) == len(TEST_RECORDS)
        assert all(r.detail["aggregator"] == "calc" for r in runs)
        assert not any(r.detail["perplexity_available"] for r in runs)
        assert all(r.calls >= 2 and r.correct is not None for r in runs)


# --------------------------------------------------------------------------- old folders


def test_a_folder_from_before_loads_and_gains_the_new_rows(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    folder = tmp_path / "eval"
    run(eval_bank, folder, methods=("single",))
    db = sqlite3.connect(folder / "results.sqlite")
    # as an older version wrote it: no gate settings, results without the new fields
    settings = json.loads(db.execute("SELECT value FROM meta").fetchone()[0])
    old = {k: v for k, v in settings.items() if not k.startswith("config.agreement")}
    old = {k: v for k, v in old.items() if k not in ("config.collaboration",)}
    db.execute("UPDATE meta SET value = ?", (json.dumps(old),))
    for method, qid, payload in db.execute("SELECT method, question_id, payload FROM results"):
        data = json.loads(payload)
        for key in ("seconds", "hit_limit", "no_final_answer"):
            data.pop(key)
        db.execute(
            "UPDATE results SET payload = ? WHERE method = ? AND question_id = ?",
            (json.dumps(data), method, qid),
        )
    db.commit()
    db.close()
    resumed = run(eval_bank, folder, methods=("single", "oracle"))
    assert resumed.calls_made == 0
    single = summary(resumed, "single:calc")
    assert single.median_seconds is None and single.n == len(TEST_RECORDS)
    assert "| single calc |" in render_markdown(resumed)
    # another prompt version is refused by name
    store = ResultStore(folder / "results.sqlite")
    current = json.loads(
        sqlite3.connect(folder / "results.sqlite").execute("SELECT value FROM meta").fetchone()[0]
    )
    with pytest.raises(ConfigError, match="prompt_version: stored"):
        store.check_settings({**current, "prompt_version": 99})
    store.close()
    assert (
        MethodResult.from_json(
            {
                "method": "m",
                "question_id": "q",
                "family": "numeric",
                "category": "",
                "correct": True,
                "answer": "1",
            }
        ).seconds
        is None
    )

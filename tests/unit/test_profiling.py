"""Profiling a pool on a bank: what gets asked, graded, recorded, cached, retried and reported."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from smcs_graph import BankQuestion, ConfigError, HashingEmbedder, Pool, PoolModel, QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.grading import Verdict
from smcs_graph.offline.cache import CachedResponse, ResponseCache, is_transient
from smcs_graph.offline.profiling import (
    GenerationSettings,
    aprofile_pool,
    profile_pool,
    question_key,
)
from smcs_graph.questions import QuestionRecord, prompt_for
from smcs_graph.testing import FakeChatModel

REPO = Path(__file__).resolve().parents[2]
LETTERS = "ABCD"


def mc_records(n: int, start: int = 0) -> list[QuestionRecord]:
    """Multiple-choice questions whose gold letter cycles A, B, C, D."""
    return [
        QuestionRecord(
            id=f"toy/{i}",
            family="multiple_choice",
            question=f"Toy question number {i}: which option is right?",
            choices=("red", "green", "blue", "yellow"),
            answer=LETTERS[i % 4],
            category=("even", "odd")[i % 2],
            source="toy",
        )
        for i in range(start, start + n)
    ]


def new_bank(records: Sequence[QuestionRecord], path: Path | None = None) -> QuestionBank:
    embedder = HashingEmbedder(64)
    bank = QuestionBank.in_memory(embedder) if path is None else QuestionBank.open(path, embedder)
    bank.add_questions([BankQuestion.from_record(r) for r in records])
    return bank


def letter_for(model: str, prompt: str) -> str:
    """A deterministic 'skill': each model picks a letter from a hash of its name and prompt."""
    return LETTERS[int(hashlib.sha256(f"{model}|{prompt}".encode()).hexdigest(), 16) % 4]


def answering(model: str, **kwargs: Any) -> FakeChatModel:
    def respond(messages: list[BaseMessage], _: dict[str, Any]) -> str:
        return f"The answer is ({letter_for(model, str(messages[-1].content))})"

    return FakeChatModel(model_name=model, respond=respond, **kwargs)


def expected_matrix(models: Sequence[str], records: Sequence[QuestionRecord]) -> np.ndarray:
    return np.array(
        [[letter_for(m, prompt_for(r)) == r.answer for r in records] for m in models], dtype=float
    )


class LoggedFakeChatModel(FakeChatModel):
    """A fake for subprocess runs: answers like `answering` and appends each call to a file."""

    log_path: str = ""

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        await asyncio.sleep(self._delay(messages, kwargs))
        prompt = str(messages[-1].content)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{self.model_name}\t{hashlib.sha256(prompt.encode()).hexdigest()}\n")
        message = AIMessage(
            content=f"The answer is ({letter_for(self.model_name, prompt)})",
            usage_metadata={"input_tokens": 10, "output_tokens": 4, "total_tokens": 14},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# ---------------------------------------------------------------------- what gets asked


def test_every_model_answers_every_question_and_results_match_the_grades() -> None:
    records = mc_records(12)
    bank = new_bank(records)
    fakes = {"alpha": answering("alpha"), "beta": answering("beta")}
    report = profile_pool(bank, Pool.from_chat_models(fakes), progress=False)
    cap, measured = bank.capability(["alpha", "beta"], [r.id for r in records])
    assert measured.all()
    np.testing.assert_array_equal(cap, expected_matrix(["alpha", "beta"], records))
    assert report.failed == []
    for name, fake in fakes.items():
        assert len(fake.calls) == 12
        tally = report.models[name]
        assert tally.recorded == 12 and tally.calls == 12 and tally.cached == 0
        assert tally.correct == int(cap[list(fakes).index(name)].sum())
    # Prompts are the family prompts; the generation settings travel with each call.
    sent = fakes["alpha"].calls[0]
    assert str(sent["messages"][-1].content) in {prompt_for(r) for r in records}
    assert sent["kwargs"] == {"temperature": 0.0, "max_tokens": 1024, "seed": 0}


def test_a_rerun_asks_nothing() -> None:
    bank = new_bank(mc_records(6))
    fake = answering("alpha")
    pool = Pool.from_chat_models({"alpha": fake})
    profile_pool(bank, pool, progress=False)
    report = profile_pool(bank, pool, progress=False)
    assert len(fake.calls) == 6
    assert report.models["alpha"].pending == 0 and report.answers == 0


def test_adding_one_model_profiles_only_that_model() -> None:
    records = mc_records(8)
    bank = new_bank(records)
    first = {"alpha": answering("alpha"), "beta": answering("beta")}
    profile_pool(bank, Pool.from_chat_models(first), progress=False)
    before, _ = bank.capability(["alpha", "beta"])
    again = {"alpha": answering("alpha"), "beta": answering("beta"), "gamma": answering("gamma")}
    report = profile_pool(bank, Pool.from_chat_models(again), progress=False)
    assert len(again["alpha"].calls) == 0 and len(again["beta"].calls) == 0
    assert len(again["gamma"].calls) == 8
    assert report.models["gamma"].recorded == 8 and report.models["alpha"].pending == 0
    after, measured = bank.capability(["alpha", "beta", "gamma"], [r.id for r in records])
    assert measured.all()
    np.testing.assert_array_equal(after[:2], before)
    np.testing.assert_array_equal(after[2], expected_matrix(["gamma"], records)[0])


def test_adding_questions_profiles_only_those() -> None:
    bank = new_bank(mc_records(5))
    profile_pool(bank, Pool.from_chat_models({"alpha": answering("alpha")}), progress=False)
    added = mc_records(3, start=5)
    bank.add_questions([BankQuestion.from_record(r) for r in added])
    fake = answering("alpha")
    profile_pool(bank, Pool.from_chat_models({"alpha": fake}), progress=False)
    asked = {str(c["messages"][-1].content) for c in fake.calls}
    assert asked == {prompt_for(r) for r in added}
    assert bank.coverage() == {"alpha": 8}


def test_models_option_limits_the_run_and_rejects_unknown_names() -> None:
    bank = new_bank(mc_records(4))
    fakes = {"alpha": answering("alpha"), "beta": answering("beta")}
    pool = Pool.from_chat_models(fakes)
    profile_pool(bank, pool, models=["beta"], progress=False)
    assert len(fakes["alpha"].calls) == 0 and bank.models == ["beta"]
    with pytest.raises(ConfigError, match="not in the pool"):
        profile_pool(bank, pool, models=["nobody"], progress=False)


def test_questions_that_cannot_be_graded_are_skipped_before_any_call() -> None:
    bank = new_bank(mc_records(2))
    bank.add_questions([BankQuestion(id="free/1", question="Tell me a story.", family="general")])
    fake = answering("alpha")
    report = profile_pool(bank, Pool.from_chat_models({"alpha": fake}), progress=False)
    assert len(fake.calls) == 2
    assert "free/1" in report.skipped and "no grader" in report.skipped["free/1"]
    assert "skipped 1" in report.summary()


def test_a_custom_grader_is_used() -> None:
    bank = new_bank(mc_records(3))
    pool = Pool.from_chat_models({"alpha": FakeChatModel(responses=["yes"])})

    def always_right(record: QuestionRecord, response: str) -> Verdict:
        return Verdict(correct=response == "yes")

    profile_pool(bank, pool, grader=always_right, progress=False)
    cap, measured = bank.capability(["alpha"])
    assert measured.all() and cap.all()


# ---------------------------------------------------------------------- tokens and cost


def test_tokens_and_cost_are_tallied_per_model() -> None:
    bank = new_bank(mc_records(4))
    member = PoolModel(
        name="paid",
        chat_model=answering("paid"),
        input_cost_per_mtok=2.0,
        output_cost_per_mtok=10.0,
    )
    report = profile_pool(bank, Pool([member]), progress=False)
    tally = report.models["paid"]
    assert tally.input_tokens > 0 and tally.output_tokens == 4 * 4  # "The answer is (X)"
    assert tally.cost == pytest.approx(
        (tally.input_tokens * 2.0 + tally.output_tokens * 10.0) / 1e6
    )
    assert "cost" in report.summary()


# ---------------------------------------------------------------------- cache and resume


def test_cached_responses_are_regraded_when_the_bank_write_was_lost(tmp_path: Path) -> None:
    records = mc_records(6)
    bank = new_bank(records, tmp_path / "bank")
    cache = tmp_path / "responses.sqlite"
    profile_pool(bank, Pool.from_chat_models({"alpha": answering("alpha")}), cache=cache)
    expected, _ = bank.capability(["alpha"])
    # Lose some results (as if the process died between the cache commit and the bank write).
    bank.record_results("alpha", {"toy/1": None, "toy/4": None})
    fresh = answering("alpha")
    report = profile_pool(bank, Pool.from_chat_models({"alpha": fresh}), cache=cache)
    assert len(fresh.calls) == 0
    assert report.models["alpha"].cached == 2 and report.models["alpha"].recorded == 2
    np.testing.assert_array_equal(bank.capability(["alpha"])[0], expected)


def response(text: str, input_tokens: int, output_tokens: int) -> CachedResponse:
    return CachedResponse(text, {"input_tokens": input_tokens, "output_tokens": output_tokens})


def test_bulk_cache_reads_and_writes_match_single_ones(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "responses.sqlite") as cache:
        cache.put_many([(f"k{i}", "m", response(f"text {i}", i, 2 * i)) for i in range(1200)])
        cache.put_many([("k7", "m", response("second", 0, 0))])  # the first is kept
        keys = [f"k{i}" for i in range(0, 1300, 3)]  # past SQLite's bound parameters per query
        found = cache.get_many(keys)
        assert set(found) == {k for k in keys if int(k[1:]) < 1200}
        assert all(found[k] == cache.get(k) for k in found)
        assert cache.get("k7") == response("text 7", 7, 14)
        assert len(cache) == 1200


def test_the_run_thaws_the_heap_it_froze_and_keeps_a_callers_freeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spies, not freeze counts: frozen objects that are freed leave the count, so it drifts.
    calls: list[str] = []
    real_freeze, real_unfreeze = gc.freeze, gc.unfreeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append("freeze"), real_freeze())[1])
    monkeypatch.setattr(gc, "unfreeze", lambda: (calls.append("unfreeze"), real_unfreeze())[1])
    records = mc_records(4)
    profile_pool(new_bank(records), Pool.from_chat_models({"alpha": answering("alpha")}))
    assert calls == ["freeze", "unfreeze"] and gc.get_freeze_count() == 0

    real_freeze()  # the caller's own freeze
    try:
        calls.clear()
        report = profile_pool(
            new_bank(records), Pool.from_chat_models({"alpha": answering("alpha")})
        )
        assert report.models["alpha"].recorded == 4
        assert calls == []  # left as the caller set it
        assert gc.get_freeze_count() > 0
    finally:
        real_unfreeze()


def test_other_generation_settings_miss_the_cache(tmp_path: Path) -> None:
    records = mc_records(3)
    cache = tmp_path / "responses.sqlite"
    profile_pool(
        new_bank(records), Pool.from_chat_models({"alpha": answering("alpha")}), cache=cache
    )
    fake = answering("alpha")
    profile_pool(
        new_bank(records), Pool.from_chat_models({"alpha": fake}), cache=cache, max_tokens=16
    )
    assert len(fake.calls) == 3 and fake.calls[0]["kwargs"]["max_tokens"] == 16


def test_per_family_answer_limits_and_their_cache_keys(tmp_path: Path) -> None:
    numeric = [
        QuestionRecord(
            id=f"num/{i}", family="numeric", question=f"What is {i} plus 1?", answer=str(i + 1)
        )
        for i in range(2)
    ]
    records = mc_records(2) + numeric
    cache = tmp_path / "responses.sqlite"
    fake = answering("alpha")
    profile_pool(
        new_bank(records),
        Pool.from_chat_models({"alpha": fake}),
        cache=cache,
        max_tokens=300,
        family_max_tokens={"multiple_choice": 8},
    )
    limits = sorted(call["kwargs"]["max_tokens"] for call in fake.calls)
    assert limits == [8, 8, 300, 300]
    # a run whose plain limit equals a family's limit reuses those responses
    again = answering("alpha")
    profile_pool(
        new_bank(mc_records(2)),
        Pool.from_chat_models({"alpha": again}),
        cache=cache,
        max_tokens=8,
    )
    assert again.calls == []
    with pytest.raises(ConfigError, match="multiple_choice"):
        GenerationSettings(family_max_tokens=(("multiple_choice", 0),))


def test_the_default_cache_lies_beside_an_on_disk_bank(tmp_path: Path) -> None:
    bank = new_bank(mc_records(2), tmp_path / "bank")
    report = profile_pool(bank, Pool.from_chat_models({"alpha": answering("alpha")}))
    assert report.cache_path == tmp_path / "bank.responses.sqlite"
    with ResponseCache(report.cache_path) as cache:
        assert len(cache) == 2


def test_cache_keys_cover_model_question_prompt_and_settings(tmp_path: Path) -> None:
    base = GenerationSettings()
    key = question_key("m", "q1", "text", "prompt", base)
    assert key == question_key("m", "q1", "text", "prompt", GenerationSettings())
    for other in (
        question_key("n", "q1", "text", "prompt", base),
        question_key("m", "q2", "text", "prompt", base),
        question_key("m", "q1", "other text", "prompt", base),
        question_key("m", "q1", "text", "other prompt", base),
        question_key("m", "q1", "text", "prompt", GenerationSettings(temperature=0.5)),
        question_key("m", "q1", "text", "prompt", GenerationSettings(seed=1)),
        question_key("m", "q1", "text", "prompt", GenerationSettings(max_tokens=5)),
    ):
        assert other != key
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put(key, "m", response("first", 3, 2))
        cache.put(key, "m", response("second", 3, 2))  # the first one stays
    with ResponseCache(path) as reopened:
        hit = reopened.get(key)
        assert hit is not None and hit.text == "first" and len(reopened) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_folder_or_a_broken_file_is_a_clear_cache_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        ResponseCache(tmp_path)
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="cannot use"):
        ResponseCache(broken)


# ---------------------------------------------------------------------- failures and retries


class HTTPStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def test_transient_errors_are_retried_with_backoff() -> None:
    bank = new_bank(mc_records(4))
    attempts: dict[str, int] = {}

    def flaky(messages: list[BaseMessage], _: dict[str, Any]) -> str:
        prompt = str(messages[-1].content)
        attempts[prompt] = attempts.get(prompt, 0) + 1
        if attempts[prompt] == 1:
            raise ConnectionError("connection reset")
        if attempts[prompt] == 2:
            raise HTTPStatusError(503)
        return f"The answer is ({letter_for('flaky', prompt)})"

    fake = FakeChatModel(respond=flaky)
    report = profile_pool(bank, Pool.from_chat_models({"flaky": fake}), backoff_s=0.001)
    tally = report.models["flaky"]
    assert tally.retries == 8 and tally.calls == 4 and tally.recorded == 4
    assert report.failed == [] and set(attempts.values()) == {3}


def test_client_errors_are_not_retried_and_the_failing_model_is_reported() -> None:
    bank = new_bank(mc_records(4))
    tried: list[str] = []

    def rejected(messages: list[BaseMessage], _: dict[str, Any]) -> str:
        tried.append(str(messages[-1].content))
        raise HTTPStatusError(400)

    pool = Pool.from_chat_models(
        {"good": answering("good"), "bad": FakeChatModel(respond=rejected)}
    )
    report = profile_pool(bank, pool, backoff_s=0.001, progress=False)
    assert len(tried) == 4  # one attempt per question: a 400 is not worth retrying
    assert report.failed == ["bad"]
    assert report.models["bad"].failures == 4 and report.models["bad"].retries == 0
    assert "HTTP 400" in report.summary() and "FAILED bad" in report.summary()
    assert bank.coverage() == {"good": 4}  # the good model's results are kept


def test_a_model_that_keeps_failing_is_given_up() -> None:
    bank = new_bank(mc_records(10))
    attempts = 0

    def count(messages: list[BaseMessage], kwargs: dict[str, Any]) -> float:
        nonlocal attempts
        attempts += 1
        return 0.0

    down = FakeChatModel(latency_s=count, error=ConnectionError("refused"))
    report = profile_pool(
        bank,
        Pool.from_chat_models({"down": down}),
        retries=1,
        backoff_s=0.001,
        concurrency=1,
        max_consecutive_failures=3,
        progress=False,
    )
    tally = report.models["down"]
    assert tally.abandoned and tally.failures == 3
    assert attempts == 3 * 2  # three questions, two attempts each, then no more calls
    assert report.failed == ["down"] and "given up" in report.summary()
    assert bank.coverage() == {}


def test_grader_errors_are_reported_and_leave_the_entry_masked() -> None:
    bank = new_bank(mc_records(3))

    def broken(record: QuestionRecord, response: str) -> Verdict:
        raise RuntimeError("grader bug")

    report = profile_pool(
        bank, Pool.from_chat_models({"alpha": answering("alpha")}), grader=broken, progress=False
    )
    assert report.models["alpha"].grading_errors == 3 and report.failed == ["alpha"]
    assert bank.coverage() == {}


def test_transient_error_classification() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")
    assert is_transient(ConnectionError())
    assert is_transient(TimeoutError())
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(openai.APIConnectionError(request=request))
    assert is_transient(openai.APITimeoutError(request=request))
    for status in (500, 502, 503, 408, 429):
        assert is_transient(HTTPStatusError(status))
    for status in (400, 401, 403, 404, 422):
        assert not is_transient(HTTPStatusError(status))
    assert not is_transient(ValueError("bad"))


class _GatedModel(FakeChatModel):
    """Calls wait until `target` calls were in flight at once (or 10 s pass), so the peak reaches
    the limit by construction, not by overlapping sleeps; more than `target` at once shows too."""

    target: int = 1
    in_flight: int = 0
    peak: int = 0

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            for _ in range(2000):
                if self.peak >= self.target:  # the limit was reached once: let the rest flow
                    break
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)  # let any call beyond the limit start, if one could
            return await super()._agenerate(messages, stop, run_manager, **kw)
        finally:
            self.in_flight -= 1


def test_calls_in_flight_stay_within_the_concurrency_limit() -> None:
    bank = new_bank(mc_records(12))
    gated = _GatedModel(target=3, responses=["The answer is (A)"])
    profile_pool(bank, Pool.from_chat_models({"m": gated}), concurrency=3, progress=False)
    assert gated.peak == 3
    # Without --concurrency the pool entry's max_concurrency applies.
    gated = _GatedModel(target=2, responses=["The answer is (A)"])
    profile_pool(
        bank, Pool([PoolModel(name="n", chat_model=gated, max_concurrency=2)]), progress=False
    )
    assert gated.peak == 2


def test_bad_options_are_config_errors() -> None:
    bank = new_bank(mc_records(1))
    pool = Pool.from_chat_models({"alpha": answering("alpha")})
    for options in ({"concurrency": 0}, {"max_tokens": 0}, {"retries": -1}, {"timeout_s": 0}):
        with pytest.raises(ConfigError):
            profile_pool(bank, pool, progress=False, **options)


async def test_the_sync_wrapper_refuses_a_running_loop_and_the_async_one_works() -> None:
    bank = new_bank(mc_records(2))
    pool = Pool.from_chat_models({"alpha": answering("alpha")})
    with pytest.raises(RuntimeError, match="await aprofile_pool"):
        profile_pool(bank, pool)
    report = await aprofile_pool(bank, pool, progress=False)
    assert report.answers == 2


def test_progress_bar_shows_rate_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    bank = new_bank(mc_records(3))
    profile_pool(bank, Pool.from_chat_models({"alpha": answering("alpha")}), progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "answer/s" in err


# ---------------------------------------------------------------------- SIGKILL and resume


def _pool_file(path: Path, log: Path, latency: float) -> None:
    entries = []
    for name in ("slow-a", "slow-b"):
        entries.append(
            f"  - name: {name}\n"
            '    class: "tests.unit.test_profiling:LoggedFakeChatModel"\n'
            f"    kwargs: {{model_name: {name}, latency_s: {latency}, log_path: '{log}'}}\n"
        )
    path.write_text("models:\n" + "".join(entries))


def _smcs(*args: str) -> list[str]:
    return [sys.executable, "-m", "smcs_graph", *args]


def _log_lines(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(m, h) for m, h in (line.split("\t") for line in lines)]


def test_a_sigkilled_profile_run_resumes_without_losing_or_repeating_results(
    tmp_path: Path,
) -> None:
    records = mc_records(30)
    models = ["slow-a", "slow-b"]
    prompt_hash = {r.id: hashlib.sha256(prompt_for(r).encode()).hexdigest() for r in records}

    # The reference: one uninterrupted run, in process, on a bank of its own.
    reference_bank = new_bank(records, tmp_path / "reference")
    reference_log = tmp_path / "reference.log"
    profile_pool(
        reference_bank,
        Pool.from_chat_models(
            {m: LoggedFakeChatModel(model_name=m, log_path=str(reference_log)) for m in models}
        ),
        progress=False,
    )
    reference, _ = reference_bank.capability(models, [r.id for r in records])
    reference_bank.close()

    bank_path = tmp_path / "bank"
    new_bank(records, bank_path).close()
    log = tmp_path / "calls.log"
    pool_file = tmp_path / "pool.yaml"
    _pool_file(pool_file, log, latency=0.15)
    cache = tmp_path / "responses.sqlite"
    command = _smcs(
        "profile",
        "--pool",
        str(pool_file),
        "--bank",
        str(bank_path),
        "--embedder",
        "hashing:64",
        "--cache",
        str(cache),
        "--concurrency",
        "2",
        "--batch-size",
        "4",
        "--no-progress",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while len(_log_lines(log)) < 24 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    calls_before = _log_lines(log)
    assert 24 <= len(calls_before) < len(records) * len(models)

    with ResponseCache(cache) as saved:
        # `smcs profile` asks as the pool file's settings say (here the defaults).
        settings = GenerationSettings.from_settings(SMCSConfig()).for_family("multiple_choice")
        committed = {
            (m, r.id)
            for m in models
            for r in records
            if saved.get(question_key(m, r.id, r.question, prompt_for(r), settings))
        }
    assert committed, "nothing was committed before the kill"

    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    calls_after = _log_lines(log)[len(calls_before) :]

    by_hash = {h: i for i, h in prompt_hash.items()}
    asked_again = {(m, by_hash[h]) for m, h in calls_after}
    assert not asked_again & committed, "a response saved in the cache was requested again"
    assert len(calls_after) == len(asked_again)  # no question asked twice in the rerun
    every_pair = {(m, r.id) for m in models for r in records}
    assert committed | asked_again == every_pair
    # Calls made twice are only those in flight at the kill: at most 2 per model.
    assert len(calls_before) + len(calls_after) <= len(every_pair) + 2 * len(models)

    bank = QuestionBank.open(bank_path, HashingEmbedder(64), create=False)
    matrix, measured = bank.capability(models, [r.id for r in records])
    assert measured.all()
    np.testing.assert_array_equal(matrix, reference)

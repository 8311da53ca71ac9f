"""The offline jobs' response cache: stable keys, version-1 files migrated, calls made once,
retries only on transient errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from smcs_graph.errors import ConfigError
from smcs_graph.offline.cache import SCHEMA_VERSION, CachedResponse, ResponseCache, RetryPolicy
from smcs_graph.offline.evaluation.calls import call_key
from smcs_graph.offline.profiling import GenerationSettings, question_key


def test_keys_are_those_of_version_1_files() -> None:
    # Digests computed by the version-1 code (profiling's ResponseCache.key, evaluation's
    # call_key): a changed key would silently turn every saved (paid) response into a miss.
    prompt = "Frage: Wie viel ist 2+2?"
    key = question_key("m", "q1", "Wie viel ist 2+2?", prompt, GenerationSettings())
    assert key == "19ae5bc2c060041d2de745c5c3a787a0723937bf4d16f4da15ddcb6c2147e40f"
    messages = [SystemMessage("sys"), HumanMessage("é 1+1?")]
    settings = {"temperature": 0.7, "max_tokens": 64, "seed": 3}
    assert (
        call_key("m", messages, settings, 1)
        == "98498e4cfd69421c6dfc8491bd0cd107a971933479b51ade6041122886830f39"
    )


def test_version_1_files_of_profiling_and_evaluation_are_migrated(tmp_path: Path) -> None:
    profiled = tmp_path / "bank.responses.sqlite"
    with sqlite3.connect(profiled) as db:
        db.execute(
            "CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, question_id TEXT"
            " NOT NULL, text TEXT NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER"
            " NOT NULL, created REAL NOT NULL)"
        )
        db.execute("INSERT INTO responses VALUES ('k1', 'm', 'q1', 'The answer is (B)', 9, 4, 1)")
    evaluated = tmp_path / "calls.sqlite"
    with sqlite3.connect(evaluated) as db:
        db.execute(
            "CREATE TABLE calls (key TEXT PRIMARY KEY, model TEXT NOT NULL,"
            " response TEXT NOT NULL, created REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO calls VALUES ('k2', 'm', ?, 1)",
            ('{"content": "42", "usage": null, "logprobs": {"content": []}}',),
        )
    with ResponseCache(profiled) as cache:
        hit = cache.get("k1")
        assert hit is not None and hit.text == "The answer is (B)"
        assert (hit.input_tokens, hit.output_tokens) == (9, 4) and len(cache) == 1
    with ResponseCache(evaluated) as cache:
        hit = cache.get("k2")
        assert hit == CachedResponse("42", logprobs={"content": []}) and len(cache) == 1
    for path in (profiled, evaluated):
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            assert "calls" not in tables
        with ResponseCache(path) as reopened:  # a second open migrates nothing
            assert len(reopened) == 1


def test_a_newer_cache_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer than this smcs-graph reads"):
        ResponseCache(path)


def test_a_response_survives_the_round_trip_as_a_message() -> None:
    message = AIMessage(
        content=[{"type": "text", "text": "4"}, {"type": "text", "text": "2"}],
        usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        response_metadata={"logprobs": {"content": []}, "finish_reason": "stop"},
    )
    with ResponseCache(None) as cache:
        cache.put("k", "m", CachedResponse.from_message(message))
        stored = cache.get("k")
    assert stored is not None and stored.text == "42" and stored.output_tokens == 2
    again = stored.to_message()
    assert again.content == message.content and again.usage_metadata == message.usage_metadata
    assert again.response_metadata == {"logprobs": {"content": []}, "finish_reason": "stop"}


async def test_fetch_makes_identical_requests_in_flight_once_and_commits_first() -> None:
    made: list[str] = []

    async def call() -> CachedResponse:
        made.append("call")
        await asyncio.sleep(0.01)
        return CachedResponse("answer")

    with ResponseCache(None) as cache:
        first, second = await asyncio.gather(
            cache.fetch("k", "m", call), cache.fetch("k", "m", call)
        )
        third = await cache.fetch("k", "m", call)
        assert first == second == third == CachedResponse("answer") and made == ["call"]
        assert (cache.calls, cache.hits, len(cache)) == (1, 2, 1)


async def test_retries_only_transient_errors_and_gives_up_after_the_last() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("reset")
        return "ok"

    retried: list[BaseException] = []
    assert await RetryPolicy(retries=2, backoff_s=0.001).run(flaky, retried.append) == "ok"
    assert len(attempts) == 3 and len(retried) == 2

    async def refused() -> str:
        attempts.append(1)
        raise ValueError("bad request")

    attempts.clear()
    with pytest.raises(ValueError):
        await RetryPolicy(retries=5, backoff_s=0.001).run(refused)
    assert len(attempts) == 1

    async def hangs() -> str:
        attempts.append(1)
        await asyncio.sleep(10)
        return "never"

    attempts.clear()
    with pytest.raises(TimeoutError):
        await RetryPolicy(retries=1, backoff_s=0.001, timeout_s=0.01).run(hangs)
    assert len(attempts) == 2  # a timeout is transient: tried once more

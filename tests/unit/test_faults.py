"""Faults against fake HTTP endpoints on 127.0.0.1: hung, dead and garbage-speaking models.

Model calls end at their deadline (retries included) and are cancelled, not abandoned; hung
calls never starve healthy ones; failed aggregations fail over, and a run with no fusion left
answers with the top-prior reference; the circuit breaker passes over a model that just
failed; garbage bodies are named as malformed responses; settings are bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from smcs_graph import Pool, QuestionBank, SMCSConfig, SMCSError, build_graph
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.errors import ConfigError
from tests.unit._fake_endpoints import FakeEndpoints

ROOT = Path(__file__).resolve().parents[2]
MATH_QUESTION = "What is 12 plus 30 added together?"
SETTINGS = SMCSConfig(k=3, n_aggregations=2, n_sup_base=4, seed=7)
RUN = {"max_concurrency": 32}


@pytest.fixture
def endpoints() -> Iterator[FakeEndpoints]:
    with FakeEndpoints() as server:
        yield server


def pool_of(*entries: dict[str, Any]) -> Pool:
    return Pool.from_config({"models": list(entries)})


def run(pool: Pool, bank: QuestionBank, embedder: HashingEmbedder, **changes: Any) -> Any:
    graph = build_graph(pool, bank, embedder, SETTINGS.replace(**changes)).compile()
    return graph.invoke({"messages": [HumanMessage(MATH_QUESTION)]}, RUN)


def failed(trace: dict[str, Any], model: str) -> list[str]:
    return [f["error"] for f in trace["failures"] if f["model"] == model]


# ---------------------------------------------------------------- deadlines and cancellation


def test_a_hung_referencer_is_cancelled_at_its_deadline_and_the_run_answers(
    endpoints, bank, embedder
) -> None:
    pool = pool_of(
        endpoints.entry("mathy"), endpoints.entry("histo", "hang"), endpoints.entry("weak")
    )
    out = run(pool, bank, embedder, referencer_timeout_s=1.0)
    assert out["answer"].startswith("The answer from")
    assert any("TimeoutError" in e for e in failed(out["trace"], "histo"))
    # Cancelled, not abandoned: the client hangs up at the deadline (the old thread pool left
    # the request open for as long as the endpoint held it).
    assert endpoints.wait_for_hangup("histo", within=10.0)


async def test_a_hung_referencer_is_cancelled_on_the_async_path_too(
    endpoints, bank, embedder
) -> None:
    pool = pool_of(
        endpoints.entry("mathy"), endpoints.entry("histo", "hang"), endpoints.entry("weak")
    )
    graph = build_graph(pool, bank, embedder, SETTINGS.replace(referencer_timeout_s=1.0))
    out = await graph.compile().ainvoke({"messages": [HumanMessage(MATH_QUESTION)]})
    assert out["answer"] and failed(out["trace"], "histo")
    assert endpoints.wait_for_hangup("histo", within=10.0)


def test_the_pool_entry_timeout_covers_every_retry(endpoints, bank, embedder) -> None:
    # The client retries twice; under one deadline the first attempt uses all of it. (Before,
    # each attempt had the whole timeout: 4 s took 13.4 s over three requests.)
    pool = pool_of(
        endpoints.entry("mathy"),
        endpoints.entry("histo", "hang", timeout_s=1.0),
        endpoints.entry("weak"),
    )
    out = run(pool, bank, embedder)
    (call,) = [c for c in out["trace"]["calls"] if c["model"] == "histo"]
    assert not call["ok"] and "TimeoutError" in call["error"]
    assert endpoints.requests["histo"] == 1
    assert call["seconds"] < 1.0 + 2.0


def test_retries_after_errors_stop_at_the_deadline(endpoints, bank, embedder) -> None:
    # HTTP 500 is retried with backoff (0.4-0.5 s, then 0.75-1 s): a 0.6 s deadline ends
    # during the second backoff, so the third attempt never starts.
    pool = pool_of(
        endpoints.entry("mathy"),
        endpoints.entry("histo", "error", timeout_s=0.6),
        endpoints.entry("weak"),
    )
    out = run(pool, bank, embedder)
    (call,) = [c for c in out["trace"]["calls"] if c["model"] == "histo"]
    assert not call["ok"] and endpoints.requests["histo"] < 3


def test_healthy_models_never_time_out_because_other_calls_hung(endpoints, bank, embedder) -> None:
    hung = pool_of(*[endpoints.entry(f"h{i}", "hang") for i in range(8)])
    for _ in range(5):  # 40 hung calls: more than any shared worker pool holds
        with pytest.raises(SMCSError):
            run(hung, bank, embedder, k=8, referencer_timeout_s=0.3)
    healthy = pool_of(*[endpoints.entry(f"m{i}", "slow0.3") for i in range(8)])
    out = run(healthy, bank, embedder, k=8, referencer_timeout_s=3.0)
    assert out["trace"]["failures"] == []
    assert len(out["trace"]["references"]) == 8


# ---------------------------------------------------------------- graceful degradation


def test_a_dead_top_prior_model_still_yields_an_answer(endpoints, bank, embedder) -> None:
    # mathy has the top prior on a math question, so it is the aggregator; it is dead.
    pool = pool_of(
        endpoints.entry("mathy", "error"), endpoints.entry("histo"), endpoints.entry("weak")
    )
    trace = run(pool, bank, embedder)["trace"]
    assert trace["aggregators"][0] == "mathy" and trace["aggregator"] == "histo"
    assert trace["candidates"] and {c["aggregator"] for c in trace["candidates"]} == {"histo"}
    assert trace["fallback"] is None
    assert any(s["model"] == "mathy" and s["stage"] == "aggregate" for s in trace["skipped"])


def test_failed_aggregations_fail_over_to_the_next_model_by_prior(
    endpoints, bank, embedder
) -> None:
    pool = pool_of(
        endpoints.entry("mathy", "nofuse"), endpoints.entry("histo"), endpoints.entry("weak")
    )
    trace = run(pool, bank, embedder, breaker_cooldown_s=0)["trace"]
    assert trace["references"][0]["model"] == "mathy"
    assert {f["stage"] for f in trace["failures"] if f["model"] == "mathy"} == {"aggregate"}
    assert {c["aggregator"] for c in trace["candidates"]} == {"histo"}
    assert any("histo" in note and "fail" in note for note in trace["notes"])


def test_with_no_fusion_left_the_top_prior_reference_answers_and_the_trace_says_so(
    endpoints, bank, embedder
) -> None:
    pool = pool_of(
        endpoints.entry("mathy", "nofuse"),
        endpoints.entry("histo", "nofuse"),
        endpoints.entry("weak", "nofuse"),
    )
    out = run(pool, bank, embedder, breaker_cooldown_s=0)
    trace = out["trace"]
    assert trace["candidates"] == [] and trace["chosen"] is None
    assert out["answer"] == "The answer from mathy is 42."
    assert "mathy" in trace["fallback"] and "no aggregation" in trace["fallback"]
    assert {f["model"] for f in trace["failures"]} == {"mathy", "histo", "weak"}


def test_require_fusion_fails_the_run_naming_every_failure(endpoints, bank, embedder) -> None:
    pool = pool_of(
        endpoints.entry("mathy", "nofuse"),
        endpoints.entry("histo", "nofuse"),
        endpoints.entry("weak", "nofuse"),
    )
    with pytest.raises(SMCSError, match="every aggregation failed") as caught:
        run(pool, bank, embedder, breaker_cooldown_s=0, require_fusion=True)
    assert all(name in str(caught.value) for name in ("mathy", "histo", "weak"))


def test_the_circuit_breaker_passes_over_a_model_that_just_failed(
    endpoints, bank, embedder
) -> None:
    pool = pool_of(
        endpoints.entry("mathy"), endpoints.entry("histo", "error"), endpoints.entry("weak")
    )
    first = run(pool, bank, embedder)["trace"]
    assert "histo" in first["referencers"] and failed(first, "histo")
    second = run(pool, bank, embedder)["trace"]
    assert "histo" not in second["referencers"] and not failed(second, "histo")
    (skip,) = [s for s in second["skipped"] if s["model"] == "histo"]
    assert skip["stage"] == "select_priors" and "failed" in skip["reason"]
    assert endpoints.requests["histo"] == 3  # one call, retried twice by the client; then none
    # With no cool-down the model is asked again.
    third = run(pool, bank, embedder, breaker_cooldown_s=0)["trace"]
    assert "histo" in third["referencers"] and third["skipped"] == []


def test_a_fixed_aggregator_is_never_replaced_the_top_prior_reference_answers(
    endpoints, bank, embedder
) -> None:
    pool = pool_of(
        endpoints.entry("mathy"), endpoints.entry("histo", "nofuse"), endpoints.entry("weak")
    )
    out = run(pool, bank, embedder, aggregator="histo")
    trace = out["trace"]
    assert trace["aggregators"] == ["histo"] and trace["candidates"] == []
    assert {f["model"] for f in trace["failures"]} == {"histo"}
    assert out["answer"] == "The answer from mathy is 42." and "mathy" in trace["fallback"]


# ---------------------------------------------------------------- messages and bounds


def test_a_garbage_body_is_reported_as_a_malformed_response(endpoints, bank, embedder) -> None:
    pool = pool_of(
        endpoints.entry("mathy"), endpoints.entry("histo", "garbage"), endpoints.entry("weak")
    )
    (error,) = failed(run(pool, bank, embedder)["trace"], "histo")
    assert f"the endpoint {endpoints.url} returned a malformed response" in error
    assert "histo" in error and "UnicodeDecodeError" not in error


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("n_aggregations", 1000, "64"),
        ("max_tokens", 10**12, "1000000"),
        ("k", 10_000, "256"),
        ("referencer_timeout_s", 1e9, "86400"),
    ],
)
def test_settings_have_upper_bounds(field: str, value: Any, bound: str) -> None:
    with pytest.raises(ConfigError, match=bound):
        SMCSConfig(**{field: value})


def test_every_pool_entry_has_a_timeout(endpoints) -> None:
    from smcs_graph.models.pool import DEFAULT_TIMEOUT_S, read_pool_file

    pool = pool_of(endpoints.entry("a"), endpoints.entry("b", timeout_s=5))
    assert pool["a"].timeout_s == DEFAULT_TIMEOUT_S and pool["b"].timeout_s == 5
    local = read_pool_file(ROOT / "smcs_graph" / "data" / "local_pool.yaml")
    assert all(entry["timeout_s"] > 0 for entry in local.data["models"])


# ---------------------------------------------------------------- exit and Ctrl-C

_SCRIPT = """
import sys
from langchain_core.messages import HumanMessage
from smcs_graph import Pool, QuestionBank, SMCSConfig, build_graph
from smcs_graph.embedder import HashingEmbedder

url, timeout = sys.argv[1], float(sys.argv[2])
entries = [{{"name": n, "base_url": url, "model": b + ":" + n}}
           for n, b in (("a", "ok"), ("b", "hang"), ("c", "ok"))]
pool = Pool.from_config({{"models": entries}})
bank = QuestionBank.in_memory(HashingEmbedder(dimension=16))
settings = SMCSConfig(k=3, n_aggregations=2, referencer_timeout_s=timeout)
graph = build_graph(pool, bank, HashingEmbedder(dimension=16), settings).compile()
{body}
"""


def _script(body: str) -> str:
    return _SCRIPT.format(body=textwrap.dedent(body))


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def test_the_process_exits_once_the_answer_is_out(endpoints) -> None:
    body = """
    out = graph.invoke({"question": "What is 2 plus 2?"}, {"max_concurrency": 8})
    print("ANSWER", out["answer"], flush=True)
    """
    done = subprocess.run(
        [sys.executable, "-c", _script(body), endpoints.url, "1.0"],
        capture_output=True,
        text=True,
        timeout=120,  # the old code never exited: its abandoned thread waited on the endpoint
        env=_env(),
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "ANSWER The answer from" in done.stdout


def test_ctrl_c_cancels_the_calls_in_flight_and_exits_cleanly(endpoints) -> None:
    body = """
    from smcs_graph.nodes import cancel_calls_on_interrupt

    try:
        with cancel_calls_on_interrupt():
            graph.invoke({"question": "What is 2 plus 2?"}, {"max_concurrency": 8})
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", _script(body), endpoints.url, "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 90
        while not endpoints.requests["b"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert endpoints.requests["b"], "the hung call never started"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert endpoints.wait_for_hangup("b", within=5.0)

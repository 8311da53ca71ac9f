"""The embedded default on its real parts: the three local models over HTTP, the default bank
built from the committed matrix with MiniLM on disk, `smcs ask` as a subprocess, and the graph
served by `langgraph dev` (the LangGraph API server Studio talks to) on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smcs_graph.bank.importer import read_matrix
from smcs_graph.config import SMCSConfig
from smcs_graph.embedded.default import (
    MATRIX_FILE,
    local_config,
    local_model_names,
    open_default_bank,
)
from smcs_graph.models.local import LocalModelError, locate_parts
from smcs_graph.questions import load_records

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODES = {"select_priors", "referencer", "drop_subsets", "aggregate", "score"}


def _missing_models() -> str | None:
    for name in local_model_names():
        try:
            locate_parts(name)
        except LocalModelError as exc:
            return str(exc)
    return None


@pytest.fixture(scope="module")
def cache(smcs_cache: Path) -> Path:
    reason = _missing_models()
    if reason is not None:
        pytest.skip(f"local models not installed: {reason}")
    return smcs_cache


@pytest.fixture(scope="module")
def default_bank(cache: Path):
    bank = open_default_bank(cache / "default-bank", progress=False)
    yield bank
    bank.close()


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SMCS_CACHE_DIR=str(cache),
        HF_HUB_OFFLINE="1",
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
    )
    return env


def _ask_json(cache: Path, *args: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """`smcs ask --json ARGS` as a process on the embedded default: its trace, and the run."""
    done = subprocess.run(
        [str(BIN / "smcs"), "ask", "--json", *args],
        capture_output=True,
        text=True,
        env=_env(cache),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout), done


def test_default_bank_holds_the_committed_matrix_and_a_disjoint_test_split(default_bank) -> None:
    matrix = read_matrix(MATRIX_FILE)
    assert matrix.models == local_model_names()
    assert len(default_bank) == len(matrix.ids) >= 400
    coverage = default_bank.coverage()
    for model in matrix.models:
        assert coverage[model] == len(matrix.results[model])
        values, measured = default_bank.capability([model], list(matrix.results[model]))
        assert measured.all()
        assert values[0].tolist() == [float(v) for v in matrix.results[model].values()]
    families = {q.family for q in default_bank.get(default_bank.question_ids())}
    assert {"math", "multiple_choice", "code", "instruction"} <= families
    folder = Path(default_bank.where)
    test = load_records(folder.with_name(f"{folder.name}.test.jsonl"))
    assert len(test) >= 100
    assert not {r.id for r in test} & set(default_bank.question_ids())


def test_smcs_ask_runs_the_local_pool_on_the_default_bank(cache: Path, default_bank) -> None:
    # The full method (the embedded default is adaptive; the gates have their own tests).
    trace, done = _ask_json(cache, "--collaborate", "always", "What is 15 + 27? Give the number.")
    models = set(local_model_names())
    answered = [r for r in trace["references"] if r["text"].strip()]
    assert len(answered) >= 2 and {r["model"] for r in answered} <= models
    assert len(trace["candidates"]) >= 2
    assert trace["perplexity_available"] is True
    assert all(c["perplexity"] is not None and c["perplexity"] >= 1.0 for c in trace["candidates"])
    assert sum(c["chosen"] for c in trace["candidates"]) == 1
    assert trace["bank_size"] == len(default_bank) and trace["support_size"] >= 1
    assert set(trace["priors"]) == models
    assert trace["usage"]["output_tokens"] > 0
    # Progress went to stderr while it ran, stage by stage.
    for stage in ("starting the pool", "bank ready", "[select_priors]", "[aggregate]", "[score]"):
        assert stage in done.stderr, done.stderr[-2000:]
    # Each reference is previewed as it arrives, before the aggregations finish.
    top = trace["referencers"][0]
    assert f"[referencer] {top} (prior rank 1) answered" in done.stderr, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    first_reference = next(i for i, line in enumerate(lines) if "[referencer]" in line)
    assert first_reference < next(i for i, line in enumerate(lines) if "[aggregate]" in line)


def test_the_calibrated_gate_answers_the_demo_question_alone(cache: Path, default_bank) -> None:
    """The pool file's calibrated gate (its own rule's P(correct) on MiniLM and Chroma on
    disk) stops the first demo question before any fusion: one call, the 1.5B's right letter."""
    settings = local_config()
    assert settings.collaboration == "adaptive" and settings.gate_rule is not None
    demo = ROOT / "examples" / "demo" / "answered_alone.txt"
    trace, done = _ask_json(cache, "--question-file", str(demo))
    gate = trace["gate"]
    assert gate["decision"] == "alone" and gate["rule"] == settings.gate_rule
    assert gate["p_correct"][gate["model"]] >= settings.prior_gate_threshold
    assert gate["model"] == "qwen2.5-coder-1.5b"
    assert [c["stage"] for c in trace["calls"] if not c.get("recovery")] == ["referencer"]
    assert trace["candidates"] == [] and [r["model"] for r in trace["references"]] == [
        gate["model"]
    ]
    assert "The answer is (A)" in trace["references"][0]["text"]  # the first digit from the left
    assert f"answered by {gate['model']} alone" in done.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def langgraph_dev(cache: Path, default_bank, tmp_path: Path) -> Iterator[str]:
    """`langgraph dev` on loopback, serving ./langgraph.json; yields its URL."""
    cli = shutil.which("langgraph", path=str(BIN))
    assert cli is not None, "langgraph-cli[inmem] is a test dependency: pip install -e '.[test]'"
    port = _free_port()
    log = (tmp_path / "langgraph-dev.log").open("w")
    proc = subprocess.Popen(
        [cli, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=_env(cache),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "langgraph-dev.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "langgraph dev did not answer /ok in 300 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def test_langgraph_dev_serves_the_graph_and_the_openai_app(langgraph_dev: str) -> None:
    from langgraph_sdk import get_sync_client

    client = get_sync_client(url=langgraph_dev)
    assistants = client.assistants.search(graph_id="smcs")
    assert assistants, "langgraph.json must export the graph as 'smcs'"
    thread = client.threads.create()
    updated: list[str] = []
    progress: list[str] = []
    final: dict = {}
    for part in client.runs.stream(
        thread["thread_id"],
        "smcs",
        input={"question": "What is 6 times 7?"},
        context={"collaboration": "always"},  # every node runs (the default is adaptive)
        stream_mode=["updates", "values", "custom"],
    ):
        if part.event == "updates":
            updated.extend(part.data)
        elif part.event == "values":
            final = part.data
        elif part.event == "custom":
            progress.append(part.data["stage"])
        assert part.event != "error", part.data
    assert set(updated) >= NODES
    assert updated[0] == "select_priors" and updated[-1] == "score"
    # The local settings hold (k capped at the pool size, n=3), not the paper's defaults.
    settings = local_config()
    assert updated.count("referencer") == min(settings.k, len(local_model_names()))
    assert updated.count("aggregate") == settings.n_aggregations != SMCSConfig().n_aggregations
    assert set(progress) == NODES
    assert final["answer"].strip()
    assert final["trace"]["perplexity_available"] is True
    state = client.threads.get_state(thread["thread_id"])
    assert state["values"]["answer"] == final["answer"]

    # The same process serves the OpenAI-compatible app (`http.app` in langgraph.json).
    from openai import OpenAI

    openai = OpenAI(base_url=f"{langgraph_dev}/v1", api_key="unused", max_retries=0, timeout=300)
    assert [m.id for m in openai.models.list()] == ["smcs"]
    completion = openai.chat.completions.create(
        model="smcs",
        messages=[{"role": "user", "content": "What is 6 times 7? Reply with the number only."}],
        max_tokens=24,
    )
    assert completion.choices[0].message.content and completion.choices[0].message.content.strip()
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_smcs_eval_on_the_default_bank_with_the_local_pool(
    cache: Path, default_bank, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    done = subprocess.run(
        [
            str(BIN / "smcs"),
            "eval",
            "--limit",
            "3",
            "--methods",
            "smcs,single,best-single,router",
            "--set",
            "max_tokens=48",
            *("--set", "max_tokens_code=48", "--set", "max_tokens_math=48"),  # families' own
            *("--set", "max_tokens_multiple_choice=48"),  # limits win over max_tokens
            "--set",
            "n_aggregations=2",
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=_env(cache),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    models = local_model_names()
    assert report["questions"] == 3 and report["pool"] == models
    matrix = read_matrix(MATRIX_FILE)
    accuracy = {m: sum(v.values()) / len(v) for m, v in matrix.results.items()}
    assert report["bank"]["best_single"] == max(accuracy, key=accuracy.__getitem__)
    rows = {m["row"]: m for m in report["methods"]}
    assert {"smcs", "best-single", "router", *(f"single:{m}" for m in models)} <= set(rows)
    for name, row in rows.items():
        assert row["n"] + row["not_applicable"] == 3 and row["failed"] == 0, name
    assert (out / "report.md").is_file() and (out / "accuracy_by_method.png").is_file()

"""The surface examples run as a user runs them, as subprocesses on scripted models (`--fake`:
hashing embeddings, an in-memory bank, no model files); the remote pool file is parsed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from smcs_graph import Pool
from smcs_graph.models import read_pool_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_agent_with_smcs_as_its_model_runs_the_tool_loop() -> None:
    lines = run_example("agent_smcs_model.py", "--fake").splitlines()
    assert lines[0] == "HumanMessage: 'What is 1234 times 5678?'"
    assert lines[1].startswith("AIMessage: '' tool_calls=[('multiply'")
    assert lines[2] == "ToolMessage: '7006652'"
    assert lines[3] == "AIMessage: '1234 times 5678 is 7006652.'"


def test_smcs_as_a_subgraph_node() -> None:
    out = run_example("subgraph.py", "--fake")
    assert out.count("[smcs] finished: referencer") == 2
    assert out.count("[smcs] finished: aggregate") == 2
    assert "[parent] finished: smcs" in out and "[parent] finished: footnote" in out
    assert "answer: The answer is 84." in out
    assert "footnote: referencers solver, atlas; aggregator solver;" in out


def test_an_agent_consults_the_ensemble_through_tools() -> None:
    out = run_example("consult_tool_agent.py", "--fake")
    assert "tool_calls=[('rank_models'" in out and '"model": "solver"' in out
    assert "tool_calls=[('consult_ensemble'" in out
    assert "(trace: referencers ['solver', 'atlas']" in out
    assert out.rstrip().splitlines()[-1].startswith("AIMessage: 'The ensemble answered: The")


def test_remote_pool_file_describes_vllm_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_API_KEY", "test-key")
    path = EXAMPLES / "remote_pool.yaml"
    pool = Pool.from_file(path)  # builds the clients; nothing is contacted
    assert pool.names == ["qwen2.5-72b", "llama-3.3-70b", "qwq-32b", "gemma-2-27b"]
    assert [m.max_concurrency for m in pool] == [32, 32, 48, 24]
    assert pool["qwen2.5-72b"].cost({"input_tokens": 10**6, "output_tokens": 0}) == 0.90
    client = pool["qwq-32b"].chat_model
    assert isinstance(client, ChatOpenAI) and client.extra_body == {
        "top_k": 20,
        "repetition_penalty": 1.0,
    }
    assert client.openai_api_key is not None
    assert client.openai_api_key.get_secret_value() == "test-key"
    config = read_pool_file(path).settings  # the smcs: section
    assert config.aggregator == "llama-3.3-70b" and config.aggregator in pool

"""`smcs ask` as a real process: local pool from a file, a Chroma bank on disk, JSON trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcs_graph import BankQuestion, QuestionBank
from smcs_graph.embedder import default_embedder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMCS = [sys.executable, "-m", "smcs_graph"]


def smcs(
    *args: str, timeout: float = 240, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*SMCS, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        input=stdin,
    )


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli-bank")
    bank = QuestionBank.open(path, default_embedder())
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is 2 plus 2?", family="math"),
            BankQuestion(id="b", question="What is 5 times 3?", family="math"),
            BankQuestion(id="c", question="Name the capital of Peru.", family="geography"),
        ]
    )
    bank.record_results("qwen2.5-coder-0.5b", {"a": True, "b": True, "c": False})
    bank.record_results("smollm2-135m", {"a": False, "b": False, "c": True})
    bank.close()
    return path


def test_ask_prints_the_full_trace_as_json(bank_path: Path) -> None:
    question = "What is 9 plus 9? Reply with the number only."
    proc = smcs(  # the question from standard input
        "ask",
        "-",
        "--pool",
        "examples/local_pool.yaml",
        "--bank",
        str(bank_path),
        "--set",
        "max_tokens=48",
        "--json",
        stdin=question + "\n",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    trace = json.loads(proc.stdout)
    assert trace["question"].strip() == question
    assert trace["referencers"] == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    assert len(trace["references"]) == 2
    assert len(trace["candidates"]) == 3 and trace["perplexity_available"] is True
    assert "[referencer] qwen2.5-coder-0.5b (prior rank 1) answered" in proc.stderr  # progress


def test_ask_summary_and_errors(bank_path: Path, tmp_path: Path) -> None:
    proc = smcs(
        "ask",
        "What is 1 plus 1?",
        "--pool",
        "examples/local_pool.yaml",
        "--bank",
        str(bank_path),
        "--set",
        "max_tokens=32",
        "--set",
        "n_aggregations=2",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Prior selection" in proc.stdout and "\nAnswer: " in proc.stdout

    missing = smcs(
        "ask", "hi", "--pool", "examples/local_pool.yaml", "--bank", str(tmp_path / "no")
    )
    assert missing.returncode == 1 and "error" in missing.stderr

    broken = tmp_path / "pool.yaml"
    broken.write_text("models: []\n")
    bad = smcs("ask", "hi", "--pool", str(broken), "--bank", str(bank_path))
    assert bad.returncode == 2 and "expected a 'models' list" in bad.stderr

    empty = smcs("ask", "  ", "--pool", "examples/local_pool.yaml", "--bank", str(bank_path))
    assert empty.returncode == 2 and "no text" in empty.stderr

    unknown = smcs(
        "ask", "hi", "--pool", "examples/local_pool.yaml", "--bank", str(bank_path), "--set", "kk=1"
    )
    assert unknown.returncode == 2 and "unknown SMCS setting" in unknown.stderr

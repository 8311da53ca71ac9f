"""The examples run as a user runs them: real subprocesses on the embedded local pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcs_graph import BankQuestion, QuestionBank, SentenceTransformerEmbedder
from smcs_graph.embedded.default import local_config, local_model_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


STARTER_ROWS = [
    json.loads(line)
    for line in (ROOT / "examples" / "data" / "starter_bank.jsonl").read_text().splitlines()
    if line.strip()
]
HAND_PROFILED = "qwen2.5-coder-0.5b"
"""The starter bank's model whose results `starter_bank` records by hand (right on math and
multiple choice, wrong on short answers): the example profiles only the other, SmolLM2-135M,
which answers the 32 questions several times faster."""


@pytest.fixture(scope="module")
def env(smcs_cache: Path, embedder: SentenceTransformerEmbedder) -> dict[str, str]:
    # one cache for the session: the starter bank holds HAND_PROFILED's results and the first
    # example that opens it profiles the other model, once; the default bank is built once
    starter_bank(smcs_cache / "starter-bank", embedder)
    return {**os.environ, "SMCS_CACHE_DIR": str(smcs_cache), "HF_HUB_OFFLINE": "1"}


def starter_bank(folder: Path, embedder: SentenceTransformerEmbedder) -> None:
    """The starter bank as `examples/_starter.py` writes it, with `HAND_PROFILED`'s results."""
    with QuestionBank.open(folder, embedder) as bank:
        bank.add_questions(
            [
                BankQuestion(
                    id=r["id"], question=r["question"], family=r["family"], answer=r["answer"]
                )
                for r in STARTER_ROWS
            ]
        )
        right = {r["id"]: r["family"] != "short_answer" for r in STARTER_ROWS}
        bank.record_results(HAND_PROFILED, right)


def run_example(name: str, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_local_demo_prints_a_collaborative_answer(env) -> None:
    out = run_example("local_demo.py", env, "What is 20 plus 22? Reply with the number only.")
    settings, models = local_config(), local_model_names()
    k = min(settings.k, len(models))
    referencers = next(line for line in out.splitlines() if "referencers:" in line)
    names = referencers.split("referencers:")[1].split(";")[0].strip().split(", ")
    assert len(names) == k and set(names) <= set(models)
    assert out.count("[referencer] ") == k and "(prior rank 1) answered" in out
    assert out.count("[aggregate] index=") == settings.n_aggregations
    candidates = [line for line in out.splitlines() if "subset=" in line and "ppl=" in line]
    assert len(candidates) == settings.n_aggregations
    assert not any("ppl=n/a" in line for line in candidates)
    assert sum(line.startswith(" *") for line in candidates) == 1
    assert "\nAnswer: " in out
    assert out.count("  prior ") == len(models)  # every model's prior, and why it was picked


def test_graph_invoke_example(env) -> None:
    out = run_example("graph_invoke.py", env)
    # First run: the model without results is profiled on the starter bank, once.
    assert f"profiling smollm2-135m on {len(STARTER_ROWS)} starter questions (once)" in out
    assert f"profiling {HAND_PROFILED}" not in out
    assert out.count("finished: referencer") == 2 and out.count("finished: aggregate") == 3
    assert "finished: score" in out and "answer:" in out

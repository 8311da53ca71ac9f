"""The examples run as a user runs them: real subprocesses on the embedded local pool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smcs_graph.embedded.default import local_config, local_model_names

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(smcs_cache: Path) -> dict[str, str]:
    # one cache for the session: the starter bank is profiled by the first example only, the
    # default bank is built once
    return {**os.environ, "SMCS_CACHE_DIR": str(smcs_cache), "HF_HUB_OFFLINE": "1"}


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
    assert out.count("finished: referencer") == 2 and out.count("finished: aggregate") == 3
    assert "finished: score" in out and "answer:" in out

"""The examples run as a user runs them: real subprocesses on the embedded local pool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # one cache for the module: the starter bank is profiled by the first example only
    cache = tmp_path_factory.mktemp("smcs-cache")
    return {**os.environ, "SMCS_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}


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
    assert "profiling qwen2.5-coder-0.5b" in out and "profiling smollm2-135m" in out
    assert "referencers: qwen2.5-coder-0.5b, smollm2-135m" in out or (
        "referencers: smollm2-135m, qwen2.5-coder-0.5b" in out
    )
    assert out.count("[referencer] model=") == 2
    assert out.count("[aggregate] index=") == 3
    candidates = [line for line in out.splitlines() if "subset=" in line and "ppl=" in line]
    assert len(candidates) == 3 and not any("ppl=n/a" in line for line in candidates)
    assert sum(line.startswith(" *") for line in candidates) == 1
    assert "\nAnswer: " in out


def test_graph_invoke_example(env) -> None:
    out = run_example("graph_invoke.py", env)
    assert out.count("finished: referencer") == 2 and out.count("finished: aggregate") == 3
    assert "finished: score" in out and "answer:" in out

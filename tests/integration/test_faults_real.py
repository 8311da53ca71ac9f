"""`smcs ask` as a real process with a real local model and a hung endpoint beside it.

The hung referencer is cancelled at its deadline; the run answers with the local model and the
process exits. (Before, the abandoned call kept a worker thread waiting on the endpoint, and the
process printed its answer but never exited.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from smcs_graph import BankQuestion, QuestionBank
from smcs_graph.embedder import default_embedder
from tests.unit._fake_endpoints import FakeEndpoints

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 5.0
EXIT_BOUND_S = 300.0
"""Generous: local model start-up and MiniLM on 2 busy cores; the old code never exited."""


def test_ask_answers_and_exits_with_a_hung_referencer(local_servers, tmp_path: Path) -> None:
    bank_path = tmp_path / "bank"
    bank = QuestionBank.open(bank_path, default_embedder())
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is 2 plus 2?", family="math"),
            BankQuestion(id="b", question="What is 5 times 3?", family="math"),
        ]
    )
    bank.record_results("smollm2-135m", {"a": True, "b": True})
    bank.record_results("stuck", {"a": False, "b": True})
    bank.close()
    with FakeEndpoints() as endpoints:
        pool_file = tmp_path / "pool.yaml"
        models = [{"name": "smollm2-135m", "local": True}, endpoints.entry("stuck", "hang")]
        pool_file.write_text(yaml.safe_dump({"models": models}), encoding="utf-8")
        started = time.monotonic()
        proc = subprocess.run(
            [
                *(sys.executable, "-m", "smcs_graph", "ask", "What is 3 plus 4?"),
                *("--pool", str(pool_file), "--bank", str(bank_path), "--json"),
                *("--set", f"referencer_timeout_s={TIMEOUT_S}", "--set", "max_tokens=32"),
                *("--set", "k=2", "--set", "n_aggregations=1", "--set", "k_drop=0"),
            ],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=EXIT_BOUND_S,
            cwd=ROOT,
        )
        elapsed = time.monotonic() - started
        hangups = endpoints.wait_for_hangup("stuck", within=5.0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    trace = json.loads(proc.stdout)
    assert trace["candidates"] and trace["aggregator"] == "smollm2-135m"
    (failure,) = trace["failures"]
    assert failure["model"] == "stuck" and "TimeoutError" in failure["error"]
    assert hangups and hangups[0] < TIMEOUT_S + 5.0  # cancelled, not left waiting
    assert elapsed < EXIT_BOUND_S

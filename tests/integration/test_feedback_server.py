"""Feedback through a real `smcs serve` process over the session's local models: real questions,
gold answers graded by the real grader, the bank on disk grows by exactly the judged cells, a
repeat changes nothing, and a SIGKILL after the outcome is recorded loses nothing."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from smcs_graph import BankQuestion, QuestionBank
from smcs_graph.embedder import default_embedder
from smcs_graph.feedback.apply import PAUSE_ENV
from tests.integration.test_server import running_server

pytestmark = pytest.mark.integration

KEY = "feedback-secret"
KEY_ENV = "SMCS_TEST_FEEDBACK_KEY"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODELS = ("qwen2.5-coder-0.5b", "smollm2-135m")
ASKED = {  # question -> gold answer (family numeric)
    "What is 3 plus 4? Reply with the number only.": "7",
    "What is 10 minus 8? Reply with the number only.": "2",
}
LAST = "What is 5 times 2? Reply with the number only."


def _pool(path: Path, servers: dict[str, str]) -> Path:
    """The session's local model servers, by URL (the server process starts none)."""
    entries = "".join(
        f"  - {{name: {name}, base_url: '{servers[name]}', logprobs: true, timeout_s: 300}}\n"
        for name in MODELS
    )
    smcs = "smcs: {k: 2, n_aggregations: 1, n_sup_base: 4, max_tokens: 16, seed: 0}\n"
    path.write_text("models:\n" + entries + smcs)
    return path


def _bank(path: Path) -> int:
    bank = QuestionBank.open(path, default_embedder())
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is 2 plus 2?", family="numeric", answer="4"),
            BankQuestion(id="b", question="Name the capital of Peru.", family="general"),
        ]
    )
    bank.record_results(MODELS[0], {"a": True, "b": False})
    bank.record_results(MODELS[1], {"a": False, "b": True})
    size = len(bank)
    bank.close()
    return size


def _ask(client: httpx.Client, text: str) -> str:
    reply = client.post(
        "/chat/completions",
        json={"model": "smcs", "messages": [{"role": "user", "content": text}]},
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["smcs_run_id"])


def _cells(bank: QuestionBank, qid: str) -> dict[str, bool]:
    cap, measured = bank.capability(list(MODELS), [qid])
    return {m: bool(cap[i, 0]) for i, m in enumerate(MODELS) if measured[i, 0]}


def _recorded(runs: Path, run_id: str) -> bool:
    if not runs.exists():
        return False
    with sqlite3.connect(runs, timeout=30) as db:
        row = db.execute("SELECT 1 FROM outcomes WHERE run_id = ?", (run_id,)).fetchone()
    return row is not None


def test_feedback_grows_the_bank_through_the_server(
    local_servers: dict[str, str], tmp_path: Path
) -> None:
    pool, folder = _pool(tmp_path / "pool.yaml", local_servers), tmp_path / "bank"
    size = _bank(folder)
    env = {KEY_ENV: KEY}
    args = ("--api-key-env", KEY_ENV)
    answered: dict[str, dict[str, bool]] = {}
    with running_server(pool, folder, tmp_path / "s1.log", *args, env=env) as server:
        client = httpx.Client(base_url=server.base_url, headers=AUTH, timeout=300)
        for text, gold in ASKED.items():
            run_id = _ask(client, text)
            body = {"run_id": run_id, "gold": gold, "family": "numeric"}
            reply = client.post("/feedback", json=body)
            assert reply.status_code == 200, reply.text
            data = reply.json()
            assert data["status"] == "applied" and data["new_question"]
            assert sorted(data["cells"]) == sorted(MODELS)  # both references graded
            answered[data["question_id"]] = data["cells"]
            again = client.post("/feedback", json=body).json()
            assert again["status"] == "already applied" and again["cells"] == data["cells"]
        unknown = client.post("/feedback", json={"run_id": "nope", "correct": True})
        assert unknown.status_code == 404
        unauthorized = httpx.post(f"{server.base_url}/feedback", json={"run_id": run_id})
        assert unauthorized.status_code == 401

    bank = QuestionBank.open(folder, default_embedder(), create=False)
    assert len(bank) == size + len(ASKED)
    for qid, cells in answered.items():
        assert _cells(bank, qid) == cells
        assert bank.get([qid])[0].question in ASKED
    bank.close()

    # Killed after the outcome is committed, before the bank write: the restart writes it.
    runs = folder.with_name("bank.runs.sqlite")
    paused = {**env, PAUSE_ENV: "600"}
    with running_server(pool, folder, tmp_path / "s2.log", *args, env=paused) as server:
        client = httpx.Client(base_url=server.base_url, headers=AUTH, timeout=300)
        run_id = _ask(client, LAST)
        verdict = {"run_id": run_id, "verdicts": {MODELS[1]: False}}
        sent: list[Any] = []
        thread = threading.Thread(
            target=lambda: sent.append(_post_quietly(client, verdict)), daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 120
        while not _recorded(runs, run_id):
            assert time.monotonic() < deadline, server.output()[-2000:]
            time.sleep(0.1)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        thread.join(timeout=30)
    bank = QuestionBank.open(folder, default_embedder(), create=False)
    assert len(bank) == size + len(ASKED)  # the write never happened
    bank.close()

    with running_server(pool, folder, tmp_path / "s3.log", *args, env=env) as server:
        assert _applied(runs, run_id)  # written at startup, before any request
        client = httpx.Client(base_url=server.base_url, headers=AUTH, timeout=300)
        again = client.post("/feedback", json=verdict).json()
        assert again["status"] == "already applied"
    bank = QuestionBank.open(folder, default_embedder(), create=False)
    assert len(bank) == size + len(ASKED) + 1
    assert _cells(bank, again["question_id"]) == {MODELS[1]: False}  # the other stays masked
    bank.close()


def _applied(runs: Path, run_id: str) -> bool:
    with sqlite3.connect(runs, timeout=30) as db:
        row = db.execute("SELECT applied FROM outcomes WHERE run_id = ?", (run_id,)).fetchone()
    return row is not None and row[0] is not None


def _post_quietly(client: httpx.Client, body: dict[str, Any]) -> int | None:
    try:
        return client.post("/feedback", json=body).status_code
    except httpx.HTTPError:  # the server was killed mid-request
        return None

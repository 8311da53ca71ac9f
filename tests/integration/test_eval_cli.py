"""`smcs eval` as a real process: the local pool, a MiniLM bank on disk, a held-out test file.

A small slice: a 10-question bank whose results were recorded by hand, 2 test questions (one
per family: every method asks the models about each one), short answers. One chain checks the
whole path: a run killed midway, resumed without asking a model anything twice, every method
graded (calls, tokens, median wall time and truncation per row), tables and plots written, then
replayed without a call (the same wall times, from the cache).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smcs_graph import BankQuestion, QuestionBank
from smcs_graph.embedder import default_embedder
from smcs_graph.offline.evaluation.results import ResultStore
from smcs_graph.questions import QuestionRecord, save_records

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMCS = [sys.executable, "-m", "smcs_graph"]
QWEN, SMOL = "qwen2.5-coder-0.5b", "smollm2-135m"


def arithmetic(id_: str, a: int, b: int) -> QuestionRecord:
    return QuestionRecord(
        id=id_,
        family="numeric",
        question=f"What is {a} plus {b}?",
        answer=str(a + b),
        category="arithmetic",
    )


def color(id_: str, thing: str, right: str, wrong: tuple[str, str]) -> QuestionRecord:
    options = (right, *wrong)
    return QuestionRecord(
        id=id_,
        family="multiple_choice",
        question=f"What color is {thing}?",
        choices=options,
        answer="A",
        category="colors",
    )


BANK = [arithmetic(f"add-{i}", a, b) for i, (a, b) in enumerate([(2, 3), (10, 5), (7, 1)])] + [
    arithmetic(f"add-{i + 3}", a, b) for i, (a, b) in enumerate([(4, 4), (6, 3), (20, 1)])
]
BANK += [
    color("col-0", "the sky on a clear day", "blue", ("green", "red")),
    color("col-1", "fresh grass", "green", ("purple", "orange")),
    color("col-2", "a ripe banana", "yellow", ("blue", "black")),
    color("col-3", "snow", "white", ("red", "green")),
]
TEST = [arithmetic("t-add-0", 3, 4), color("t-col-0", "a ripe tomato", "red", ("blue", "white"))]


def smcs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*SMCS, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results by hand: Qwen right on arithmetic, SmolLM right on half the colors."""
    folder = tmp_path_factory.mktemp("eval") / "bank"
    bank = QuestionBank.open(folder, default_embedder())
    bank.add_questions([BankQuestion.from_record(r) for r in BANK])
    bank.record_results(QWEN, {r.id: r.family == "numeric" or r.id == "col-0" for r in BANK})
    bank.record_results(SMOL, {r.id: r.id in ("col-1", "col-3", "add-0") for r in BANK})
    bank.close()
    save_records(folder.with_name("bank.test.jsonl"), TEST)
    return folder


def eval_args(bank: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--pool",
        "examples/local_pool.yaml",
        "--bank",
        str(bank),
        "--out",
        str(out),
        "--set",
        "max_tokens=32",
        "--set",
        "n_aggregations=2",
        *extra,
    ]


def count_calls(cache: Path) -> int:
    with sqlite3.connect(cache) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


def kill_after_calls(args: list[str], cache: Path, calls: int) -> int:
    """Start `smcs ARGS`, SIGKILL it once `calls` responses are committed; how many were."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [*SMCS, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600  # ends at the calls: only a starved machine waits long
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if cache.exists() and count_calls(cache) >= calls:
                break
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return count_calls(cache) if cache.exists() else 0


ALL_ROWS = {
    "smcs",
    f"single:{QWEN}",
    f"single:{SMOL}",
    "best-single",
    "router",
    "random-k",
    "moa",
    "self-moa",
    "majority",
    "vote-all",
    "no-similarity",
    "no-perplexity",
    "no-prior-drop",
    "smcs@1",
    "smcs-adaptive",
    "smcs-adaptive@0",
    "oracle",
}


def test_eval_killed_resumed_complete_and_replayed(bank_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    cache = out / "calls.sqlite"
    # 1. A run killed (SIGKILL) after a few model responses were committed.
    before = kill_after_calls(eval_args(bank_path, out, "--no-progress"), cache, 3)
    assert before >= 3, "the run made no progress before the deadline"

    # 2. The same command again, with the scaling run added: it finishes everything and asks
    # no model anything it had answered before the kill.
    proc = smcs(*eval_args(bank_path, out, "--scaling", "1", "--thresholds", "0"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "smcs eval" in proc.stderr and "result/s" in proc.stderr  # progress bar with rate
    assert "best single (qwen2.5-coder-0.5b)" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["calls_made"] == count_calls(cache) - before

    assert report["questions"] == len(TEST) and report["pool"] == [QWEN, SMOL]
    assert report["bank"]["best_single"] == QWEN
    rows = {m["row"]: m for m in report["methods"]}
    assert set(rows) == ALL_ROWS
    for name, row in rows.items():
        assert row["n"] + row["not_applicable"] == len(TEST) and row["failed"] == 0, name
        assert row["input_tokens"] > 0 and row["calls"] > 0, name
        # every call, cached or not, kept the seconds it took when made
        assert row["median_seconds"] > 0 and row["timed"] == row["results"], name
    # the prior gate at 0: the top model alone (and its recovery follow-up, if it was cut off)
    assert 1 <= rows["smcs-adaptive@0"]["per_question"]["calls"] <= 2
    assert rows["smcs"]["per_question"]["calls"] >= 2 + 2
    assert rows["oracle"]["correct"] >= rows[f"single:{QWEN}"]["correct"]
    truncation = rows[f"single:{QWEN}"]["truncation"]
    assert set(truncation) == {"numeric", "multiple_choice"}
    assert all(cell["hit_known"] == cell["final_known"] == 1 for cell in truncation.values())
    assert rows["best-single"]["correct"] == rows[f"single:{QWEN}"]["correct"]
    # Referencers' answers are the single answers: a call shared by methods is made once.
    derived = {"best-single", "router", "vote-all", "oracle"}
    needed = sum(rows[r]["calls"] for r in ALL_ROWS - derived)
    assert count_calls(cache) < needed
    sizes = {point["size"]: point for point in report["scaling"]}
    assert sizes[1]["smcs"] is not None and sizes[2]["oracle"] is not None
    plots = ("accuracy_by_method.png", "scaling.png", "accuracy_vs_cost.png")
    for name in (*plots, "accuracy_vs_calls.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "| SMCS |" in markdown and "## Truncation (hit limit / no final answer, %)" in markdown

    store = ResultStore(out / "results.sqlite")
    smcs_results = {r.question_id: r for r in store.results() if r.method == "smcs"}
    store.close()
    # Retrieval over the MiniLM bank: arithmetic questions go to Qwen first.
    assert smcs_results["t-add-0"].detail["referencers"][0] == QWEN
    assert all(len(r.detail["candidates"]) == 2 for r in smcs_results.values())

    # 3. A rerun replays everything: no model call, the same table.
    again = smcs(
        *eval_args(bank_path, out, "--scaling", "1", "--thresholds", "0", "--json", "--no-progress")
    )
    assert again.returncode == 0, again.stderr[-3000:]
    replayed = json.loads(again.stdout)
    assert replayed["run"]["calls_made"] == 0
    assert replayed["methods"] == report["methods"]


def test_eval_usage_errors_exit_2_before_any_model_starts(bank_path: Path, tmp_path: Path) -> None:
    bad_method = smcs(*eval_args(bank_path, tmp_path / "a", "--methods", "smcs,magic"))
    assert bad_method.returncode == 2 and "unknown method(s) ['magic']" in bad_method.stderr
    no_test = smcs(*eval_args(bank_path, tmp_path / "b", "--test", str(tmp_path / "none.jsonl")))
    assert no_test.returncode == 2 and "no test file" in no_test.stderr
    bad_setting = smcs(*eval_args(bank_path, tmp_path / "c", "--set", "k=0"))
    assert bad_setting.returncode == 2 and "k must be an integer >= 1" in bad_setting.stderr

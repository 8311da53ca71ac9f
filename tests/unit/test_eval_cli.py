"""`smcs eval` in process: options, help, exit codes, outputs (scripted models, hashing bank)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcs_graph import BankQuestion, HashingEmbedder, QuestionBank
from smcs_graph.cli import build_parser, main
from smcs_graph.offline.evaluation.generation import METHODS
from smcs_graph.questions import QuestionRecord, save_records

POOL = """\
models:
  - name: adder
    class: "smcs_graph.testing:FakeChatModel"
    kwargs: {responses: ["The answer is 7"]}
  - name: guesser
    class: "smcs_graph.testing:FakeChatModel"
    kwargs: {responses: ["The answer is 9"]}
smcs: {k: 2, n_aggregations: 2, n_sup_base: 4, seed: 1}
"""


def addition(i: int) -> QuestionRecord:
    return QuestionRecord(id=f"q{i}", family="numeric", question=f"What is {i} plus 3?", answer="7")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "pool.yaml").write_text(POOL)
    bank = QuestionBank.open(tmp_path / "bank", HashingEmbedder(dimension=32))
    bank.add_questions([BankQuestion.from_record(addition(i)) for i in range(6)])
    bank.record_results("adder", {f"q{i}": True for i in range(6)})
    bank.record_results("guesser", {f"q{i}": i == 0 for i in range(6)})
    bank.close()
    # Every test question's gold answer is 7: 'adder' is always right, 'guesser' never.
    save_records(tmp_path / "bank.test.jsonl", [addition(100 + i) for i in range(3)])
    return tmp_path / "pool.yaml", tmp_path / "bank"


def test_help_explains_every_option_and_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--pool",
        "--bank",
        "--test",
        "--methods",
        "--limit",
        "--out",
        "--set",
        "--cache",
        "--samples",
        "--scaling",
        "--concurrency",
        "--no-progress",
        "--json",
    ):
        assert option in text
    for method in METHODS:
        assert method in text
    assert "Exit codes" in text


def test_eval_writes_the_report_and_resumes(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool, bank = setup
    args = ["eval", "--pool", str(pool), "--bank", str(bank), "--embedder", "hashing:32"]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best single (adder)" in out and "report:" in out
    folder = tmp_path / "bank.eval"  # the default: beside the bank
    report = json.loads((folder / "report.json").read_text())
    rows = {m["row"]: m for m in report["methods"]}
    assert rows["single:adder"]["accuracy"] == 1.0 and rows["single:guesser"]["accuracy"] == 0.0
    assert rows["best-single"]["accuracy"] == rows["router"]["accuracy"] == 1.0
    assert rows["vote-all"]["accuracy"] == 1.0  # a 1-1 tie goes to the better bank model
    assert {"smcs", "moa", "self-moa", "majority", "random-k"} <= set(rows)

    assert main([*args, "--no-progress", "--json", "--limit", "2", "--methods", "smcs"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["questions"] == 2 and again["run"]["calls_made"] == 0
    assert [m["row"] for m in again["methods"]] == ["smcs"]


def test_usage_errors_exit_2(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool, bank = setup
    args = ["eval", "--pool", str(pool), "--bank", str(bank), "--embedder", "hashing:32"]
    assert main([*args, "--methods", "smcs,magic"]) == 2
    assert "unknown method(s) ['magic']" in capsys.readouterr().err
    assert main([*args, "--thresholds", "0.5,2"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main([*args, "--test", str(tmp_path / "missing.jsonl")]) == 2
    assert "no test file" in capsys.readouterr().err
    assert main([*args, "--set", "lam=-1"]) == 2
    assert "lam must be a number >= 0" in capsys.readouterr().err
    assert main([*args, "--limit", "0"]) == 2
    assert "limit must be an integer >= 1" in capsys.readouterr().err
    assert main([*args, "--embedder", "hashing:16"]) == 2  # not the bank's embedder
    with pytest.raises(SystemExit):
        main([*args, "--scaling", "one,two"])
    assert "comma-separated pool sizes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--thresholds", "high"])
    assert "prior-gate thresholds" in capsys.readouterr().err

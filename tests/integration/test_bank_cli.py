"""`smcs bank build | import | info` as real processes on Chroma banks on disk."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smcs_graph import QuestionBank
from smcs_graph.bank.importer import _CHUNK as CHUNK
from smcs_graph.cli import main
from smcs_graph.embedder import DEFAULT_MODEL_ID, HashingEmbedder, default_embedder
from smcs_graph.questions import QuestionRecord, load_records, save_records

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = Path(os.environ.get("SMCS_BENCHMARKS_DIR", ROOT.parent / "shared" / "benchmarks"))
MMLU_LIMIT = 100
"""MMLU-Pro questions imported by the test: embedding all 12,032 with MiniLM takes minutes on
two cores, so the test imports the first rows (the full file imports the same way; the first
100 hold empty cells, which the test needs)."""


def smcs(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "smcs_graph", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_build_holds_out_a_test_split_and_info_describes_the_bank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "extra.jsonl"
    save_records(
        questions,
        [
            QuestionRecord(
                id=f"extra/{i}",
                family="numeric",
                question=f"What is {i} plus {i}?",
                answer=str(2 * i),
                category="arithmetic",
                source="extra",
            )
            for i in range(10)
        ],
    )
    bank = tmp_path / "bank"
    built = smcs(
        "bank",
        "build",
        "--bank",
        str(bank),
        "--humaneval",
        "--questions",
        str(questions),
        "--limit",
        "20",
        "--test-fraction",
        "0.2",
        "--seed",
        "3",
    )
    assert built.returncode == 0, built.stderr[-2000:]
    test_file = tmp_path / "bank.test.jsonl"
    held_out = load_records(test_file)
    assert len(held_out) == 6  # 20% of 30, stratified by category
    assert "questions written: 24/24" in built.stderr

    # The rest in process (the same `main` the `smcs` script runs): no interpreter start, and
    # MiniLM is the process-wide one already loaded.
    assert main(["bank", "info", "--bank", str(bank), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == 24 and info["complete"] is True
    assert info["families"] == {
        "code": sum(1 for _ in range(20)) - sum(r.family == "code" for r in held_out),
        "numeric": 10 - sum(r.family == "numeric" for r in held_out),
    }
    assert set(info["sources"]) == {"humaneval", "extra"}
    assert info["embedder_id"] == DEFAULT_MODEL_ID and info["embedding_dim"] == 384
    with QuestionBank.open(bank, default_embedder(), create=False) as opened:
        assert not set(opened.question_ids()) & {r.id for r in held_out}

    assert main(["bank", "info", "--bank", str(bank)]) == 0
    text = capsys.readouterr().out
    assert "embedder: sentence-transformers/all-MiniLM-L6-v2 (384 dimensions)" in text
    assert "families: code:" in text

    # Building again from the same sources adds nothing.
    again = [
        *("bank", "build", "--bank", str(bank), "--humaneval", "--questions", str(questions)),
        *("--limit", "20", "--test-fraction", "0.2", "--seed", "3", "--quiet"),
    ]
    assert main(again) == 0
    assert "0 added or changed; 24 in the bank" in capsys.readouterr().out

    # Opening with another embedder is a usage error (exit 2) that says what to do.
    assert main(["bank", "info", "--bank", str(bank), "--embedder", "hashing:64"]) == 2
    assert "was built with embedder" in capsys.readouterr().err


def test_usage_errors_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process (the same `main` the `smcs` script runs): no interpreter start per case.
    cases = [
        (["bank", "build", "--bank", str(tmp_path / "b")], 2, "nothing to build from"),
        (
            ["bank", "build", "--bank", str(tmp_path / "b"), "--questions", "nope.jsonl"],
            2,
            "not found",
        ),
        (["bank", "import", "--bank", str(tmp_path / "b")], 2, "either --matrix"),
        (["bank", "info", "--bank", str(tmp_path / "none")], 1, "no question bank"),
        (
            ["bank", "build", "--bank", str(tmp_path / "b"), "--humaneval", "--limit", "0"],
            2,
            "--limit",
        ),
        (
            ["profile", "--pool", str(tmp_path / "none.yaml"), "--bank", str(tmp_path)],
            2,
            "not found",
        ),
    ]
    for argv, code, message in cases:
        assert main(argv) == code, argv
        assert message in capsys.readouterr().err, argv
    for command in (["bank", "build"], ["bank", "import"], ["bank", "info"], ["profile"]):
        with pytest.raises(SystemExit) as exited:
            main([*command, "--help"])
        assert exited.value.code == 0
        assert "Exit codes" in capsys.readouterr().out


def test_a_killed_build_leaves_a_bank_that_refuses_to_open_until_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hashing embedder keeps this test about atomicity fast; the writes are real Chroma.
    # The build is killed once its first chunk is written, with 7 still to write.
    questions = tmp_path / "many.jsonl"
    n = 8 * CHUNK
    save_records(
        questions,
        [
            QuestionRecord(
                id=f"many/{i}",
                family="numeric",
                question=f"What is {i} times 3?",
                answer=str(3 * i),
            )
            for i in range(n)
        ],
    )
    bank = tmp_path / "bank"
    command = [
        sys.executable,
        "-m",
        "smcs_graph",
        "bank",
        "build",
        "--bank",
        str(bank),
        "--questions",
        str(questions),
        "--embedder",
        "hashing:64",
    ]
    build = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert build.stderr is not None
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and "questions written" not in line:
        line = build.stderr.readline()
        if not line and build.poll() is not None:
            break
    build.send_signal(signal.SIGKILL)
    build.wait(timeout=30)
    assert build.returncode == -signal.SIGKILL, "the build ended before it could be killed"

    assert main(["bank", "info", "--bank", str(bank), "--embedder", "hashing:64"]) == 1
    refused = capsys.readouterr().err
    assert "incomplete" in refused and "Rerun the same" in refused
    with pytest.raises(Exception, match="incomplete"):
        QuestionBank.open(bank, HashingEmbedder(64), create=False)

    rerun = subprocess.run([*command, "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with QuestionBank.open(bank, HashingEmbedder(64), create=False) as done:
        assert len(done) == n and done.complete


def _matrix_rows() -> tuple[list[str], dict[str, list[str]]]:
    """The CSV as question ids and one column of cells per model."""
    with (BENCHMARKS / "mmlu_pro_correctness_29_models.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {name: [] for name in reader.fieldnames or [] if name != "question_id"}
        ids: list[str] = []
        for row in reader:
            ids.append(row["question_id"])
            for name in columns:
                columns[name].append(row[name])
    return ids, columns


def test_import_of_the_29_model_mmlu_pro_matrix(tmp_path: Path) -> None:
    matrix = BENCHMARKS / "mmlu_pro_correctness_29_models.csv"
    questions = BENCHMARKS / "mmlu_pro.jsonl"
    if not (matrix.is_file() and questions.is_file()):
        pytest.skip(f"MMLU-Pro files are absent from {BENCHMARKS} (set SMCS_BENCHMARKS_DIR)")
    bank = tmp_path / "mmlu"
    done = smcs(
        "bank",
        "import",
        "--bank",
        str(bank),
        "--matrix",
        str(matrix),
        "--questions",
        str(questions),
        "--limit",
        str(MMLU_LIMIT),
        "--quiet",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"imported {MMLU_LIMIT} question(s)" in done.stdout
    assert "matrix row(s) had no question" in done.stdout  # the rows past --limit

    with QuestionBank.open(bank, default_embedder(), create=False) as opened:
        info = opened.info()
        all_ids, columns = _matrix_rows()
        imported = set(opened.question_ids())
        rows = [i for i, native in enumerate(all_ids) if f"mmlu_pro/{native}" in imported]
        assert len(rows) == MMLU_LIMIT and len(columns) == 29
        assert info["models"] == sorted(columns)
        for model, cells in columns.items():
            values = [cells[i] for i in rows]
            measured = [v for v in values if v != ""]
            assert info["coverage"][model] == len(measured)
            assert info["accuracy"][model] == pytest.approx(
                sum(v == "1" for v in measured) / len(measured)
            )
        # Empty cells stay masked: somewhere a model has no record for an imported question.
        assert any(info["coverage"][m] < MMLU_LIMIT for m in columns)
        assert info["families"] == {"multiple_choice": MMLU_LIMIT}
        assert "" not in info["categories"]  # every MMLU-Pro question keeps its category


def _readme_commands(section: str, *prefixes: str) -> list[list[str]]:
    """The commands of a README section's bash blocks that start with one of `prefixes`."""
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    commands: list[list[str]] = []
    for block in body.split("```bash\n")[1:]:
        script = block.split("```", 1)[0].replace("\\\n", " ")
        for line in script.splitlines():
            words = shlex.split(line, comments=True)
            if words and any(" ".join(words).startswith(p) for p in prefixes):
                commands.append(words)
    return commands


def test_the_bring_your_own_data_example_runs_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's commands, word for word, in a folder holding a copy of examples/byod.
    import shutil

    shutil.copytree(ROOT / "examples" / "byod", tmp_path / "examples" / "byod")
    commands = _readme_commands("Bring your own data", "smcs bank import", "smcs replay")
    assert [c[:2] for c in commands] == [["smcs", "bank"], ["smcs", "replay"], ["smcs", "replay"]]
    monkeypatch.setenv("SMCS_EMBEDDING_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    # The import as a real process; the replays in process (the same `main` the `smcs` script
    # runs, with MiniLM already loaded): an interpreter start with torch costs more than a
    # replay of 48 questions.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "smcs_graph", *commands[0][1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, (commands[0], done.stderr[-2000:])
    outputs = [done.stdout]
    for words in commands[1:]:
        assert main(words[1:]) == 0, (words, capsys.readouterr().err[-2000:])
        outputs.append(capsys.readouterr().out)
    imported, from_bank, from_files = outputs
    matrix = (ROOT / "examples" / "byod" / "results.csv").read_text().splitlines()
    empty = sum(line.split(",")[1:].count("") for line in matrix[1:])
    assert f"imported {len(matrix) - 1} question(s)" in imported
    assert f"{empty} empty cell(s) left masked" in imported
    assert "had no question" not in imported and "no matrix row" not in imported
    for report in (from_bank, from_files):
        # three categories (the records' own), not the two grader families
        assert f"{len(matrix) - 1} questions, 3 categories, 3 models" in report
        assert "per-category router" in report and "RPS (paper rule)" in report
    with QuestionBank.open(tmp_path / "byod-bank", default_embedder(), create=False) as bank:
        assert bank.info()["categories"] == {"arithmetic": 16, "geography": 16, "python": 16}

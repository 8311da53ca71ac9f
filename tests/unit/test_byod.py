"""Bring your own data: one question-file format, content detection, one category rule, one
id-column flag and one bank-name flag, a failed import that leaves no bank, the worked example.

Each test names the import problem of issue 15 it pins down.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smcs_graph import HashingEmbedder, QuestionBank
from smcs_graph.bank.importer import import_matrix
from smcs_graph.cli import build_parser, main
from smcs_graph.offline.evaluation import load_replay_data, replay_data_from_bank
from smcs_graph.questions import (
    QuestionFormatError,
    QuestionRecord,
    category_of,
    load_benchmark,
    load_records,
    read_matrix,
    save_records,
    split_bank_test,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "byod"


def _records(n: int, *, category: bool = True) -> list[QuestionRecord]:
    return [
        QuestionRecord(
            id=f"research/{i}",
            family="numeric",
            question=f"What is {i} times {i + 1}?",
            answer=str(i * (i + 1)),
            category=("easy" if i % 2 else "hard") if category else "",
            source="research",
        )
        for i in range(n)
    ]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


# ------------------------------------------------------------------ reading the file


def test_a_line_separator_inside_a_json_string_does_not_split_the_row(tmp_path: Path) -> None:
    # U+0085 and U+2028 are line breaks for str.splitlines(), not for JSONL.
    rows = [r.to_json() for r in _records(3)]
    rows[1]["question"] = "first part\x85second part\u2028third part"
    path = _jsonl(tmp_path / "questions.jsonl", rows)
    (path.parent / "crlf.jsonl").write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    for file in (path, path.parent / "crlf.jsonl"):
        loaded = load_records(file)
        assert [r.question for r in loaded][1] == "first part\x85second part\u2028third part"
        assert load_benchmark(file) == loaded


def test_the_format_comes_from_the_fields_not_from_the_file_name(tmp_path: Path) -> None:
    # "arc" inside "research", "math" inside "aftermath": the fields say records and GSM8K.
    records = _records(4)
    research = tmp_path / "research_questions.jsonl"
    save_records(research, records)
    assert load_benchmark(research) == records
    gsm = _jsonl(
        tmp_path / "aftermath_arc.jsonl",
        [{"question": "One plus one?", "answer": "1 + 1 = 2\n#### 2"}],
    )
    assert load_benchmark(gsm)[0].id == "gsm8k/0"


def test_the_name_breaks_a_tie_and_an_explicit_format_always_wins(tmp_path: Path) -> None:
    rows = [{"question_id": 7, "question": "Q?", "answer": "1 + 1\n#### 2"}]
    # Fits both GSM8K (question, answer) and the plain layout (question_id, question).
    assert load_benchmark(_jsonl(tmp_path / "gsm8k_part.jsonl", rows))[0].id == "gsm8k/0"
    assert load_benchmark(_jsonl(tmp_path / "mine.jsonl", rows), source="plain")[0].id == "7"
    with pytest.raises(QuestionFormatError, match="--format"):
        load_benchmark(tmp_path / "mine.jsonl")


def test_errors_name_the_detected_format_and_why(tmp_path: Path) -> None:
    rows = [r.to_json() for r in _records(3)]
    rows[2]["question"] = ""
    path = _jsonl(tmp_path / "research.jsonl", rows)
    with pytest.raises(QuestionFormatError, match=r"read as records \(detected from the fields"):
        load_benchmark(path)
    with pytest.raises(QuestionFormatError, match=r"read as arc \(given\)"):
        load_benchmark(path, source="arc")
    odd = _jsonl(tmp_path / "odd.jsonl", [{"prompt_text": "x"}])
    with pytest.raises(QuestionFormatError, match=r"prompt_text.*records: id, family, question"):
        load_benchmark(odd)


def test_the_records_format_is_documented_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["bank", "import"], ["bank", "build"], ["replay"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "records JSONL" in text, command
        assert "id, family, question" in text, command
        assert "category if set, else family" in text.replace("its ", ""), command


# ------------------------------------------------------------------ one category rule


def test_one_category_rule_everywhere(tmp_path: Path) -> None:
    with_category = _records(6)
    without = [QuestionRecord(id="x", family="math", question="1+1?", answer="2")]
    assert [category_of(r) for r in with_category[:2]] == ["hard", "easy"]
    assert category_of(without[0]) == "math"

    # bank-mode replay: categories are the records' categories, not their family
    bank = QuestionBank.in_memory(HashingEmbedder(32))
    csv = tmp_path / "m.csv"
    csv.write_text(
        "question_id,m1,m2\n" + "".join(f"{i},{i % 2},1\n" for i in range(6)), encoding="utf-8"
    )
    import_matrix(bank, csv, with_category, progress=False)
    data, _ = replay_data_from_bank(bank)
    assert sorted(set(data.categories)) == ["easy", "hard"]

    # file-mode replay: a record without a category falls back to its family
    questions = tmp_path / "q.jsonl"
    save_records(questions, [*with_category, *without])
    csv.write_text(csv.read_text() + "x,1,0\n", encoding="utf-8")
    data = load_replay_data(questions, csv)
    assert data.categories[-1] == "math" and data.categories[0] == "hard"

    # the bank/test split stratifies by the same rule
    mixed = [
        *_records(10, category=False),
        *[
            QuestionRecord(id=f"m{i}", family="math", question=f"{i}+1?", answer=str(i + 1))
            for i in range(10)
        ],
    ]
    _, test = split_bank_test(mixed, test_fraction=0.2, seed=0)
    assert sorted(r.family for r in test) == ["math", "math", "numeric", "numeric"]


# ------------------------------------------------------------------ one file format, one flag


def test_replay_reads_the_file_bank_import_reads_with_the_same_id_column(tmp_path: Path) -> None:
    questions = tmp_path / "research_questions.jsonl"
    save_records(questions, _records(4))
    csv = tmp_path / "results.csv"
    csv.write_text("model_a,qid,model_b\n1,research/0,0\n0,research/1,\n1,research/3,1\n")
    data = load_replay_data(questions, csv, id_column="qid")
    assert data.question_ids == ["research/0", "research/1", "research/3"]
    assert data.models == ["model_a", "model_b"]
    np.testing.assert_array_equal(data.measured, [[True, True, True], [True, False, True]])
    bank = QuestionBank.in_memory(HashingEmbedder(32))
    report = import_matrix(bank, csv, load_benchmark(questions), id_column="qid", progress=False)
    assert report.questions == 3 and report.results == 5
    assert read_matrix(csv, id_column="qid").ids == data.question_ids


def test_one_flag_name_for_the_bank_and_the_id_column() -> None:
    parser = build_parser()
    for flag in ("--name", "--bank-name"):
        args = parser.parse_args(["replay", "--bank", "b", flag, "mine"])
        assert args.bank_name == "mine"
        args = parser.parse_args(["bank", "import", "--bank", "b", flag, "mine"])
        assert args.name == "mine"
    args = parser.parse_args(["replay", "--id-column", "qid"])
    assert args.id_column == "qid"


def test_the_old_spellings_are_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["replay"], ["bank", "import"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert "--name" in text and "--bank-name" not in text, command


# ------------------------------------------------------------------ a failed import


def test_a_failed_import_leaves_no_bank_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = tmp_path / "q.jsonl"
    save_records(questions, _records(3))
    csv = tmp_path / "m.csv"
    csv.write_text("question_id,m1\nnot-there,1\n", encoding="utf-8")
    command = ["bank", "import", "--matrix", str(csv), "--questions", str(questions)]
    new = tmp_path / "new-bank"
    assert main([*command, "--bank", str(new), "--embedder", "hashing:16"]) == 2
    assert "no matrix id matches a question" in capsys.readouterr().err
    assert not new.exists()

    # a pre-existing folder and what it held are left as they were
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main([*command, "--bank", str(mine), "--embedder", "hashing:16"]) == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    # a failure after the bank was opened removes what the import created, and only that
    union = tmp_path / "union.json"
    entry = {"question": "Q?", "src": "gsm8k", "model_res": {"m": {"is_correct": 2}}}
    union.write_text(json.dumps({"q1": entry}), encoding="utf-8")
    argv = ["bank", "import", "--union-json", str(union), "--embedder", "hashing:16"]
    later = tmp_path / "later"
    assert main([*argv, "--bank", str(later)]) == 2
    assert "is_correct must be" in capsys.readouterr().err
    assert not later.exists()
    assert main([*argv, "--bank", str(mine)]) == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


# ------------------------------------------------------------------ the worked example


def test_the_worked_example_imports_every_cell(tmp_path: Path) -> None:
    records = load_benchmark(EXAMPLE / "questions.jsonl")
    matrix = read_matrix(EXAMPLE / "results.csv")
    # the embedded local pool's model names, so `smcs ask --bank` can use the bank
    pool = (ROOT / "smcs_graph" / "data" / "local_pool.yaml").read_text(encoding="utf-8")
    assert all(f"- name: {model}\n" in pool for model in matrix.models)
    assert len(matrix.models) == 3
    bank = QuestionBank.in_memory(HashingEmbedder(32))
    report = import_matrix(bank, matrix, records, progress=False)
    assert report.questions == len(records) == len(matrix.ids)
    assert not report.unmatched_rows and not report.unmatched_questions
    assert report.masked == matrix.masked > 0
    assert {r.family for r in records} >= {"multiple_choice", "numeric"}

"""Question records, loaders on hand-made files in each benchmark format, prompts and splits."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from smcs_graph.questions import (
    QuestionFormatError,
    QuestionRecord,
    load_benchmark,
    load_huggingface,
    load_humaneval,
    load_records,
    prompt_for,
    read_rows,
    save_records,
    split_bank_test,
)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


MC = QuestionRecord(
    id="demo/1",
    family="multiple_choice",
    question="Which planet is closest to the Sun?",
    choices=("Venus", "Mercury", "Mars"),
    answer="B",
    category="astronomy",
    source="demo",
)


def test_records_round_trip_through_json() -> None:
    code = QuestionRecord(
        id="c/1", family="code", question="Write f.", tests="assert f() == 1", entry_point="f"
    )
    instruction = QuestionRecord(
        id="i/1",
        family="instruction",
        question="Say hi without commas.",
        constraints=({"id": "punctuation:no_comma", "kwargs": {}},),
    )
    for record in (MC, code, instruction):
        data = json.loads(json.dumps(record.to_json()))
        assert QuestionRecord.from_json(data) == record


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "x", "family": "math"}, "lacks required fields"),
        ({"id": "x", "family": "math", "question": "q", "colour": 1}, "unknown fields"),
        ({"id": "", "family": "math", "question": "q"}, "'id' must be non-empty"),
        (
            {"id": "x", "family": "multiple_choice", "question": "q", "choices": ["a"]},
            "needs 2 to 26 choices",
        ),
        (
            {
                "id": "x",
                "family": "multiple_choice",
                "question": "q",
                "choices": ["a", "b"],
                "answer": "C",
            },
            "not one of the letters A-B",
        ),
        ({"id": "x", "family": "code", "question": "q"}, "no tests"),
        ({"id": "x", "family": "math", "question": "q", "choices": "ab"}, "list of strings"),
    ],
)
def test_bad_records_are_rejected_with_the_reason(data: dict[str, Any], message: str) -> None:
    with pytest.raises(QuestionFormatError, match=message):
        QuestionRecord.from_json(data)


def test_prompts_ask_for_each_familys_answer_format() -> None:
    mc = prompt_for(MC)
    assert "(A) Venus\n(B) Mercury\n(C) Mars" in mc
    assert "The answer is (X)" in mc
    math = QuestionRecord(id="m", family="math", question="What is 1/2 + 1/4?", answer="3/4")
    assert "\\boxed{}" in prompt_for(math)
    numeric = QuestionRecord(id="n", family="numeric", question="2 + 2?", answer="4")
    assert "The answer is N" in prompt_for(numeric)
    humaneval = QuestionRecord(
        id="h", family="code", question="def f():\n", tests="x", entry_point="f"
    )
    assert "```python\ndef f():\n```" in prompt_for(humaneval)
    mbpp = QuestionRecord(id="p", family="code", question="Write g.", tests="assert g()")
    assert "```python" in prompt_for(mbpp)
    ifeval = QuestionRecord(id="i", family="instruction", question="Write a haiku.")
    assert prompt_for(ifeval) == "Write a haiku."


def test_each_benchmark_format_loads(tmp_path: Path) -> None:
    mmlu = _jsonl(
        tmp_path / "mmlu_pro.jsonl",
        [
            {
                "question_id": 7,
                "question": "Pick the even number.",
                "options": ["3", "4", "5"],
                "answer": "B",
                "category": "math",
                "src": "made-up",
            }
        ],
    )
    med = _jsonl(
        tmp_path / "medmcqa.jsonl",
        [
            {
                "question": "Which organ pumps blood?",
                "realidx": "abc",
                "options": {"A": "Lung", "B": "Heart", "C": "Skin", "D": "Bone"},
                "answer_idx": "B",
                "answer": "Heart",
            }
        ],
    )
    arc = tmp_path / "arc_challenge.json"
    arc.write_text(
        json.dumps(
            [
                {
                    "id": "Q1",
                    "question": "What melts ice?",
                    "label": ["1", "2", "3"],
                    "1": "Cold",
                    "2": "Heat",
                    "3": "Dark",
                    "answer": "2",
                }
            ]
        )
    )
    math = _jsonl(
        tmp_path / "math500.jsonl",
        [{"problem": "1+1?", "answer": "2", "subject": "Algebra", "unique_id": "t/a/1.json"}],
    )
    gsm = _jsonl(
        tmp_path / "gsm8k_test.jsonl",
        [{"question": "How many?", "answer": "Count them.\n#### 1,250"}],
    )
    mbpp = _jsonl(
        tmp_path / "mbpp.jsonl",
        [
            {
                "task_id": "mbpp/9",
                "text": "Write double(x).",
                "code": "def double(x):\n    return 2 * x",
                "test_list": ["assert double(2) == 4"],
                "test_setup_code": "",
                "split": "test",
            }
        ],
    )
    ifeval = _jsonl(
        tmp_path / "ifeval.jsonl",
        [
            {
                "key": 5,
                "prompt": "Answer in lowercase.",
                "instruction_id_list": ["en:change_case:english_lowercase"],
                "kwargs": [{}],
            }
        ],
    )
    (record,) = load_benchmark(mmlu)
    assert (record.id, record.choices, record.answer, record.category) == (
        "mmlu_pro/7",
        ("3", "4", "5"),
        "B",
        "math",
    )
    (record,) = load_benchmark(med)
    assert (record.id, record.answer, record.choices[1]) == ("medmcqa/abc", "B", "Heart")
    (record,) = load_benchmark(arc)
    assert (record.id, record.answer, record.choices) == ("arc/Q1", "B", ("Cold", "Heat", "Dark"))
    (record,) = load_benchmark(math)
    assert (record.family, record.answer, record.category) == ("math", "2", "Algebra")
    (record,) = load_benchmark(gsm)
    assert (record.id, record.family, record.answer) == ("gsm8k/0", "numeric", "1250")
    (record,) = load_benchmark(mbpp)
    assert record.id == "mbpp/9" and record.family == "code"
    assert "assert double(2) == 4" in record.question and record.tests
    (record,) = load_benchmark(ifeval)
    assert record.constraints == ({"id": "change_case:english_lowercase", "kwargs": {}},)


def test_format_is_recognised_from_fields_and_can_be_forced(tmp_path: Path) -> None:
    rows = [{"question": f"q{i}?", "answer": f"x\n#### {i}"} for i in range(5)]
    unnamed = _jsonl(tmp_path / "data.jsonl", rows)
    assert [r.answer for r in load_benchmark(unnamed, limit=3)] == ["0", "1", "2"]
    assert load_benchmark(unnamed, source="gsm8k")[4].id == "gsm8k/4"
    with pytest.raises(QuestionFormatError, match="unknown question source"):
        load_benchmark(unnamed, source="trivia")


def test_unknown_formats_and_bad_rows_are_named(tmp_path: Path) -> None:
    odd = _jsonl(tmp_path / "odd.jsonl", [{"text": "?"}])
    with pytest.raises(QuestionFormatError, match="cannot tell the format"):
        load_benchmark(odd)
    broken = tmp_path / "gsm8k.jsonl"
    broken.write_text('{"question": "q", "answer": "#### 1"}\n{not json\n')
    with pytest.raises(QuestionFormatError, match=r"line 2: not valid JSON"):
        load_benchmark(broken)
    no_final = _jsonl(tmp_path / "gsm8k_x.jsonl", [{"question": "q", "answer": "no marker"}])
    with pytest.raises(QuestionFormatError, match=r"row 1: the answer has no final"):
        load_benchmark(no_final)
    with pytest.raises(FileNotFoundError, match="question file not found"):
        load_benchmark(tmp_path / "missing.jsonl")


def test_own_records_save_atomically_and_load(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    records = [MC, QuestionRecord(id="demo/2", family="math", question="2+2?", answer="4")]
    save_records(path, records)
    assert load_records(path) == records
    assert load_benchmark(path) == records  # recognised as our own format
    assert [p.name for p in tmp_path.iterdir()] == ["bank.jsonl"]  # no temporary left
    path.write_text(path.read_text() + json.dumps(MC.to_json()) + "\n")
    with pytest.raises(QuestionFormatError, match="duplicate question id 'demo/1'"):
        load_records(path)


def test_humaneval_comes_from_the_package() -> None:
    records = load_humaneval(limit=3)
    assert [r.id for r in records] == [f"humaneval/HumanEval/{i}" for i in range(3)]
    assert all(r.family == "code" and r.entry_point and r.tests for r in records)


def _many(n: int) -> list[QuestionRecord]:
    return [
        QuestionRecord(
            id=f"q{i}", family="math", question=f"q{i}", answer="1", category=f"c{i % 3}"
        )
        for i in range(n)
    ]


def test_split_is_seeded_stratified_and_complete() -> None:
    records = _many(90)
    bank, test = split_bank_test(records, test_fraction=0.2, seed=1)
    assert len(test) == 18 and len(bank) == 72
    assert {r.id for r in bank} | {r.id for r in test} == {r.id for r in records}
    assert not {r.id for r in bank} & {r.id for r in test}
    assert sorted(sum(r.category == c for r in test) for c in ("c0", "c1", "c2")) == [6, 6, 6]
    again = split_bank_test(list(reversed(records)), test_fraction=0.2, seed=1)[1]
    assert {r.id for r in again} == {r.id for r in test}  # independent of input order
    other = split_bank_test(records, test_fraction=0.2, seed=2)[1]
    assert {r.id for r in other} != {r.id for r in test}


def test_split_is_stable_across_runs_and_versions() -> None:
    # The test questions are those with the smallest SHA-256 of "seed\0id" (not hash(), which
    # changes per process): recomputed here, and pinned as recorded.
    test = split_bank_test(_many(12), test_fraction=0.25, seed=0, stratify_by=None)[1]
    ranked = sorted(
        (f"q{i}" for i in range(12)), key=lambda i: hashlib.sha256(f"0\x00{i}".encode()).digest()
    )
    assert {r.id for r in test} == set(ranked[:3])
    assert [r.id for r in test] == ["q5", "q7", "q8"]


def test_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_bank_test(_many(3), test_fraction=1.5)
    with pytest.raises(ValueError, match="cannot stratify by 'colour'"):
        split_bank_test(_many(3), stratify_by="colour")
    with pytest.raises(ValueError, match="unique"):
        split_bank_test(_many(3) + _many(1))


def test_hugging_face_rows_map_onto_records(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {
        "allenai/ai2_arc": [
            {
                "id": "A1",
                "question": "Which is a gas?",
                "choices": {"text": ["Rock", "Steam"], "label": ["A", "B"]},
                "answerKey": "B",
            }
        ],
        "google/IFEval": [
            {
                "key": 3,
                "prompt": "No commas please.",
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{"num_words": None, "relation": None}],
            }
        ],
    }
    calls: list[tuple[str, str | None, str]] = []

    def load_dataset(name: str, config: str | None = None, *, split: str) -> list[dict[str, Any]]:
        calls.append((name, config, split))
        return rows[name]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    (arc,) = load_huggingface("allenai/ai2_arc", "test", config="ARC-Challenge")
    assert (arc.id, arc.answer, arc.choices) == ("arc/A1", "B", ("Rock", "Steam"))
    (ifeval,) = load_huggingface("google/IFEval", "train")
    assert ifeval.constraints == ({"id": "punctuation:no_comma", "kwargs": {}},)
    assert calls == [("allenai/ai2_arc", "ARC-Challenge", "test"), ("google/IFEval", None, "train")]
    with pytest.raises(QuestionFormatError, match="cannot tell the row layout"):
        load_huggingface("someone/trivia", "test")


def test_hugging_face_errors_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install 'smcs-graph\[hf\]'"):
        load_huggingface("openai/gsm8k", "test")

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(RuntimeError, match="needs a network connection"):
        load_huggingface("openai/gsm8k", "test")


def test_a_question_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        '{"id": "q1", "family": "math", "question": "Combien font 2 × 2 ?"}\n'.encode("latin-1")
    )
    with pytest.raises(
        QuestionFormatError, match=r"latin1\.jsonl: not UTF-8 text .*save the file as UTF-8"
    ):
        list(read_rows(path))
    bom = tmp_path / "bom.jsonl"  # a byte-order mark (Windows editors) is no error
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"id": "q1"}\n')
    assert [row for _, row in read_rows(bom)] == [{"id": "q1"}]


def test_prompts_end_with_the_answer_contracts_instruction() -> None:
    from smcs_graph.answers import CONTRACTS

    records = {
        "multiple_choice": MC,
        "math": QuestionRecord(id="m", family="math", question="What is 1/2 + 1/4?"),
        "numeric": QuestionRecord(id="n", family="numeric", question="2 + 2?"),
    }
    for family, record in records.items():
        prompt = prompt_for(record)
        assert prompt.startswith(record.question)
        assert prompt.endswith("\n\n" + CONTRACTS[family].instruction)
    code = CONTRACTS["code"].instruction
    humaneval = QuestionRecord(
        id="h", family="code", question="def f():\n", tests="x", entry_point="f"
    )
    mbpp = QuestionRecord(id="p", family="code", question="Write g.", tests="assert g()")
    assert f"{code}.\n\n```python\ndef f():\n```" in prompt_for(humaneval)
    assert prompt_for(mbpp).startswith("Write g.") and prompt_for(mbpp).endswith(f"{code}.")

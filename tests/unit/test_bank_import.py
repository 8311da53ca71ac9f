"""Bank storage of full records, the incomplete-build mark, and imports of recorded results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from smcs_graph import BankError, BankQuestion, ConfigError, HashingEmbedder, QuestionBank
from smcs_graph.bank.importer import (
    add_records,
    import_matrix,
    import_union_bank,
    native_id,
    read_matrix,
)
from smcs_graph.questions import QuestionRecord, save_records

CODE = QuestionRecord(
    id="toy/code-1",
    family="code",
    question="def add(a, b):\n    '''Add two numbers.'''\n",
    tests="def check(candidate):\n    assert candidate(1, 2) == 3\n",
    entry_point="add",
    source="toy",
)
CHOICE = QuestionRecord(
    id="toy/mc-1",
    family="multiple_choice",
    question="Which colour is the sky on a clear day?",
    choices=("green", "blue", "red"),
    answer="B",
    category="nature",
    source="toy",
)


def records(n: int) -> list[QuestionRecord]:
    return [
        QuestionRecord(
            id=f"toy/{i}",
            family="multiple_choice",
            question=f"Toy question {i} about topic {i % 3}?",
            choices=("yes", "no"),
            answer="AB"[i % 2],
            category=f"topic{i % 3}",
            source="toy",
        )
        for i in range(n)
    ]


@pytest.fixture
def bank() -> QuestionBank:
    return QuestionBank.in_memory(HashingEmbedder(64))


# ---------------------------------------------------------------------- records in the bank


def test_full_records_round_trip_through_the_bank(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    with QuestionBank.open(path, HashingEmbedder(64)) as bank:
        bank.add_questions([BankQuestion.from_record(CODE), BankQuestion.from_record(CHOICE)])
    with QuestionBank.open(path, HashingEmbedder(64), create=False) as reopened:
        code, choice = reopened.get([CODE.id, CHOICE.id])
        assert code.to_record() == CODE and choice.to_record() == CHOICE
        assert choice.category == "nature" and choice.family == "multiple_choice"
        info = reopened.info()
    assert info["sources"] == {"toy": 2}
    assert info["categories"] == {"": 1, "nature": 1}


def test_a_question_without_a_record_still_gives_a_record() -> None:
    plain = BankQuestion(id="n/1", question="What is 2 + 2?", family="numeric", answer="4")
    record = plain.to_record()
    assert (record.id, record.family, record.answer) == ("n/1", "numeric", "4")


def test_a_changed_record_drops_the_results_that_graded_the_old_one(bank: QuestionBank) -> None:
    bank.add_questions([BankQuestion.from_record(CODE)])
    bank.record_results("m", {CODE.id: True})
    same = BankQuestion.from_record(CODE)
    assert bank.add_questions([same]) == 0  # unchanged: tuples and lists compare as JSON
    harder = QuestionRecord(**{**CODE.__dict__, "tests": CODE.tests + "    assert 0\n"})
    assert bank.add_questions([BankQuestion.from_record(harder)]) == 1
    assert bank.coverage() == {}
    assert bank.get([CODE.id])[0].to_record() == harder


def test_attaching_a_record_or_changing_the_category_keeps_results(bank: QuestionBank) -> None:
    bank.add_questions([BankQuestion(id=CHOICE.id, question=CHOICE.question, answer="B")])
    bank.record_results("m", {CHOICE.id: False})
    bank.add_questions([BankQuestion.from_record(CHOICE)])
    assert bank.coverage() == {"m": 1}
    assert bank.get([CHOICE.id])[0].record is not None


def test_bad_record_fields_are_rejected(bank: QuestionBank) -> None:
    with pytest.raises(ValueError, match="category must be a string"):
        bank.add_questions([BankQuestion(id="a", question="q", category=3)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not JSON-serializable"):
        bank.add_questions([BankQuestion(id="a", question="q", record={"x": object()})])


def test_record_many_writes_several_models_and_none_unrecords(bank: QuestionBank) -> None:
    add_records(bank, records(4), progress=False)
    bank.record_many({"a": {"toy/0": True, "toy/1": False}, "b": {"toy/0": False}})
    cap, measured = bank.capability(["a", "b"], ["toy/0", "toy/1", "toy/2"])
    np.testing.assert_array_equal(measured, [[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(cap, [[1, 0, 0], [0, 0, 0]])
    bank.record_many({"a": {"toy/1": None}})
    assert bank.coverage() == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match="True/False"):
        bank.record_many({"a": {"toy/0": 2}})  # type: ignore[dict-item]
    with pytest.raises(BankError, match="not in bank"):
        bank.record_many({"a": {"nope": True}})


def test_given_embeddings_are_stored_instead_of_embedding(bank: QuestionBank) -> None:
    vectors = np.eye(64, dtype=np.float32)[:2] * 3.0
    bank.add_questions(
        [BankQuestion(id="a", question="alpha"), BankQuestion(id="b", question="beta")],
        embeddings=vectors,
    )
    stored = bank.collection.get(ids=["a", "b"], include=["embeddings"])["embeddings"]
    np.testing.assert_allclose(np.asarray(stored), np.eye(64)[:2], atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        bank.add_questions([BankQuestion(id="c", question="gamma")], embeddings=np.ones((1, 3)))


# ---------------------------------------------------------------------- incomplete builds


def test_an_interrupted_bulk_write_leaves_a_bank_that_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    bank = QuestionBank.open(path, HashingEmbedder(64))
    with pytest.raises(KeyboardInterrupt), bank.building():
        add_records(bank, records(3), progress=False)
        raise KeyboardInterrupt
    bank.close()
    with pytest.raises(BankError, match="incomplete"):
        QuestionBank.open(path, HashingEmbedder(64), create=False)
    with QuestionBank.open(path, HashingEmbedder(64), allow_incomplete=True) as resumed:
        assert not resumed.complete and resumed.info()["complete"] is False
        with resumed.building():
            add_records(resumed, records(5), progress=False)
    with QuestionBank.open(path, HashingEmbedder(64), create=False) as done:
        assert done.complete and len(done) == 5
        assert done.info()["embedder_id"] == HashingEmbedder(64).id  # metadata kept


# ---------------------------------------------------------------------- CSV matrix


def write_matrix(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_matrix_import_keeps_empty_cells_masked_and_reports_unmatched_rows(
    bank: QuestionBank, tmp_path: Path
) -> None:
    csv = write_matrix(
        tmp_path / "m.csv",
        "question_id,alpha,beta\n0,1,0\n1,0,\n2,,1\n99,1,1\n",
    )
    report = import_matrix(bank, csv, records(4), progress=False)
    assert report.questions == 3 and report.unmatched_rows == ["99"]
    assert report.unmatched_questions == 1  # toy/3 has no row
    assert report.results == 4 and report.masked == 2
    assert sorted(bank.question_ids()) == ["toy/0", "toy/1", "toy/2"]
    cap, measured = bank.capability(["alpha", "beta"], ["toy/0", "toy/1", "toy/2"])
    np.testing.assert_array_equal(measured, [[True, True, False], [True, False, True]])
    np.testing.assert_array_equal(cap, [[1, 0, 0], [0, 0, 1]])
    assert bank.info()["accuracy"] == {"alpha": 0.5, "beta": 0.5}
    assert "1 matrix row(s) had no question: 99" in report.summary()
    # Stored records carry what grading needs.
    assert bank.get(["toy/1"])[0].to_record() == records(4)[1]


def test_matrix_join_on_full_ids_and_a_named_id_column(bank: QuestionBank, tmp_path: Path) -> None:
    csv = write_matrix(tmp_path / "m.csv", "alpha,qid\n1,toy/0\n0,toy/1\n")
    report = import_matrix(bank, csv, records(2), join="id", id_column="qid", progress=False)
    assert report.models == ["alpha"] and report.results == 2
    full_ids = write_matrix(tmp_path / "full.csv", "question_id,alpha\ntoy/0,1\n")
    with pytest.raises(ConfigError, match=r"no matrix id matches.*join on 'native'"):
        import_matrix(bank, full_ids, records(2), join="native", progress=False)  # '0', '1'
    # the default join takes whichever of the two matches more rows: here the full ids
    assert import_matrix(bank, full_ids, records(2), progress=False).results == 1
    native = write_matrix(tmp_path / "native.csv", "question_id,alpha\n0,1\n1,0\n")
    assert import_matrix(bank, native, records(2), progress=False).results == 2
    with pytest.raises(ConfigError, match=r"no matrix id matches.*join on 'id'"):
        import_matrix(bank, native, records(2), join="id", progress=False)


def test_matrix_errors_name_the_line(tmp_path: Path) -> None:
    bad_cell = write_matrix(tmp_path / "a.csv", "question_id,m\n1,0.5\n")
    with pytest.raises(ConfigError, match=r"line 2, column 'm': '0.5'"):
        read_matrix(bad_cell)
    repeated = write_matrix(tmp_path / "b.csv", "question_id,m\n1,0\n1,1\n")
    with pytest.raises(ConfigError, match="appears twice"):
        read_matrix(repeated)
    short = write_matrix(tmp_path / "c.csv", "question_id,m,n\n1,0\n")
    with pytest.raises(ConfigError, match="2 cells but the header has 3"):
        read_matrix(short)
    with pytest.raises(ConfigError, match="not found"):
        read_matrix(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="no id column"):
        read_matrix(write_matrix(tmp_path / "d.csv", "id,m\n1,1\n"), id_column="question_id")


def test_matrix_accepts_booleans_and_float_cells(tmp_path: Path) -> None:
    matrix = read_matrix(write_matrix(tmp_path / "m.csv", "question_id,m\na,1.0\nb,false\nc,\n"))
    assert matrix.results == {"m": {"a": True, "b": False}} and matrix.masked == 1


def test_native_id_drops_the_source_prefix() -> None:
    assert native_id(records(1)[0]) == "0"
    assert native_id(QuestionRecord(id="plain", family="numeric", question="q")) == "plain"


def test_importing_twice_changes_nothing(bank: QuestionBank, tmp_path: Path) -> None:
    csv = write_matrix(tmp_path / "m.csv", "question_id,alpha\n0,1\n1,0\n")
    questions = tmp_path / "questions.jsonl"
    save_records(questions, records(2))
    import_matrix(bank, csv, records(2), progress=False)
    again = import_matrix(bank, csv, records(2), progress=False)
    assert again.written == 0 and len(bank) == 2 and bank.coverage() == {"alpha": 2}


# ---------------------------------------------------------------------- union-bank JSON


def union_bank(path: Path, dimension: int, embedding_model: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    entries = {}
    for i, (src, text) in enumerate(
        [
            ("mmlu_pro", "Which law describes the force between two charges?"),
            ("math", "What is the derivative of x squared?"),
            ("gsm8k", "Tom has 3 apples and buys 2 more. How many now?"),
            ("mbpp", "Write a function that reverses a string."),
            ("ifeval", "Write a haiku about rain without using commas."),
            ("some_new_set", "Name a prime number larger than ten."),
        ]
    ):
        entry = {
            "question": text,
            "src": src,
            "model_res": {
                "big-model": {"is_correct": i % 2 == 0},
                "small-model": {"is_correct": None if i == 1 else int(i % 3 == 0)},
            },
            "embedding": rng.normal(size=dimension).tolist(),
        }
        if embedding_model is not None:
            entry["embedding_model"] = embedding_model
        entries[f"u{i}"] = entry
    path.write_text(json.dumps(entries))
    return path


def test_union_bank_import_re_embeds_vectors_of_another_model(
    bank: QuestionBank, tmp_path: Path
) -> None:
    path = union_bank(tmp_path / "union.json", dimension=8, embedding_model="some-other-model")
    report = import_union_bank(bank, path, progress=False)
    assert report.questions == 6 and report.models == ["big-model", "small-model"]
    assert report.results == 11 and report.masked == 1
    assert report.embeddings.startswith(f"embedded by {bank.embedder.id}")
    info = bank.info()
    assert info["families"] == {
        "code": 1,
        "general": 1,
        "instruction": 1,
        "math": 1,
        "multiple_choice": 1,
        "numeric": 1,
    }
    stored = np.asarray(bank.collection.get(ids=["u0"], include=["embeddings"])["embeddings"])
    expected = bank.embedder.embed(["Which law describes the force between two charges?"])
    np.testing.assert_allclose(stored, expected, atol=1e-6)
    cap, measured = bank.capability(["big-model", "small-model"], ["u0", "u1", "u3"])
    np.testing.assert_array_equal(measured, [[True, True, True], [True, False, True]])
    np.testing.assert_array_equal(cap, [[1, 0, 0], [1, 0, 1]])


def test_union_bank_vectors_of_the_same_embedder_are_used_as_stored(
    bank: QuestionBank, tmp_path: Path
) -> None:
    path = union_bank(tmp_path / "union.json", dimension=64)
    # Same dimension but no embedder named: re-embedded, since it cannot be trusted.
    unnamed = import_union_bank(QuestionBank.in_memory(HashingEmbedder(64)), path, progress=False)
    assert "no embedding model named" in unnamed.embeddings
    report = import_union_bank(bank, path, embedding_model=bank.embedder.id, progress=False)
    assert report.embeddings == f"stored vectors of {bank.embedder.id}"
    raw = np.asarray(json.loads(path.read_text())["u2"]["embedding"], dtype=np.float32)
    stored = np.asarray(bank.collection.get(ids=["u2"], include=["embeddings"])["embeddings"])[0]
    np.testing.assert_allclose(stored, raw / np.linalg.norm(raw), atol=1e-6)


def test_union_bank_errors_are_clear(bank: QuestionBank, tmp_path: Path) -> None:
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping question ids"):
        import_union_bank(bank, listed, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": {"question": "q?", "model_res": {"m": {"is_correct": "yes"}}}}))
    with pytest.raises(ConfigError, match="is_correct must be"):
        import_union_bank(bank, bad, progress=False)
    with pytest.raises(ConfigError, match="not found"):
        import_union_bank(bank, tmp_path / "missing.json", progress=False)

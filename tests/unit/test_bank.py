"""QuestionBank on in-memory and on-disk Chroma with fake embedders (no model, no network)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import chromadb
import numpy as np
import pytest
from numpy.typing import NDArray

from smcs_graph.bank import BankQuestion, QuestionBank, Support, VectorIndex
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.errors import BankError, ConfigError, EmbedderMismatchError


class VectorEmbedder:
    """Maps the text 'v<i>' to row i of a fixed matrix: lets tests choose the bank vectors."""

    def __init__(self, vectors: NDArray[np.float64], id: str = "vectors") -> None:
        self.vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        self.id = id
        self.dimension = vectors.shape[1]
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        rows = [int(t[1:]) for t in texts]
        return self.vectors[rows].astype(np.float32).reshape(len(rows), self.dimension)


class CountingEmbedder(HashingEmbedder):
    def __init__(self, dimension: int = 16) -> None:
        super().__init__(dimension)
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.texts.extend(texts)
        return super().embed(texts)


def questions(n: int, start: int = 0, family: str = "general") -> list[BankQuestion]:
    return [BankQuestion(id=f"q{i}", question=f"v{i}", family=family) for i in range(start, n)]


def reference_support(
    bank_vectors: NDArray[np.float64],
    query: NDArray[np.float64],
    n_sup_base: int,
    gamma: float,
    rule: str,
) -> tuple[NDArray[np.float64], list[int], float]:
    """A brute-force float64 reference of eq. 3 (independent of the code under test)."""
    unit = bank_vectors / np.linalg.norm(bank_vectors, axis=1, keepdims=True)
    sims = unit @ (query / np.linalg.norm(query))
    ordered = np.sort(sims)[::-1]
    rank = n_sup_base if rule == "paper" else n_sup_base + 1
    ref = ordered[min(rank, len(ordered)) - 1]
    thr = gamma * ref
    members = [
        i for i in range(len(sims)) if (sims[i] >= thr if rule == "paper" else sims[i] > thr)
    ]
    return sims, members, float(thr)


def assert_matches_reference(
    support: Support, sims: NDArray[np.float64], members: list[int], thr: float
) -> None:
    got = {int(i[1:]) for i in support.question_ids}
    # float32 storage can only flip members within ~1e-6 of the threshold.
    differ = got.symmetric_difference(members)
    assert all(abs(sims[i] - thr) < 1e-5 for i in differ), sorted(differ)
    assert len(differ) <= 1
    assert support.threshold == pytest.approx(thr, abs=1e-5)
    assert np.all(np.diff(support.similarities) <= 0), "most similar first"
    expected = np.array([sims[int(i[1:])] for i in support.question_ids])
    np.testing.assert_allclose(support.similarities, expected, atol=1e-5)


@pytest.fixture
def hashing() -> HashingEmbedder:
    return HashingEmbedder(dimension=16)


# ---------------------------------------------------------------------- adding and reading


def test_add_and_read_back(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    qs = [
        BankQuestion(id="a", question="What is 2+2?", family="math", source="gsm", answer="4"),
        BankQuestion(id="b", question="Who wrote Hamlet?", family="qa"),
    ]
    assert bank.add_questions(qs) == 2
    assert len(bank) == 2
    assert bank.question_ids() == ["a", "b"]
    assert bank.get(["b", "a"]) == [qs[1], qs[0]]
    info = bank.info()
    assert info["size"] == 2
    assert info["families"] == {"math": 1, "qa": 1}
    assert info["embedder_id"] == hashing.id
    assert info["embedding_dim"] == 16
    assert info["where"] == "memory"
    assert info["models"] == [] and info["coverage"] == {}


def test_readding_unchanged_questions_is_a_no_op() -> None:
    emb = CountingEmbedder()
    bank = QuestionBank.in_memory(emb)
    qs = [BankQuestion(id=f"q{i}", question=f"question number {i}") for i in range(5)]
    assert bank.add_questions(qs) == 5
    emb.texts.clear()
    assert bank.add_questions(qs) == 0
    assert emb.texts == []


def test_incremental_add_keeps_existing_results_and_embeds_only_new_texts() -> None:
    emb = CountingEmbedder()
    bank = QuestionBank.in_memory(emb)
    first = [BankQuestion(id=f"q{i}", question=f"question number {i}") for i in range(4)]
    bank.add_questions(first)
    bank.record_results("m1", {"q0": True, "q1": False, "q2": True, "q3": True})
    bank.capability(["m1"])  # load the snapshot so the add updates it incrementally
    emb.texts.clear()
    more = [BankQuestion(id=f"q{i}", question=f"question number {i}") for i in range(4, 7)]
    assert bank.add_questions(first + more) == 3
    assert emb.texts == [q.question for q in more]
    cap, measured = bank.capability(["m1"], ["q0", "q1", "q2", "q3", "q4", "q5", "q6"])
    np.testing.assert_array_equal(cap[0], [1, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(measured[0], [True] * 4 + [False] * 3)
    # A second handle on the same collection (fresh snapshot from Chroma) agrees.
    other = QuestionBank(bank._client, emb, name=bank.name)
    cap2, measured2 = other.capability(["m1"], ["q0", "q1", "q2", "q3", "q4", "q5", "q6"])
    np.testing.assert_array_equal(cap, cap2)
    np.testing.assert_array_equal(measured, measured2)


def test_changing_family_keeps_results_changing_text_or_answer_drops_them() -> None:
    emb = CountingEmbedder()
    bank = QuestionBank.in_memory(emb)
    qs = [
        BankQuestion(id="a", question="alpha question", family="x", answer="1"),
        BankQuestion(id="b", question="beta question", family="x", answer="2"),
        BankQuestion(id="c", question="gamma question", family="x", answer="3"),
    ]
    bank.add_questions(qs)
    bank.record_results("m", {"a": True, "b": True, "c": True})
    bank.capability(["m"])
    emb.texts.clear()
    changed = [
        BankQuestion(id="a", question="alpha question", family="y", answer="1"),
        BankQuestion(id="b", question="beta question reworded", family="x", answer="2"),
        BankQuestion(id="c", question="gamma question", family="x", answer=None),
    ]
    assert bank.add_questions(changed) == 3
    assert emb.texts == ["beta question reworded"]
    assert bank.get(["a", "b", "c"]) == changed
    for view in (bank, QuestionBank(bank._client, emb, name=bank.name)):
        _, measured = view.capability(["m"], ["a", "b", "c"])
        np.testing.assert_array_equal(measured[0], [True, False, False])
        assert view.info()["families"] == {"x": 2, "y": 1}
    # The re-worded text is what retrieval now finds.
    query = emb.embed(["beta question reworded"])[0]
    top = bank.support(query, ["m"], n_sup_base=1, gamma=1.0)
    assert top.question_ids == ["b"]


def test_duplicate_ids_in_one_call(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    with pytest.raises(ValueError, match="duplicate question id"):
        bank.add_questions(
            [BankQuestion(id="a", question="one"), BankQuestion(id="a", question="two")]
        )
    assert len(bank) == 0


@pytest.mark.parametrize(
    "bad",
    [
        BankQuestion(id="", question="text"),
        BankQuestion(id="a", question="   "),
        BankQuestion(id="a", question="text", family=""),
    ],
)
def test_invalid_questions(hashing: HashingEmbedder, bad: BankQuestion) -> None:
    with pytest.raises(ValueError):
        QuestionBank.in_memory(hashing).add_questions([bad])


def test_large_add_is_chunked_to_chroma_batch_limit() -> None:
    emb = HashingEmbedder(dimension=4)
    bank = QuestionBank.in_memory(emb)
    limit = bank._client.get_max_batch_size()
    n = limit + 539
    qs = [BankQuestion(id=f"q{i}", question=f"item {i} of the big bank") for i in range(n)]
    assert bank.add_questions(qs) == n
    assert len(bank) == n
    assert bank.get([f"q{n - 1}"])[0].question == f"item {n - 1} of the big bank"
    bank.record_results("m", {q.id: i % 2 == 0 for i, q in enumerate(qs)})
    assert bank.coverage() == {"m": n}
    fresh = QuestionBank(bank._client, emb, name=bank.name)
    assert len(fresh) == n
    assert fresh.coverage() == {"m": n}
    support = fresh.support(emb.embed(["item 7 of the big bank"])[0], ["m"], n_sup_base=50, gamma=1)
    assert len(support.question_ids) >= 50


# ---------------------------------------------------------------------- capability matrix


def test_record_results_of_one_model_leaves_others_intact(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id=f"q{i}", question=f"text {i}") for i in range(4)])
    bank.record_results("a", {"q0": True, "q1": False, "q2": True, "q3": False})
    bank.record_results("b", {"q0": False, "q1": True})
    bank.record_results("a", {"q1": True})  # partial update of a: others stay
    expected_cap = [[1, 1, 1, 0], [0, 1, 0, 0]]
    expected_measured = [[True] * 4, [True, True, False, False]]
    for view in (bank, QuestionBank(bank._client, hashing, name=bank.name)):
        cap, measured = view.capability(["a", "b"])
        np.testing.assert_array_equal(cap, expected_cap)
        np.testing.assert_array_equal(measured, expected_measured)
        assert view.models == ["a", "b"]
        assert view.coverage() == {"a": 4, "b": 2}


def test_none_unrecords_a_result(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions(
        [BankQuestion(id="q0", question="zero"), BankQuestion(id="q1", question="one")]
    )
    bank.record_results("a", {"q0": True, "q1": True})
    bank.record_results("a", {"q0": None})
    _, measured = bank.capability(["a"])
    np.testing.assert_array_equal(measured, [[False, True]])
    bank.record_results("a", {"q1": None})
    assert bank.models == []
    assert QuestionBank(bank._client, hashing, name=bank.name).models == []


def test_model_names_with_separators(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id="q0", question="zero")])
    names = ["Qwen/Qwen2.5-72B-Instruct", "llama3.3:70b-q4_K_M", "org/model.v1-2:latest"]
    for i, name in enumerate(names):
        bank.record_results(name, {"q0": i % 2 == 0})
    fresh = QuestionBank(bank._client, hashing, name=bank.name)
    assert fresh.models == sorted(names)
    cap, _ = fresh.capability(names)
    np.testing.assert_array_equal(cap[:, 0], [1, 0, 1])


def test_unknown_ids_are_rejected_and_nothing_is_written(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id="q0", question="zero")])
    with pytest.raises(BankError, match="not in bank") as info:
        bank.record_results("a", {"q0": True, "ghost-1": True, "ghost-2": False})
    assert "ghost-1" in str(info.value) and "add_questions" in str(info.value)
    assert bank.models == []


def test_bad_result_values(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id="q0", question="zero")])
    with pytest.raises(ValueError, match="True/False"):
        bank.record_results("a", {"q0": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="model"):
        bank.record_results("", {"q0": True})


def test_masked_entries_and_unknown_models(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id=f"q{i}", question=f"text {i}") for i in range(3)])
    bank.record_results("a", {"q1": True})
    cap, measured = bank.capability(["a", "never-profiled"])
    np.testing.assert_array_equal(cap, [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(measured, [[False, True, False], [False, False, False]])
    with pytest.raises(BankError, match="nope"):
        bank.capability(["a"], ["q0", "nope"])
    support = bank.support(
        hashing.embed(["text 1"])[0], ["a", "never-profiled"], n_sup_base=3, gamma=1
    )
    assert support.models == ["a", "never-profiled"]
    assert support.measured.shape == (2, 3)
    assert not support.measured[1].any()
    col = support.question_ids.index("q1")
    assert support.measured[0].tolist() == [i == col for i in range(3)]
    assert support.capability[0, col] == 1.0


def test_get_unknown_id(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    with pytest.raises(BankError, match="missing"):
        bank.get(["missing"])


# ---------------------------------------------------------------------- opening


def test_persistent_reopen_keeps_everything(tmp_path: Path, hashing: HashingEmbedder) -> None:
    path = tmp_path / "bank"
    with QuestionBank.open(path, hashing) as bank:
        bank.add_questions([BankQuestion(id="q0", question="zero", answer="0")])
        bank.record_results("a/b:c", {"q0": True})
    with QuestionBank.open(path, hashing, create=False) as again:
        assert again.get(["q0"]) == [BankQuestion(id="q0", question="zero", answer="0")]
        assert again.models == ["a/b:c"]
        assert again.where == str(path.resolve())


def test_embedder_mismatch_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    QuestionBank.open(path, HashingEmbedder(dimension=16, id="emb-A")).close()
    with pytest.raises(EmbedderMismatchError) as by_id:
        QuestionBank.open(path, HashingEmbedder(dimension=16, id="emb-B"))
    message = str(by_id.value)
    assert "emb-A" in message and "emb-B" in message
    assert "open it with the embedder that built it" in message and "rebuild" in message
    with pytest.raises(EmbedderMismatchError, match=r"16 dimensions.*32 dimensions"):
        QuestionBank.open(path, HashingEmbedder(dimension=32, id="emb-A"))
    QuestionBank.open(path, HashingEmbedder(dimension=16, id="emb-A")).close()


def test_create_false_on_a_missing_path(tmp_path: Path, hashing: HashingEmbedder) -> None:
    missing = tmp_path / "no-such-bank"
    with pytest.raises(BankError, match="no question bank at") as info:
        QuestionBank.open(missing, hashing, create=False)
    assert str(missing) in str(info.value)
    assert not missing.exists(), "a failed open must not create the folder"


def test_create_false_on_a_missing_collection(tmp_path: Path, hashing: HashingEmbedder) -> None:
    QuestionBank.open(tmp_path, hashing, name="other_bank").close()
    with pytest.raises(BankError, match="no question bank named 'smcs_bank'") as info:
        QuestionBank.open(tmp_path, hashing, create=False)
    assert "other_bank" in str(info.value)


def test_a_foreign_collection_is_not_taken_for_a_bank(hashing: HashingEmbedder) -> None:
    client = chromadb.EphemeralClient(settings=chromadb.Settings(anonymized_telemetry=False))
    client.create_collection("foreign_collection", embedding_function=None)
    with pytest.raises(BankError, match="not an smcs-graph question bank"):
        QuestionBank(client, hashing, name="foreign_collection")


def test_invalid_name(hashing: HashingEmbedder) -> None:
    with pytest.raises(ConfigError, match="invalid bank name"):
        QuestionBank.in_memory(hashing, name="no spaces allowed")


def test_in_memory_banks_are_separate(hashing: HashingEmbedder) -> None:
    a, b = QuestionBank.in_memory(hashing), QuestionBank.in_memory(hashing)
    a.add_questions([BankQuestion(id="q0", question="zero")])
    assert len(a) == 1 and len(b) == 0


def test_from_settings_path(tmp_path: Path, hashing: HashingEmbedder) -> None:
    bank = QuestionBank.from_settings({"path": str(tmp_path / "b"), "name": "named"}, hashing)
    assert bank.name == "named"
    bank.close()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({}, "need 'path'"),
        ({"path": "x", "host": "127.0.0.1", "port": 1}, "both"),
        ({"host": "127.0.0.1"}, "port"),
        ({"host": "127.0.0.1", "port": "http"}, "port"),
        ({"host": "127.0.0.1", "port": 70000}, "port"),
        ({"path": "x", "port": 8000}, "server"),
        ({"path": "x", "colour": "red"}, "unknown bank setting"),
        ({"path": "x", "create": "yes"}, "create"),
    ],
)
def test_from_settings_errors(
    settings: dict[str, object], match: str, hashing: HashingEmbedder
) -> None:
    with pytest.raises(ConfigError, match=match):
        QuestionBank.from_settings(settings, hashing)


def test_connect_to_nothing_is_a_bank_error(hashing: HashingEmbedder) -> None:
    import socket

    with socket.socket() as s:  # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(BankError, match="chroma run"):
        QuestionBank.connect("127.0.0.1", port, hashing)


# ---------------------------------------------------------------------- retrieval


def random_bank(n: int, dim: int, seed: int) -> tuple[QuestionBank, VectorEmbedder]:
    rng = np.random.default_rng(seed)
    emb = VectorEmbedder(rng.standard_normal((n, dim)))
    bank = QuestionBank.in_memory(emb)
    bank.add_questions(questions(n))
    return bank, emb


@pytest.mark.parametrize("rule", ["paper", "authors"])
def test_exact_support_equals_brute_force(rule: str) -> None:
    n, dim = 2000, 48
    bank, emb = random_bank(n, dim, seed=1)
    rng = np.random.default_rng(2)
    caps = rng.random((2, n)) < 0.5
    bank.record_results("m0", {f"q{i}": bool(caps[0, i]) for i in range(n)})
    bank.record_results("m1", {f"q{i}": bool(caps[1, i]) for i in range(0, n, 2)})
    for _ in range(5):
        query = rng.standard_normal(dim)
        support = bank.support(query, ["m0", "m1"], n_sup_base=400, gamma=0.95, rule=rule)  # type: ignore[arg-type]
        sims, members, thr = reference_support(emb.vectors, query, 400, 0.95, rule)
        assert_matches_reference(support, sims, members, thr)
        assert support.bank_size == n
        assert len(support.question_ids) >= (400 if rule == "paper" else 401)
        cols = [int(i[1:]) for i in support.question_ids]
        np.testing.assert_array_equal(support.capability[0], caps[0, cols])
        np.testing.assert_array_equal(support.measured[0], True)
        np.testing.assert_array_equal(support.measured[1], [c % 2 == 0 for c in cols])
        np.testing.assert_array_equal(
            support.capability[1], [caps[1, c] if c % 2 == 0 else 0 for c in cols]
        )
        assert support.questions == [f"v{c}" for c in cols]


@pytest.mark.parametrize("rule", ["paper", "authors"])
def test_large_bank_search_through_the_vector_index_equals_brute_force(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smcs_graph.bank.retrieval as retrieval

    monkeypatch.setattr(retrieval, "INDEX_MIN_ROWS", 500)  # stands in for a large bank
    monkeypatch.setenv(retrieval.PATH_ENV, "int8")  # forced: no calibration
    built: list[object] = []

    def counting_index(matrix: NDArray[np.float32], precision: retrieval.Precision) -> object:
        built.append(matrix)
        return VectorIndex(matrix, precision=precision)

    monkeypatch.setattr(retrieval, "VectorIndex", counting_index)
    n, dim = 2000, 48
    bank, emb = random_bank(n, dim, seed=5)
    rng = np.random.default_rng(6)
    caps = rng.random(n) < 0.5
    bank.record_results("m0", {f"q{i}": bool(caps[i]) for i in range(n)})
    for _ in range(5):
        query = rng.standard_normal(dim)
        support = bank.support(query, ["m0"], n_sup_base=400, gamma=0.95, rule=rule)  # type: ignore[arg-type]
        sims, members, thr = reference_support(emb.vectors, query, 400, 0.95, rule)
        assert_matches_reference(support, sims, members, thr)
        cols = [int(i[1:]) for i in support.question_ids]
        np.testing.assert_array_equal(support.capability[0], caps[cols])
    assert len(built) == 1  # the index was built once and reused
    bank.record_results("m0", {"q0": not caps[0]})  # a write makes a new snapshot
    bank.support(rng.standard_normal(dim), ["m0"], n_sup_base=400, gamma=0.95, rule=rule)  # type: ignore[arg-type]
    assert len(built) == 2


def test_small_bank_uses_everything_as_neighbourhood(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id=f"q{i}", question=f"text {i}") for i in range(5)])
    q = hashing.embed(["text 3"])[0]
    support = bank.support(q, [], n_sup_base=400, gamma=0.95)
    assert support.question_ids[0] == "q3"
    assert support.similarities[0] == pytest.approx(1.0, abs=1e-6)
    assert support.capability.shape == (0, len(support.question_ids))


def test_empty_bank_gives_an_empty_support(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    support = bank.support(np.ones(16), ["a", "b"], n_sup_base=400, gamma=0.95)
    assert support.bank_size == 0
    assert support.question_ids == [] and support.questions == [] and support.families == []
    assert support.similarities.shape == (0,)
    assert support.capability.shape == (2, 0) and support.measured.shape == (2, 0)
    assert support.models == ["a", "b"]


def test_query_dimension_must_match(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id="q0", question="zero")])
    with pytest.raises(ValueError, match="16-dimensional") as info:
        bank.support(np.ones(384), ["a"], n_sup_base=10, gamma=0.95)
    assert hashing.id in str(info.value)
    with pytest.raises(ValueError, match="NaN"):
        bank.support(np.full(16, np.nan), ["a"], n_sup_base=10, gamma=0.95)
    # A (1, d) row is accepted, as an embedder returns it.
    assert bank.support(hashing.embed(["zero"]), [], n_sup_base=1, gamma=1).question_ids == ["q0"]


def test_bad_support_arguments(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    with pytest.raises(ValueError, match="n_sup_base"):
        bank.support(np.ones(16), [], n_sup_base=0, gamma=0.95)
    bank.add_questions([BankQuestion(id="q0", question="zero")])
    with pytest.raises(ValueError, match="rule"):
        bank.support(np.ones(16), [], n_sup_base=1, gamma=0.95, rule="other")  # type: ignore[arg-type]


def test_concurrent_support_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    bank, emb = random_bank(600, 24, seed=6)
    bank.record_results("m", {f"q{i}": True for i in range(600)})
    fresh = QuestionBank(bank._client, emb, name=bank.name)
    loads = 0
    real_load = fresh._load

    def counting_load() -> object:
        nonlocal loads
        loads += 1
        return real_load()

    monkeypatch.setattr(fresh, "_load", counting_load)
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((16, 24))
    expected = [bank.support(q, ["m"], n_sup_base=50, gamma=0.9).question_ids for q in queries]
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for j in range(k, 16, 8):
                results[j] = fresh.support(queries[j], ["m"], n_sup_base=50, gamma=0.9).question_ids
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert loads == 1
    assert [results[j] for j in range(16)] == expected


def test_refresh_sees_other_writers(hashing: HashingEmbedder) -> None:
    bank = QuestionBank.in_memory(hashing)
    bank.add_questions([BankQuestion(id="q0", question="zero")])
    assert bank.models == []  # snapshot loaded
    writer = QuestionBank(bank._client, hashing, name=bank.name)
    writer.add_questions([BankQuestion(id="q1", question="one")])
    writer.record_results("m", {"q0": True, "q1": False})
    assert bank.models == [] and len(bank) == 1  # the snapshot is this process's view
    bank.refresh()
    assert bank.models == ["m"] and len(bank) == 2
    # The writer's snapshot, first loaded after both writes, holds them too.
    live = writer.support(hashing.embed(["one"])[0], ["m"], n_sup_base=2, gamma=0.0)
    assert set(live.question_ids) == {"q0", "q1"}

"""Retrieval picks its first pass by measuring on this host, once, never by bank size alone.

The measurement (`calibration._measure`) is replaced by fakes: no timing is asserted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from smcs_graph.bank import QuestionBank, calibration, retrieval
from smcs_graph.bank.index import Precision, VectorIndex, unit_rows
from smcs_graph.bank.records import Support
from smcs_graph.bank.retrieval import Retriever
from smcs_graph.bank.snapshot import Snapshot
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.errors import ConfigError

ROWS, DIM, FLOOR = 600, 16, 100
MODELS = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private calibration cache, a small index floor, and no forced path from the env."""
    monkeypatch.setenv("SMCS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(retrieval.PATH_ENV, raising=False)
    monkeypatch.setattr(retrieval, "INDEX_MIN_ROWS", FLOOR)
    calibration._forget()
    yield
    calibration._forget()


def _snapshot(rows: int = ROWS, seed: int = 0) -> Snapshot:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    vectors = centres[rng.integers(0, 8, rows)] + 0.4 * rng.standard_normal((rows, DIM))
    matrix = unit_rows(vectors)
    ids = [f"q{i:05d}" for i in range(rows)]
    results = {m: rng.integers(-1, 2, rows).astype(np.int8) for m in MODELS}
    return Snapshot(
        ids, {q: i for i, q in enumerate(ids)}, ids, ["mc"] * rows, matrix, results, ["mc"] * rows
    )


def _query(snap: Snapshot, seed: int = 5) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    q = snap.matrix[3] + 0.1 * rng.standard_normal(DIM).astype(np.float32)
    out: NDArray[np.float32] = (q / np.linalg.norm(q)).astype(np.float32)
    return out


class _FakeTimer:
    """Stands in for `calibration._measure`: fixed timings, and how often it was asked."""

    def __init__(self, int8_ms: float, float32_ms: float) -> None:
        self.timings: dict[Precision, float] = {"int8": int8_ms, "float32": float32_ms}
        self.calls = 0

    def __call__(
        self, indexes: dict[Precision, VectorIndex], queries: NDArray[np.float32]
    ) -> dict[Precision, float]:
        assert set(indexes) == {"int8", "float32"} and queries.shape[1] == DIM
        self.calls += 1
        return dict(self.timings)


def _support(retriever: Retriever, snap: Snapshot, seed: int = 5) -> Support:
    return retriever.support(snap, _query(snap, seed), MODELS, 40, 0.9, "paper")


def test_both_first_passes_give_the_same_support_set(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = _snapshot()
    found = []
    for seed in range(6):
        int8 = _support(Retriever("int8"), snap, seed)
        found.append(int8.question_ids)
        f32 = _support(Retriever("float32"), snap, seed)
        assert int8.bank_size == ROWS and len(int8.question_ids) >= 40
        assert int8.question_ids == f32.question_ids
        assert np.array_equal(int8.similarities, f32.similarities)
        assert int8.threshold == f32.threshold
        assert np.array_equal(int8.capability, f32.capability)
    # The small-bank path (one float32 matrix product) finds the same questions too.
    monkeypatch.setattr(retrieval, "INDEX_MIN_ROWS", ROWS + 1)
    for seed in range(6):
        assert _support(Retriever("int8"), snap, seed).question_ids == found[seed]


@pytest.mark.parametrize(
    ("int8_ms", "float32_ms", "want"), [(9.0, 5.0, "float32"), (2.0, 5.0, "int8")]
)
def test_the_path_measured_faster_is_used(
    monkeypatch: pytest.MonkeyPatch, int8_ms: float, float32_ms: float, want: str
) -> None:
    timer = _FakeTimer(int8_ms, float32_ms)
    monkeypatch.setattr(calibration, "_measure", timer)
    retriever = Retriever()
    _support(retriever, _snapshot())
    assert retriever.path == "auto"
    assert retriever.index_precision == want
    assert timer.calls == 1


def test_int8_must_win_clearly() -> None:
    # Equal timings keep float32: the int8 index also holds an extra copy.
    chosen, _ = _choose_with(_FakeTimer(5.0, 5.0))
    assert chosen.precision == "float32"


def _choose_with(timer: _FakeTimer) -> tuple[calibration.Calibration, VectorIndex | None]:
    original = calibration._measure
    calibration._measure = timer  # type: ignore[assignment]
    try:
        return calibration.choose(_snapshot().matrix, use_cache=False)
    finally:
        calibration._measure = original  # type: ignore[assignment]


def test_calibration_runs_once_then_is_read_from_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timer = _FakeTimer(2.0, 5.0)
    monkeypatch.setattr(calibration, "_measure", timer)
    snap = _snapshot()
    first = Retriever()
    _support(first, snap)
    _support(first, _snapshot(seed=1))  # a new snapshot (a write): rebuilt, not re-measured
    _support(Retriever(), snap)  # another bank in this process
    assert timer.calls == 1
    calibration._forget()  # a new process: the file answers
    later = Retriever()
    _support(later, snap)
    assert timer.calls == 1 and later.index_precision == "int8"
    stored = json.loads(calibration.cache_file().read_text(encoding="utf-8"))
    (entry,) = stored.values()
    assert entry["precision"] == "int8" and entry["int8_ms"] == 2.0 and entry["rows"] == ROWS


def test_another_bank_size_is_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    timer = _FakeTimer(2.0, 5.0)
    monkeypatch.setattr(calibration, "_measure", timer)
    _support(Retriever(), _snapshot(ROWS))
    _support(Retriever(), _snapshot(ROWS * 4))
    assert timer.calls == 2


def test_a_bad_cache_file_is_measured_over(monkeypatch: pytest.MonkeyPatch) -> None:
    calibration.cache_file().write_text("{not json", encoding="utf-8")
    timer = _FakeTimer(9.0, 5.0)
    monkeypatch.setattr(calibration, "_measure", timer)
    retriever = Retriever()
    _support(retriever, _snapshot())
    assert timer.calls == 1 and retriever.index_precision == "float32"
    assert json.loads(calibration.cache_file().read_text(encoding="utf-8"))


def test_small_banks_are_never_calibrated(monkeypatch: pytest.MonkeyPatch) -> None:
    timer = _FakeTimer(2.0, 5.0)
    monkeypatch.setattr(calibration, "_measure", timer)
    retriever = Retriever()
    found = _support(retriever, _snapshot(FLOOR - 1))
    assert timer.calls == 0 and retriever.index_precision is None
    assert len(found.question_ids) >= 40


@pytest.mark.parametrize("forced", ["int8", "float32"])
@pytest.mark.parametrize("via_env", [True, False])
def test_a_forced_path_is_used_without_measuring(
    monkeypatch: pytest.MonkeyPatch, forced: str, via_env: bool
) -> None:
    timer = _FakeTimer(2.0, 5.0) if forced == "float32" else _FakeTimer(9.0, 5.0)
    monkeypatch.setattr(calibration, "_measure", timer)
    if via_env:
        monkeypatch.setenv(retrieval.PATH_ENV, forced.upper())
        retriever = Retriever()
    else:
        retriever = Retriever(forced)
    _support(retriever, _snapshot())
    assert retriever.path == forced and retriever.index_precision == forced
    assert timer.calls == 0


@pytest.mark.parametrize("via_env", [True, False])
def test_a_bad_path_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, via_env: bool) -> None:
    if via_env:
        monkeypatch.setenv(retrieval.PATH_ENV, "fast")
    with pytest.raises(ConfigError, match=r"must be one of auto, int8, float32, got 'fast'") as err:
        Retriever() if via_env else Retriever("fast")
    assert (retrieval.PATH_ENV in str(err.value)) is via_env


def test_a_bad_env_path_fails_when_the_bank_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(retrieval.PATH_ENV, "gpu")
    with pytest.raises(ConfigError, match=retrieval.PATH_ENV):
        QuestionBank.in_memory(HashingEmbedder(dimension=DIM))


def test_with_precision_shares_the_rows_and_answers_the_same() -> None:
    matrix = _snapshot().matrix
    fresh = VectorIndex(matrix, precision="int8")
    shared = VectorIndex(matrix, precision="float32").with_precision("int8")
    back = shared.with_precision("float32")
    assert (shared.precision, back.precision) == ("int8", "float32")
    assert back.nbytes == matrix.nbytes < shared.nbytes == fresh.nbytes
    for seed in range(3):
        q = _query(_snapshot(), seed)
        want = fresh.support(q, 40, 0.9)
        for index in (shared, back):
            got = index.support(q, 40, 0.9)
            assert np.array_equal(got.indices, want.indices)
            assert np.array_equal(got.similarities, want.similarities)
    with pytest.raises(ValueError, match="precision"):
        fresh.with_precision("int4")  # type: ignore[arg-type]

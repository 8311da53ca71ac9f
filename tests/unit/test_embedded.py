"""The embedded default: the committed matrix, the default bank built from it, the local pool
file, and the CLI's defaults (the hashing embedder stands in for MiniLM; no model starts)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

import smcs_graph.embedded.default as embedded
from smcs_graph.bank.importer import read_matrix
from smcs_graph.bank.store import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.embedded.default_bank import default_bank_records, default_split
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.errors import ConfigError, EmbedderMismatchError
from smcs_graph.models.local import LOCAL_MODELS
from smcs_graph.models.pool import load_config_file
from smcs_graph.questions import load_records

EMBEDDER = HashingEmbedder(64)


@pytest.fixture(scope="module")
def questions_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default bank's questions extracted once for the module (from installed packages)."""
    folder = tmp_path_factory.mktemp("default-bank")
    default_bank_records(folder)
    return folder


def test_committed_matrix_covers_the_bank_split_with_every_local_model() -> None:
    matrix = read_matrix(embedded.MATRIX_FILE)
    bank_records, test_records = default_split(default_bank_records())
    assert matrix.models == embedded.local_model_names()
    assert set(matrix.models) <= set(LOCAL_MODELS)
    assert matrix.ids == sorted(matrix.ids)
    assert set(matrix.ids) == {r.id for r in bank_records}
    assert not set(matrix.ids) & {r.id for r in test_records}
    for model in matrix.models:
        measured = matrix.results[model]
        assert len(measured) >= 0.9 * len(matrix.ids), f"{model}: most questions measured"
        assert 0 < sum(measured.values()) < len(measured), f"{model}: neither all right nor wrong"


def test_local_pool_file_and_settings() -> None:
    raw = load_config_file(embedded.LOCAL_POOL_FILE)
    assert all(entry["local"] is True for entry in raw["models"])
    config = embedded.local_config()
    assert config.k <= len(raw["models"])  # K capped at the pool size
    assert config.n_aggregations < SMCSConfig().n_aggregations
    assert config.max_tokens < SMCSConfig().max_tokens
    # Each fusion of the aggregation map gets its own one-thread server of the aggregator.
    entries = {entry["name"]: entry for entry in raw["models"]}
    assert config.aggregator in entries
    assert entries[config.aggregator].get("replicas", 1) >= config.n_aggregations
    assert all(entry.get("threads", 1) == 1 for entry in raw["models"])
    assert embedded.local_config(k=2).k == 2
    with pytest.raises(ConfigError, match="unknown SMCS setting"):
        embedded.local_config(bogus=1)


def test_default_bank_is_built_once_then_reopened(
    questions_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False)
    matrix = read_matrix(embedded.MATRIX_FILE)
    assert len(bank) == len(matrix.ids)
    assert bank.coverage() == {m: len(matrix.results[m]) for m in matrix.models}
    folder = Path(bank.where)
    assert folder.parent == questions_cache
    test = load_records(folder.with_name(f"{folder.name}.test.jsonl"))
    assert test and not {r.id for r in test} & set(bank.question_ids())
    bank.close()

    def no_import(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete default bank must be reopened, not imported again")

    monkeypatch.setattr("smcs_graph.bank.importer.import_matrix", no_import)
    again = embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False)
    assert len(again) == len(matrix.ids)
    again.close()


def test_interrupted_build_is_finished_by_the_next_call(questions_cache: Path) -> None:
    bank = embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False)
    folder = Path(bank.where)
    bank._set_complete(False)  # as if the process died while importing
    bank.close()
    with pytest.raises(Exception, match="incomplete"):
        QuestionBank.open(folder, EMBEDDER, create=False)
    rebuilt = embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False)
    assert rebuilt.complete and len(rebuilt) == len(read_matrix(embedded.MATRIX_FILE).ids)
    rebuilt.close()


def test_another_embedder_is_refused_with_a_clear_error(questions_cache: Path) -> None:
    embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False).close()
    with pytest.raises(EmbedderMismatchError, match="was built with embedder"):
        embedded.open_default_bank(questions_cache, embedder=HashingEmbedder(32), progress=False)


def test_a_matrix_that_disagrees_with_the_questions_is_an_error(
    questions_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "matrix.csv"
    bad.write_text("question_id,m\nnot/a/bank/question,1\n", encoding="utf-8")
    monkeypatch.setattr(embedded, "MATRIX_FILE", bad)
    with pytest.raises(ConfigError, match="not in the default bank"):
        embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False)
    monkeypatch.setattr(embedded, "MATRIX_FILE", tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="missing from the installed package"):
        embedded.default_bank_path(questions_cache)


def test_export_matrix_round_trips_with_masked_cells(tmp_path: Path) -> None:
    from smcs_graph.bank.store import BankQuestion

    bank = QuestionBank.in_memory(EMBEDDER)
    bank.add_questions(
        [BankQuestion(id=f"q{i}", question=f"question {i}", family="math") for i in range(3)]
    )
    bank.record_results("a", {"q0": True, "q1": False, "q2": True})
    bank.record_results("b", {"q1": True})
    path = tmp_path / "m.csv"
    text = embedded.export_matrix(bank, ["a", "b"], path)
    assert text == "question_id,a,b\nq0,1,\nq1,0,1\nq2,1,\n"
    matrix = read_matrix(path)
    assert matrix.results == {"a": {"q0": True, "q1": False, "q2": True}, "b": {"q1": True}}
    assert matrix.masked == 2


def _smcs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smcs_graph", *args], capture_output=True, text=True, timeout=120
    )


def test_ask_with_a_pool_but_no_bank_says_why_a_bank_is_needed(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text("models:\n  - name: m\n    base_url: http://127.0.0.1:9/v1\n")
    done = _smcs("ask", "What is 2 + 2?", "--pool", str(pool), "--quiet")
    assert done.returncode == 2
    assert "--bank is required with --pool" in done.stderr


def test_cli_help_names_the_embedded_defaults() -> None:
    for command in ("ask", "serve", "eval"):
        done = _smcs(command, "--help")
        assert done.returncode == 0
        assert "default: the embedded local pool" in " ".join(done.stdout.split())


def test_test_split_is_written_in_stratified_order(questions_cache: Path) -> None:
    bank = embedded.open_default_bank(questions_cache, embedder=EMBEDDER, progress=False)
    folder = Path(bank.where)
    bank.close()
    test = load_records(folder.with_name(f"{folder.name}.test.jsonl"))
    _, expected = default_split(default_bank_records(questions_cache))
    assert sorted(r.id for r in test) == sorted(r.id for r in expected)
    families = {r.family for r in test}
    first = test[: 2 * len(families)]
    assert {r.family for r in first} == families  # a short --limit still spans every family
    for family in families:
        share = sum(r.family == family for r in test) / len(test)
        prefix = sum(r.family == family for r in test[:40]) / 40
        assert abs(prefix - share) <= 0.05


def test_the_committed_matrix_was_measured_with_the_local_pool_files_settings() -> None:
    # The bank must measure what the graph runs: per family, the settings recorded with the
    # committed matrix (prompt, token limit, answer recovery, greedy decoding) are those that
    # profiling derives from data/local_pool.yaml today.
    from smcs_graph.offline.profiling import COMPARED

    record = embedded.read_matrix_settings()
    digest = hashlib.sha256(embedded.MATRIX_FILE.read_bytes()).hexdigest()
    assert record["matrix_sha256"] == digest, (
        f"{embedded.MATRIX_SETTINGS_FILE.name} describes another matrix than "
        f"{embedded.MATRIX_FILE.name}: run make default-matrix"
    )
    bank_records, _ = default_split(default_bank_records())
    runtime = embedded.profile_settings()
    differences = []
    for family in sorted({r.family for r in bank_records}):
        recorded = record["families"].get(family)
        if recorded is None:
            differences.append(f"{family}: no recorded settings")
            continue
        now = runtime.record(family)
        differences += [
            f"{family}: {key} recorded {recorded.get(key)!r}, local pool file {now[key]!r}"
            for key in COMPARED
            if recorded.get(key) != now[key]
        ]
    assert not differences, (
        "the committed matrix was measured with other settings than the local pool file's; "
        "run make default-matrix: " + "; ".join(differences)
    )

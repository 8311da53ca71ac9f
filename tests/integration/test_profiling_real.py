"""Profiling the real local pool over HTTP on a small bank of several families (MiniLM, Chroma)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smcs_graph import BankQuestion, Pool, QuestionBank
from smcs_graph.embedder import default_embedder
from smcs_graph.grading import grade
from smcs_graph.offline.cache import ResponseCache
from smcs_graph.offline.profiling import GenerationSettings, profile_pool, question_key
from smcs_graph.questions import QuestionRecord, load_benchmark, load_humaneval, prompt_for

pytestmark = pytest.mark.integration

BENCHMARKS = Path(
    os.environ.get(
        "SMCS_BENCHMARKS_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"
    )
)
MAX_TOKENS = 40

HAND_MADE = [
    QuestionRecord(
        id="hand/mc-1",
        family="multiple_choice",
        question="Which planet is closest to the Sun?",
        choices=("Venus", "Mercury", "Mars", "Earth"),
        answer="B",
        source="hand",
    ),
    QuestionRecord(
        id="hand/mc-2",
        family="multiple_choice",
        question="What is the chemical symbol for water?",
        choices=("H2O", "CO2", "NaCl", "O2"),
        answer="A",
        source="hand",
    ),
    QuestionRecord(
        id="hand/num-1",
        family="numeric",
        question="A box holds 6 eggs. How many eggs are in 4 boxes?",
        answer="24",
        source="hand",
    ),
    QuestionRecord(
        id="hand/num-2",
        family="numeric",
        question="Sam had 10 marbles and lost 3. How many marbles does Sam have?",
        answer="7",
        source="hand",
    ),
]


def small_bank_records() -> list[QuestionRecord]:
    """4 HumanEval problems plus a few shared benchmark questions (hand-made ones if absent):
    three families, two sources of multiple choice; each question is two model calls."""
    records = load_humaneval(limit=4)
    shared = [("mmlu_pro.jsonl", 2), ("gsm8k_test.jsonl", 2), ("arc_challenge.json", 2)]
    if all((BENCHMARKS / name).is_file() for name, _ in shared):
        for name, limit in shared:
            records += load_benchmark(BENCHMARKS / name, limit=limit)
    else:
        records += HAND_MADE
    return records


def test_the_local_pool_profiles_a_small_bank_over_http(
    local_servers: dict[str, str], tmp_path: Path
) -> None:
    records = small_bank_records()
    assert len({r.family for r in records}) >= 3
    bank = QuestionBank.open(tmp_path / "bank", default_embedder())
    bank.add_questions([BankQuestion.from_record(r) for r in records])
    # `local: true` entries reach the session's servers (the fixture started them).
    pool = Pool.from_config({"models": [{"name": name, "local": True} for name in local_servers]})
    # Two calls in flight per model: the next prompt waits at the server, not in the client.
    report = profile_pool(bank, pool, max_tokens=MAX_TOKENS, concurrency=2, progress=False)
    print(report.summary())
    assert report.failed == [] and report.skipped == {}
    names = list(local_servers)
    ids = [r.id for r in records]
    matrix, measured = bank.capability(names, ids)
    assert measured.all()
    for name in names:
        tally = report.models[name]
        assert tally.calls == len(records) and tally.recorded == len(records)
        assert tally.input_tokens > 0 and 0 < tally.output_tokens <= MAX_TOKENS * len(records)

    # Each recorded result is the grader's verdict on the response saved in the cache.
    assert report.cache_path is not None
    with ResponseCache(report.cache_path) as cache:
        assert len(cache) == len(names) * len(records)
        settings = GenerationSettings(max_tokens=MAX_TOKENS)
        for row, name in enumerate(names):
            for col, record in enumerate(records):
                key = question_key(name, record.id, record.question, prompt_for(record), settings)
                saved = cache.get(key)
                assert saved is not None and saved.text.strip()
                assert grade(record, saved.text).correct == bool(matrix[row, col])

    again = profile_pool(bank, pool, max_tokens=MAX_TOKENS, progress=False)
    assert all(t.pending == 0 and t.calls == 0 for t in again.models.values())

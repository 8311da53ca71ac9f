"""Feedback grows the bank: run ids, the run store, outcomes, idempotency, errors, the server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from smcs_graph import QuestionBank, SMCSChatModel, SMCSConfig
from smcs_graph.feedback import (
    FeedbackError,
    RunRecord,
    RunStore,
    apply_feedback,
    apply_pending,
    run_store,
)
from smcs_graph.server import ServerSettings, create_app

FAST = SMCSConfig(k=3, n_aggregations=2, n_sup_base=4, seed=1)
NEW = "What is 40 plus 2?"
MODELS = ["histo", "mathy", "weak"]


@pytest.fixture
def store() -> RunStore:
    return RunStore(None)


@pytest.fixture
def model(pool, bank, embedder, store) -> SMCSChatModel:
    return SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST, runs=store)


def _run(model: SMCSChatModel, question: str = NEW, **kwargs: Any) -> str:
    return str(model.invoke(question, **kwargs).response_metadata["smcs_trace"]["run_id"])


def _cells(bank: QuestionBank, qid: str) -> dict[str, bool]:
    """The measured cells of question `qid`: {model: correct}."""
    cap, measured = bank.capability(MODELS, [qid])
    return {m: bool(cap[i, 0]) for i, m in enumerate(MODELS) if measured[i, 0]}


def test_every_run_is_kept_under_its_id_with_the_embedding_it_computed(model, store, embedder):
    run_id = _run(model)
    run = store.get(run_id)
    assert run is not None and run.question == NEW and run.bank == model.bank.name
    np.testing.assert_allclose(run.embedding, embedder.embed([NEW])[0], rtol=1e-6)
    assert run.references == {
        "mathy": "The answer is 42.",
        "histo": "It began in 1789.",
        "weak": "I do not know.",
    }
    trace = store.get(run_id)
    assert trace is not None and len(trace.producers) == 1
    assert _run(model) != run_id  # a new id every run


def test_gold_adds_the_question_and_exactly_the_graded_cells(model, bank, store):
    size = len(bank)
    run_id = _run(model)
    result = model.feedback(run_id, gold="42", family="numeric")
    assert result.status == "applied" and result.new_question
    assert result.cells == {"mathy": True, "histo": False, "weak": False}
    assert len(bank) == size + 1
    assert _cells(bank, result.question_id) == result.cells
    stored = bank.get([result.question_id])[0]
    assert stored.question == NEW and stored.family == "numeric" and stored.answer == "42"
    # The bank holds the run's own embedding: the question retrieves itself first.
    run = store.get(run_id)
    assert run is not None
    support = bank.support(run.embedding, MODELS, n_sup_base=1, gamma=0.0)
    assert support.question_ids[0] == result.question_id


def test_a_verdict_on_the_final_answer_sets_only_its_producers_cells(model, bank, store):
    run_id = _run(model)
    run = store.get(run_id)
    assert run is not None
    result = model.feedback(run_id, correct=False)
    assert result.cells == dict.fromkeys(run.producers, False)
    assert _cells(bank, result.question_id) == result.cells  # the others stay unmeasured


def test_verdicts_per_reference_set_exactly_those_cells(model, bank):
    result = model.feedback(_run(model), verdicts={"histo": True})
    assert _cells(bank, result.question_id) == {"histo": True}


def test_a_repeat_changes_nothing_and_a_different_outcome_conflicts(model, bank, monkeypatch):
    run_id = _run(model)
    first = model.feedback(run_id, gold="42", family="numeric")
    writes: list[Any] = []
    monkeypatch.setattr(bank, "record_many", lambda *a, **k: writes.append(a))
    monkeypatch.setattr(bank, "add_questions", lambda *a, **k: writes.append(a))
    again = model.feedback(run_id, gold="42", family="numeric")
    assert again.status == "already applied" and again.cells == first.cells and not writes
    with pytest.raises(FeedbackError, match="already has different feedback") as err:
        model.feedback(run_id, gold="43", family="numeric")
    assert err.value.status == 409 and not writes


async def test_async_feedback(model, bank):
    result = await model.afeedback(_run(model), verdicts={"weak": False})
    assert _cells(bank, result.question_id) == {"weak": False}


def test_a_question_already_in_the_bank_gains_only_new_cells(model, bank):
    size = len(bank)
    result = model.feedback(_run(model, "What is 12 plus 30?"), gold="42", family="numeric")
    assert result.question_id == "m0" and not result.new_question
    assert result.cells == {} and set(result.kept) == set(MODELS)
    assert len(bank) == size and _cells(bank, "m0") == {
        "mathy": True,
        "histo": False,
        "weak": False,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one outcome"),
        ({"gold": "42", "correct": True}, "exactly one outcome"),
        ({"correct": "yes"}, "true or false"),
        ({"verdicts": {"nobody": True}}, "gave no reference"),
        ({"verdicts": {"mathy": 1}}, "true/false"),
        ({"gold": "42"}, "send 'family'"),
        ({"gold": "42", "family": "astrology"}, "no grader"),
        ({"gold": {"answr": "42"}, "family": "numeric"}, "unknown field"),
        ({"gold": "B", "family": "multiple_choice"}, "choices"),
    ],
)
def test_malformed_feedback_is_a_clear_400(model, bank, kwargs, message):
    size = len(bank)
    with pytest.raises(FeedbackError, match=message) as err:
        model.feedback(_run(model), **kwargs)
    assert err.value.status == 400 and len(bank) == size


def test_an_unknown_run_is_a_404(model):
    with pytest.raises(FeedbackError, match="unknown run id") as err:
        model.feedback("no-such-run", correct=True)
    assert err.value.status == 404


def test_a_read_only_bank_is_refused_and_the_recorded_outcome_is_written_later(
    model, bank, store, monkeypatch
):
    run_id = _run(model)
    size = len(bank)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("attempt to write a readonly database")

    monkeypatch.setattr(bank.collection, "upsert", refuse)
    with pytest.raises(FeedbackError, match="read-only") as err:
        model.feedback(run_id, gold="42", family="numeric")
    assert err.value.status == 403 and len(bank) == size
    assert [o.run_id for o in store.pending()] == [run_id]
    monkeypatch.undo()
    assert apply_pending(bank, store) == 1 and apply_pending(bank, store) == 0
    assert len(bank) == size + 1


def test_a_read_only_bank_folder_is_refused_before_anything_is_recorded(
    tmp_path, embedder, pool, monkeypatch
):
    bank = QuestionBank.open(tmp_path / "bank", embedder)
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)
    run_id = _run(model)
    store = run_store(bank)
    assert store is not None and store.path == tmp_path / "bank.runs.sqlite"
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(FeedbackError, match="read-only") as err:
        model.feedback(run_id, correct=True)
    assert err.value.status == 403 and store.pending() == []


def test_an_in_memory_bank_keeps_no_runs_unless_given_a_store(pool, bank, embedder):
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)
    run_id = _run(model)  # the trace still has an id
    with pytest.raises(FeedbackError, match="keeps no runs") as err:
        model.feedback(run_id, correct=True)
    assert err.value.status == 404


def test_a_crash_between_recording_and_writing_loses_nothing(model, bank, store, monkeypatch):
    run_id = _run(model)
    size = len(bank)
    monkeypatch.setattr("smcs_graph.feedback.apply._write", _crash)
    with pytest.raises(KeyboardInterrupt):
        model.feedback(run_id, verdicts={"mathy": True})
    monkeypatch.undo()
    assert len(bank) == size and len(store.pending()) == 1
    # The next start (or a repeat of the same feedback) writes it, once.
    assert apply_pending(bank, store) == 1
    assert model.feedback(run_id, verdicts={"mathy": True}).status == "already applied"
    assert len(bank) == size + 1


def _crash(*args: Any) -> None:
    raise KeyboardInterrupt


def _record(run_id: str, bank: str = "b") -> RunRecord:
    return RunRecord(run_id, bank, f"question {run_id}", [1.0, 0.0], {"m": "x"}, "x", ["m"])


def test_the_store_is_bounded_oldest_first(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite", max_runs=3)
    for i in range(5):
        store.add(_record(f"r{i}"))
    assert len(store) == 3
    assert store.get("r0") is None and store.get("r1") is None and store.get("r4") is not None


def test_concurrent_writers_on_one_file_lose_nothing(tmp_path):
    path = tmp_path / "runs.sqlite"
    stores = [RunStore(path), RunStore(path)]  # as two server workers would

    def write(worker: int) -> None:
        for i in range(25):
            stores[worker % 2].add(_record(f"w{worker}-{i}"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(RunStore(path)) == 100


def test_concurrent_feedback_on_one_run_is_applied_once(model, bank):
    run_id = _run(model)
    statuses: list[str] = []
    calls: list[Any] = []
    real = bank.record_many

    def counting(results: Any) -> None:
        calls.append(results)
        real(results)

    bank.record_many = counting  # type: ignore[method-assign]

    def send() -> None:
        statuses.append(model.feedback(run_id, verdicts={"mathy": True}).status)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count("applied") == 1 and statuses.count("already applied") == 5
    assert len(calls) == 1


def test_concurrent_feedback_on_many_runs_adds_every_question(model, bank):
    questions = [f"What is {i} plus {i}?" for i in range(6)]
    run_ids = [_run(model, q) for q in questions]
    size = len(bank)
    threads = [
        threading.Thread(target=model.feedback, args=(r,), kwargs={"verdicts": {"weak": False}})
        for r in run_ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bank) == size + len(questions)


# ---------------------------------------------------------------------- the server


@pytest.fixture
def client(model) -> Any:
    app = create_app(model, ServerSettings(api_key="k"))
    with TestClient(app) as client:
        yield client


AUTH = {"Authorization": "Bearer k"}


def _ask(client: TestClient, question: str = NEW) -> str:
    reply = client.post(
        "/v1/chat/completions",
        json={"model": "smcs", "messages": [{"role": "user", "content": question}]},
        headers=AUTH,
    )
    assert reply.status_code == 200
    return str(reply.json()["smcs_run_id"])


def test_post_feedback_adds_the_cells_and_says_which(client, bank):
    run_id = _ask(client)
    body = {"run_id": run_id, "gold": "42", "family": "numeric"}
    reply = client.post("/v1/feedback", json=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["status"] == "applied" and data["run_id"] == run_id
    assert data["cells"] == {"mathy": True, "histo": False, "weak": False}
    assert _cells(bank, data["question_id"]) == data["cells"]
    again = client.post("/v1/feedback", json=body, headers=AUTH).json()
    assert again["status"] == "already applied" and again["cells"] == data["cells"]
    conflict = client.post("/v1/feedback", json={**body, "gold": "7"}, headers=AUTH)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "conflicting_feedback"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"run_id": "nope", "correct": True}, 404, "unknown_run"),
        ({"correct": True}, 400, "invalid_value"),
        ({"run_id": "nope", "correct": True, "extra": 1}, 400, "unknown_parameter"),
        ([1, 2], 400, "invalid_value"),
    ],
)
def test_post_feedback_errors(client, body, status, code):
    reply = client.post("/v1/feedback", json=body, headers=AUTH)
    assert reply.status_code == status and reply.json()["error"]["code"] == code


def test_post_feedback_needs_the_key(client):
    reply = client.post("/v1/feedback", json={"run_id": "x", "correct": True})
    assert reply.status_code == 401


def test_the_server_writes_recorded_feedback_at_startup(model, bank, store):
    run_id = _run(model)
    run = store.get(run_id)
    assert run is not None
    plan = {
        "bank": bank.name,
        "question": {
            "id": "feedback-x",
            "question": run.question,
            "family": "general",
            "category": "",
            "answer": None,
            "record": None,
        },
        "embedding": run.embedding,
        "new_question": True,
        "cells": {"weak": True},
        "kept": {},
    }
    store.record(run_id, {"family": None, "correct": True}, plan)
    with TestClient(create_app(model, ServerSettings())):
        pass
    assert _cells(bank, "feedback-x") == {"weak": True} and store.pending() == []


def test_the_path_of_the_store_beside_a_bank(tmp_path: Path, embedder) -> None:
    bank = QuestionBank.open(tmp_path / "b", embedder)
    store = run_store(bank)
    assert store is not None and store.path == tmp_path / "b.runs.sqlite"
    assert run_store(bank, False) is None
    assert run_store(QuestionBank.in_memory(embedder)) is None


def test_the_graph_keeps_runs_and_apply_feedback_takes_their_outcome(pool, bank, embedder):
    from smcs_graph import build_graph
    from smcs_graph.graph import runnable_config

    store = RunStore(None)
    graph = build_graph(pool, bank, embedder, FAST, runs=store).compile()
    output = graph.invoke(
        {"messages": [("user", NEW)]},
        {**runnable_config(FAST), "metadata": {"smcs_family": "numeric"}},
    )
    run_id = output["trace"]["run_id"]
    run = store.get(run_id)
    assert run is not None and run.family == "numeric"  # from the run config's metadata
    result = apply_feedback(bank, run_id, gold="42", runs=store)  # no family needed now
    assert _cells(bank, result.question_id) == {"mathy": True, "histo": False, "weak": False}

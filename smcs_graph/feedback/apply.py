"""Applying feedback on a run to the bank: which cells an outcome sets, and the write-ahead write.

Outcomes (exactly one per feedback):

- `gold`: the right answer (a string, or a mapping of the grading fields `answer`, `choices`,
  `tests`, `entry_point`, `constraints` of a question record). Each reference is graded by the
  family's grader: one cell per referencer. The family comes from the feedback or the run.
- `correct`: a verdict on the final answer. It sets the cells of the run's `producers`: the
  model whose own answer was returned (a gate answered alone, a fallback, or a reference that
  won as a candidate) or, for a fusion, the aggregator that wrote it. The referencers whose
  answers were fused are not judged by it.
- `verdicts`: {model: true/false} for some of the run's referencers: exactly those cells.

The bank gains the question with the embedding the run computed (id `feedback-<hash of the
text>`), and exactly the judged cells; every other cell stays unmeasured. A question whose text
is already in the bank keeps its id and record, and gains only the cells not measured there yet
(measured ones are kept and reported as such).

Write-ahead: the outcome and its planned write are committed to the run store first, then
written to the bank, then marked applied. `apply_pending` redoes recorded but unapplied writes
(the server calls it at startup), and re-writing is harmless: the planned cells are values,
not increments. The same feedback again answers "already applied"; a different one for the
same run is a conflict.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smcs_graph.bank import BankQuestion, QuestionBank
from smcs_graph.errors import BankError
from smcs_graph.feedback.runs import Outcome, RunRecord, RunStore, runs_path, shared_store

__all__ = ["FeedbackError", "FeedbackResult", "apply_feedback", "apply_pending", "run_store"]

log = logging.getLogger(__name__)

PAUSE_ENV = "SMCS_TEST_FEEDBACK_PAUSE_S"
"""Test hook: seconds to sleep between recording an outcome and writing it to the bank."""
GOLD_FIELDS = ("answer", "choices", "tests", "entry_point", "constraints")
"""Grading fields a `gold` mapping may give (those of a question record)."""
SOURCE = "feedback"
"""The `source` of bank questions added by feedback."""
_SAME_TEXT = 0.9999  # cosine above which a bank question may be the run's own (texts compared)


class FeedbackError(ValueError):
    """Feedback that cannot be applied; `status` is its HTTP status, `code` a short name."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_feedback"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class FeedbackResult:
    """What one feedback did to the bank."""

    run_id: str
    status: str
    """"applied", or "already applied" (a repeat: nothing changed)."""
    question_id: str
    new_question: bool
    """Whether the question was new to the bank."""
    cells: dict[str, bool]
    """The capability cells set for the question: {model: correct}."""
    kept: dict[str, str] = field(default_factory=dict)
    """Models judged but not written, and why (e.g. already measured on this question)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "question_id": self.question_id,
            "new_question": self.new_question,
            "cells": dict(self.cells),
            "kept": dict(self.kept),
        }


def run_store(
    bank: QuestionBank, runs: RunStore | str | Path | bool | None = True
) -> RunStore | None:
    """The run store for `bank`: `runs` itself, a file path, or True for the one beside an
    on-disk bank (`<bank folder>.runs.sqlite`; None for an in-memory or server bank); False or
    None: none."""
    if isinstance(runs, RunStore):
        return runs
    if runs is None or runs is False:
        return None
    if runs is True:
        where = Path(bank.where)
        if bank.where == "memory" or "://" in bank.where or not where.is_absolute():
            return None
        return shared_store(runs_path(bank.where))
    return shared_store(runs)


def apply_feedback(
    bank: QuestionBank,
    run_id: str,
    *,
    gold: str | Mapping[str, Any] | None = None,
    correct: bool | None = None,
    verdicts: Mapping[str, bool] | None = None,
    family: str | None = None,
    runs: RunStore | str | Path | bool | None = True,
) -> FeedbackResult:
    """Apply one outcome for the run `run_id` to `bank` (see the module for what each sets).

    `family` names the grader for `gold` when the run did not record one. `runs`: where the
    run was kept (default: beside the bank). FeedbackError: malformed feedback (400), unknown
    or evicted run (404), a different feedback for the same run (409), a bank that cannot be
    written (403).
    """
    request = _request(run_id, gold, correct, verdicts, family)
    store = run_store(bank, runs)
    if store is None:
        raise FeedbackError(
            f"bank {bank.name!r} ({bank.where}) keeps no runs: pass runs= (a path or a "
            "RunStore) to the graph or model that answered, and the same one here",
            status=404,
            code="no_run_store",
        )
    existing = store.outcome(run_id)
    if existing is not None:
        return _repeat(bank, store, existing, request)
    run = store.get(run_id)
    if run is None:
        raise FeedbackError(
            f"unknown run id {run_id!r}: no run with this id is kept in {store.path or 'memory'} "
            f"(it never ran here, or it was evicted: the store keeps the last {store.max_runs})",
            status=404,
            code="unknown_run",
        )
    if run.bank != bank.name:
        raise FeedbackError(
            f"run {run_id!r} was answered over bank {run.bank!r}, not {bank.name!r}: give "
            "feedback to the bank the run read",
            code="wrong_bank",
        )
    _check_writable(bank)
    plan = _plan(bank, run, request)
    outcome, new = store.record(run_id, request, plan)
    if not new:  # another writer recorded this run's outcome first
        return _repeat(bank, store, outcome, request)
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        log.warning("feedback for run %s recorded; pausing %s s (%s)", run_id, pause, PAUSE_ENV)
        time.sleep(float(pause))
    _write(bank, store, outcome)
    return _result(outcome, "applied")


def apply_pending(bank: QuestionBank, runs: RunStore | str | Path | bool | None = True) -> int:
    """Write every recorded but unapplied outcome of `bank`'s run store (after a crash);
    returns how many were written."""
    store = run_store(bank, runs)
    if store is None:
        return 0
    done = 0
    for outcome in store.pending():
        if outcome.plan.get("bank") != bank.name:
            continue
        _write(bank, store, outcome)
        done += 1
    if done:
        log.info("feedback: wrote %d recorded outcome(s) to bank %s", done, bank.name)
    return done


# ---------------------------------------------------------------------- requests


def _request(run_id: Any, gold: Any, correct: Any, verdicts: Any, family: Any) -> dict[str, Any]:
    """The feedback as a canonical JSON object (what a repeat is compared by)."""
    if not isinstance(run_id, str) or not run_id.strip():
        raise FeedbackError(f"run_id must be a run's id (a non-empty string), got {run_id!r}")
    given = [
        name
        for name, v in (("gold", gold), ("correct", correct), ("verdicts", verdicts))
        if v is not None
    ]
    if len(given) != 1:
        raise FeedbackError(
            "give exactly one outcome: 'gold' (the right answer), 'correct' (true/false on the "
            f"final answer) or 'verdicts' ({{model: true/false}}); got {given or 'none'}"
        )
    if family is not None and (not isinstance(family, str) or not family.strip()):
        raise FeedbackError(f"family must be a non-empty string, got {family!r}")
    request: dict[str, Any] = {"family": family}
    if gold is not None:
        request["gold"] = _gold(gold)
    elif correct is not None:
        if not isinstance(correct, bool):
            raise FeedbackError(f"correct must be true or false, got {correct!r}")
        request["correct"] = correct
    else:
        if not isinstance(verdicts, Mapping) or not verdicts:
            raise FeedbackError(
                f"verdicts must be a non-empty mapping {{model: true/false}}, got {verdicts!r}"
            )
        bad = {
            k: v for k, v in verdicts.items() if not isinstance(k, str) or not isinstance(v, bool)
        }
        if bad:
            raise FeedbackError(f"verdicts map model names to true/false; not: {bad!r}")
        request["verdicts"] = dict(sorted(verdicts.items()))
    return request


def _gold(gold: Any) -> dict[str, Any]:
    if isinstance(gold, str):
        if not gold.strip():
            raise FeedbackError("gold must be the right answer, got an empty string")
        return {"answer": gold}
    if not isinstance(gold, Mapping):
        raise FeedbackError(
            f"gold must be the answer (a string) or an object with {', '.join(GOLD_FIELDS)}; "
            f"got {type(gold).__name__}"
        )
    unknown = sorted(set(gold) - set(GOLD_FIELDS))
    if unknown:
        raise FeedbackError(
            f"gold has unknown field(s) {unknown}; allowed: {', '.join(GOLD_FIELDS)}"
        )
    return {k: gold[k] for k in GOLD_FIELDS if gold.get(k) is not None}


# ---------------------------------------------------------------------- plans


def _plan(bank: QuestionBank, run: RunRecord, request: Mapping[str, Any]) -> dict[str, Any]:
    """The bank write an outcome makes: the question, whether it is new, the cells."""
    family = request.get("family") or run.family
    existing = _same_question(bank, run)
    qid = existing or "feedback-" + hashlib.sha256(run.question.encode()).hexdigest()[:20]
    record: dict[str, Any] | None = None
    if "gold" in request:
        record = _gold_record(qid, run, family, request["gold"])
        cells = _graded(run, record)
    elif "correct" in request:
        cells = {model: request["correct"] for model in run.producers}
    else:
        unknown = sorted(set(request["verdicts"]) - set(run.references))
        if unknown:
            raise FeedbackError(
                f"verdicts name model(s) {unknown} that gave no reference in run {run.run_id!r}; "
                f"its referencers: {', '.join(run.references) or 'none'}"
            )
        cells = dict(request["verdicts"])
    kept: dict[str, str] = {}
    if existing is not None:
        measured = _measured(bank, existing, list(cells))
        kept = {m: "already measured on this bank question" for m in cells if m in measured}
        cells = {m: v for m, v in cells.items() if m not in measured}
    question = {
        "id": qid,
        "question": run.question,
        "family": family or "general",
        "category": run.category,
        "answer": None if record is None else record.get("answer"),
        "record": record,
    }
    return {
        "bank": bank.name,
        "question": question,
        "embedding": run.embedding,
        "new_question": existing is None,
        "cells": cells,
        "kept": kept,
    }


def _gold_record(
    qid: str, run: RunRecord, family: str | None, gold: Mapping[str, Any]
) -> dict[str, Any]:
    from smcs_graph.grading import get_grader
    from smcs_graph.questions import QuestionRecord
    from smcs_graph.questions.records import QuestionFormatError

    if family is None:
        raise FeedbackError(
            f"run {run.run_id!r} has no known family, so its gold answer cannot be graded: "
            "send 'family' (e.g. 'math', 'multiple_choice', 'numeric') with the feedback"
        )
    try:
        get_grader(family)
    except KeyError as exc:
        raise FeedbackError(str(exc.args[0]), code="unknown_family") from exc
    try:
        record = QuestionRecord.from_json(
            {
                "id": qid,
                "family": family,
                "question": run.question,
                "category": run.category,
                "source": SOURCE,
                **gold,
            }
        )
    except (QuestionFormatError, ValueError, TypeError) as exc:
        raise FeedbackError(f"gold cannot be graded as a {family!r} question: {exc}") from exc
    return record.to_json()


def _graded(run: RunRecord, record: Mapping[str, Any]) -> dict[str, bool]:
    from smcs_graph.grading import grade
    from smcs_graph.questions import QuestionRecord

    question = QuestionRecord.from_json(record)
    cells: dict[str, bool] = {}
    for model, text in run.references.items():
        try:
            cells[model] = bool(grade(question, text).correct)
        except (ValueError, TypeError) as exc:
            raise FeedbackError(
                f"grading {model!r}'s reference against the gold answer failed: {exc}"
            ) from exc
    return cells


def _same_question(bank: QuestionBank, run: RunRecord) -> str | None:
    """The id of the bank question with the run's exact text, if there is one."""
    snap = bank._snap()  # the in-process snapshot: texts and unit embeddings
    if not snap.ids:
        return None
    query = np.asarray(run.embedding, dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-12)
    for row in np.flatnonzero(snap.matrix @ query >= _SAME_TEXT):
        if snap.texts[int(row)] == run.question:
            return snap.ids[int(row)]
    return None


def _measured(bank: QuestionBank, qid: str, models: list[str]) -> set[str]:
    if not models:
        return set()
    _, measured = bank.capability(models, [qid])
    return {m for m, row in zip(models, measured, strict=True) if row[0]}


# ---------------------------------------------------------------------- writing


def _check_writable(bank: QuestionBank) -> None:
    folder = Path(bank.where)
    if not folder.is_dir():
        return  # memory or a server: a refused write is caught in _write
    files = [folder, folder / "chroma.sqlite3"]
    if not all(os.access(f, os.W_OK) for f in files if f.exists()):
        raise _read_only(bank, "its folder is not writable by this process")


def _read_only(bank: QuestionBank, why: str) -> FeedbackError:
    return FeedbackError(
        f"bank {bank.name!r} at {bank.where} is read-only ({why}): feedback writes questions "
        "and results to it; serve a writable copy of the bank to collect feedback",
        status=403,
        code="bank_read_only",
    )


def _write(bank: QuestionBank, store: RunStore, outcome: Outcome) -> None:
    """Write a recorded outcome's plan to the bank (idempotent), then mark it applied.

    Writers of one run in this process take turns, and a later one finds it applied; writers
    in other processes may both write, which sets the same values again."""
    with _run_lock(outcome.run_id):
        current = store.outcome(outcome.run_id)
        if current is not None and current.applied:
            return
        _write_plan(bank, store, outcome)


def _run_lock(run_id: str) -> threading.Lock:
    with _locks_lock:
        return _locks.setdefault(run_id, threading.Lock())


_locks: weakref.WeakValueDictionary[str, threading.Lock] = weakref.WeakValueDictionary()
_locks_lock = threading.Lock()


def _write_plan(bank: QuestionBank, store: RunStore, outcome: Outcome) -> None:
    plan = outcome.plan
    q = plan["question"]
    qid = q["id"]
    try:
        if plan["new_question"] and qid not in bank._snap().index:
            bank.add_questions(
                [
                    BankQuestion(
                        id=qid,
                        question=q["question"],
                        family=q["family"],
                        source=SOURCE,
                        answer=q["answer"],
                        category=q["category"],
                        record=q["record"],
                    )
                ],
                embeddings=np.asarray([plan["embedding"]], dtype=np.float32),
            )
        if plan["cells"]:
            bank.record_many({model: {qid: bool(v)} for model, v in plan["cells"].items()})
    except Exception as exc:
        if "readonly" in str(exc).replace("-", "").replace(" ", "").lower():
            raise _read_only(bank, str(exc)) from exc
        if not isinstance(exc, (BankError, ValueError)):
            raise
        raise FeedbackError(
            f"feedback for run {outcome.run_id!r} is recorded but could not be written to "
            f"bank {bank.name!r}: {exc}; it is written at the next start or when repeated",
            status=500,
            code="bank_error",
        ) from exc
    store.mark_applied(outcome.run_id)


def _repeat(
    bank: QuestionBank, store: RunStore, outcome: Outcome, request: Mapping[str, Any]
) -> FeedbackResult:
    if outcome.request != dict(request):
        raise FeedbackError(
            f"run {outcome.run_id!r} already has different feedback "
            f"({_describe(outcome.request)}); a run takes one outcome",
            status=409,
            code="conflicting_feedback",
        )
    if not outcome.applied:  # recorded, then the process stopped before the bank write
        _write(bank, store, outcome)
    return _result(outcome, "already applied")


def _describe(request: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in request.items() if v is not None)


def _result(outcome: Outcome, status: str) -> FeedbackResult:
    plan = outcome.plan
    return FeedbackResult(
        run_id=outcome.run_id,
        status=status,
        question_id=plan["question"]["id"],
        new_question=bool(plan["new_question"]),
        cells={m: bool(v) for m, v in plan["cells"].items()},
        kept=dict(plan.get("kept") or {}),
    )

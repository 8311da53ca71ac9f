"""Keeping a finished run for feedback: the `RunRecord` the graph's `score` node stores.

The run's family and category are known when the caller says so in the run config's metadata
(`{"metadata": {"smcs_family": "math", "smcs_category": "algebra"}}`); otherwise the feedback
names the family when it needs one (a gold answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from smcs_graph.feedback.runs import RunRecord, RunStore

__all__ = ["CATEGORY_KEY", "FAMILY_KEY", "keep_run", "keeping", "producers"]

log = logging.getLogger(__name__)

FAMILY_KEY = "smcs_family"
"""Run config metadata key naming the question's family (its grader), when the caller knows."""
CATEGORY_KEY = "smcs_category"
"""Run config metadata key naming the question's category."""


def producers(trace: Mapping[str, Any]) -> list[str]:
    """The model(s) whose output is the final answer: the chosen candidate's aggregator (a
    fusion's writer, or the model of a reference that won as a candidate), else, when the
    top-prior reference answered (a gate, a fallback), its model."""
    for candidate in trace.get("candidates") or []:
        if candidate.get("chosen"):
            return [str(candidate["aggregator"])]
    references = sorted(trace.get("references") or [], key=lambda r: r["rank"])
    return [str(references[0]["model"])] if references else []


def _answer_text(trace: Mapping[str, Any], fallback: str) -> str:
    for candidate in trace.get("candidates") or []:
        if candidate.get("chosen"):
            return str(candidate.get("text") or "")
    return fallback


def keep_run(
    store: RunStore,
    bank_name: str,
    trace: Mapping[str, Any],
    embedding: Sequence[float] | None,
    answer: str,
    metadata: Mapping[str, Any] | None = None,
    detected_family: str | None = None,
) -> bool:
    """Store the run of `trace` (its `run_id`) for feedback; False, logged, when it cannot be
    kept (no embedding, or the store failed): the answer is never held up by its record.

    The family is the metadata's, else `detected_family` (the answer contract the question
    states, `answers.detect_family`)."""
    run_id = trace.get("run_id")
    if not run_id or embedding is None:
        return False
    meta = metadata or {}
    family = meta.get(FAMILY_KEY) or detected_family
    category = meta.get(CATEGORY_KEY)
    record = RunRecord(
        run_id=str(run_id),
        bank=bank_name,
        question=str(trace["question"]),
        embedding=[float(x) for x in embedding],
        references={str(r["model"]): str(r["text"]) for r in trace.get("references") or []},
        answer=_answer_text(trace, answer),
        producers=producers(trace),
        family=str(family) if isinstance(family, str) and family.strip() else None,
        category=str(category) if isinstance(category, str) else "",
    )
    try:
        store.add(record)
    except Exception:
        log.warning("could not keep run %s for feedback in %r", run_id, store, exc_info=True)
        return False
    return True


def keeping(
    body: Callable[[Any, Any], dict[str, Any]], runs: RunStore
) -> Callable[[Any, Any], dict[str, Any]]:
    """The `score` node body `body`, keeping each finished run (an output with a trace) in
    `runs`."""

    def node(services: Any, state: Any) -> dict[str, Any]:
        out = body(services, state)
        if "trace" in out:
            keep_run(
                runs,
                services.bank.name,
                out["trace"],
                state.get("query_embedding"),
                str(out.get("answer") or ""),
                _run_metadata(),
                state.get("answer_family"),
            )
        return out

    return node


def _run_metadata() -> Mapping[str, Any]:
    """The current run config's metadata ({} outside a run)."""
    from langgraph.config import get_config

    try:
        return get_config().get("metadata") or {}
    except RuntimeError:
        return {}

"""Feedback grows the bank: runs are kept by id, and an outcome for a run adds its question
and the judged cells of the capability matrix.

- `runs`: `RunStore`, the SQLite file (beside an on-disk bank) of runs awaiting feedback and the
  outcomes received (write-ahead);
- `keep`: what a finished run keeps (`keep_run`, called by the graph's `score` node);
- `apply`: `apply_feedback(bank, run_id, gold= | correct= | verdicts=)` and `apply_pending`.
"""

from smcs_graph.feedback.apply import (
    FeedbackError,
    FeedbackResult,
    apply_feedback,
    apply_pending,
    run_store,
)
from smcs_graph.feedback.keep import CATEGORY_KEY, FAMILY_KEY
from smcs_graph.feedback.runs import DEFAULT_MAX_RUNS, RunRecord, RunStore

__all__ = [
    "CATEGORY_KEY",
    "DEFAULT_MAX_RUNS",
    "FAMILY_KEY",
    "FeedbackError",
    "FeedbackResult",
    "RunRecord",
    "RunStore",
    "apply_feedback",
    "apply_pending",
    "run_store",
]

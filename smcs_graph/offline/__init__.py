"""Offline jobs: work done before (or beside) serving questions.

- `cache`: the response cache both jobs share (SQLite, insert-once, crash-safe) and model calls
  with retries on transient errors.
- `profiling`: every pool model answers every bank question, graded, into the capability matrix.
- `evaluation`: SMCS against baselines and ablations on held-out questions, and replay of prior
  selection on recorded matrices.

Both jobs resume from their response cache after a crash, without calling a model twice.
"""

from smcs_graph.offline.cache import (
    CachedResponse,
    ResponseCache,
    RetryPolicy,
    is_transient,
    request_key,
)

__all__ = ["CachedResponse", "ResponseCache", "RetryPolicy", "is_transient", "request_key"]

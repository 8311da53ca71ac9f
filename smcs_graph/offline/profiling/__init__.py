"""Profiling a pool on a bank: every model answers the bank questions it has not answered yet.

Answers are graded (one grader per task family) and written to the bank's capability matrix in
batches. What is left to do is read from the bank's mask of measured entries, so adding a model
profiles only that model and adding questions profiles only those.

Resumable: every model response is committed to the response cache (`smcs_graph.offline.cache`)
before it is graded. A run killed at any point (even SIGKILL) and started again requests no response
that was committed; responses whose grades had not reached the bank yet are graded again from
the cache. A call in flight at the kill (its response not yet committed) is made again: at
most `concurrency` per model, since a worker takes its next question only after the commit.

Speed: the event loop only makes calls. Commits run on a cache thread (responses arriving
together share a transaction), grading runs in batches on grading threads, and the objects made
before the run are kept out of garbage collection, whose full passes stalled every call.

Calls: bounded concurrency per model endpoint, retries with exponential backoff and jitter on
transient errors (connection errors, timeouts, HTTP 5xx, 408 and 429 rate limits; never other
4xx), tokens and cost tallied per model. A model whose calls keep failing is given up after
`max_consecutive_failures` and reported; the other models' results are kept.

Modules: `settings` (how questions are asked, cache keys), `run` (the run), `report` (tallies).
"""

from smcs_graph.offline.profiling.report import ModelTally, ProfileReport
from smcs_graph.offline.profiling.run import Grader, aprofile_pool, profile_pool
from smcs_graph.offline.profiling.settings import (
    DEFAULT_CONCURRENCY,
    GenerationSettings,
    default_cache_path,
    question_key,
)

__all__ = [
    "DEFAULT_CONCURRENCY",
    "GenerationSettings",
    "Grader",
    "ModelTally",
    "ProfileReport",
    "aprofile_pool",
    "default_cache_path",
    "profile_pool",
    "question_key",
]

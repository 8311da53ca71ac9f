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

Settings: `GenerationSettings.from_settings(settings)` asks as the runtime does (its prompts,
per-family token limits and answer recovery: a reply cut off at its limit before its final
answer is finished by one follow-up call, `smcs_graph.answers`); the cached response is the
finished reply, so the bank measures what runs. The cache key includes the recovery.

Calls: bounded concurrency per model endpoint, retries with exponential backoff and jitter on
transient errors (connection errors, timeouts, HTTP 5xx, 408 and 429 rate limits; never other
4xx), tokens and cost tallied per model. A model whose calls keep failing is given up after
`max_consecutive_failures` and reported; the other models' results are kept.

Model prompts: a pool entry's own system prompt and templates (`smcs_graph.models.prompts`) are
part of each cache key, and the cell prompt record (`prompts.PromptRecord`) keeps per model and
family the prompt its cells were measured with: a changed prompt re-asks only those cells.

Modules: `settings` (how questions are asked, cache keys), `run` (the run), `report` (tallies),
`prompts` (the cell prompt record).
"""

from smcs_graph.offline.profiling.prompts import PromptRecord
from smcs_graph.offline.profiling.report import ModelTally, ProfileReport
from smcs_graph.offline.profiling.run import Grader, aprofile_pool, profile_pool
from smcs_graph.offline.profiling.settings import (
    COMPARED,
    DEFAULT_CONCURRENCY,
    GenerationSettings,
    default_cache_path,
    prompt_digest,
    question_key,
    settings_changes,
)

__all__ = [
    "COMPARED",
    "DEFAULT_CONCURRENCY",
    "GenerationSettings",
    "Grader",
    "ModelTally",
    "ProfileReport",
    "PromptRecord",
    "aprofile_pool",
    "default_cache_path",
    "profile_pool",
    "prompt_digest",
    "question_key",
    "settings_changes",
]

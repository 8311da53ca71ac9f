"""Profiling a pool on a bank: every model answers the bank questions it has not answered yet.

Answers are graded (one grader per task family) and written to the bank's capability matrix in
batches. What is left to do is read from the bank's mask of measured entries, so adding a model
profiles only that model and adding questions profiles only those.

Resumable: every model response is committed to a `ResponseCache` (SQLite in WAL mode) before
it is graded. A run killed at any point (even SIGKILL) and started again requests no response
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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from langchain_core.messages import AIMessage, HumanMessage

from smcs_graph._sqlite import open_wal
from smcs_graph.bank import BankQuestion, QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.pool import Pool, PoolModel

if TYPE_CHECKING:
    from smcs_graph.graders import Verdict
    from smcs_graph.questions import QuestionRecord

__all__ = [
    "DEFAULT_CONCURRENCY",
    "CachedResponse",
    "GenerationSettings",
    "ModelTally",
    "ProfileReport",
    "ResponseCache",
    "aprofile_pool",
    "default_cache_path",
    "profile_pool",
]

DEFAULT_CONCURRENCY = 4
"""Calls in flight per model when neither the caller nor the pool entry sets a limit."""

Grader = Callable[["QuestionRecord", str], "Verdict"]
_ERRORS_KEPT = 5  # error messages kept per model for the report
_KEYS_PER_QUERY = 500  # under SQLite's limit on bound parameters
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class GenerationSettings:
    """How each bank question is asked; part of every cache key."""

    max_tokens: int = 1024
    temperature: float = 0.0
    seed: int | None = 0
    family_max_tokens: tuple[tuple[str, int], ...] = ()
    """Per-family answer limits that replace `max_tokens`, e.g. (("multiple_choice", 64),):
    a letter needs few tokens, a program many."""

    def __post_init__(self) -> None:
        for label, value in (("max_tokens", self.max_tokens), *self.family_max_tokens):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"max_tokens for {label} must be an integer >= 1, got {value!r}")
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature!r}")

    def for_family(self, family: str) -> GenerationSettings:
        """The settings one question of `family` is asked with (its cache key uses these)."""
        if not self.family_max_tokens:
            return self
        limit = dict(self.family_max_tokens).get(family, self.max_tokens)
        return replace(self, max_tokens=limit, family_max_tokens=())

    def call_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return kwargs


@dataclass(frozen=True)
class CachedResponse:
    """One model response as stored in the cache."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0


class ResponseCache:
    """Model responses on disk, keyed by model, question and generation settings.

    SQLite in WAL mode: each `put` (or `put_many`) is one committed transaction, so a killed
    process loses at most the responses it was writing. `path=None` keeps the cache in memory
    (not resumable). Use it from one thread at a time (any thread).
    """

    def __init__(self, path: str | Path | None) -> None:
        self._path = None if path is None else Path(path).expanduser()
        self._db = open_wal(
            self._path,
            [
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT NOT NULL, question_id TEXT NOT NULL,"
                " text TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
                " output_tokens INTEGER NOT NULL, created REAL NOT NULL)"
            ],
            what="a response cache",
            hint="give the path of a cache file written by `smcs profile`, or a new file",
            any_thread=True,  # profiling commits on a thread of its own
        )

    @property
    def path(self) -> Path | None:
        return self._path

    @staticmethod
    def key(
        model: str,
        question_id: str,
        question: str,
        prompt: str,
        settings: GenerationSettings,
    ) -> str:
        """The cache key: a SHA-256 over model, question id and text, prompt and settings."""
        payload = {
            "model": model,
            "question_id": question_id,
            "question_sha256": hashlib.sha256(question.encode("utf-8")).hexdigest(),
            "prompt": prompt,
            "settings": {
                "max_tokens": settings.max_tokens,
                "temperature": settings.temperature,
                "seed": settings.seed,
            },
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    def get(self, key: str) -> CachedResponse | None:
        row = self._db.execute(
            "SELECT text, input_tokens, output_tokens FROM responses WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else CachedResponse(row[0], int(row[1]), int(row[2]))

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedResponse]:
        """The stored responses among `keys` (absent keys are left out)."""
        found: dict[str, CachedResponse] = {}
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = list(keys[start : start + _KEYS_PER_QUERY])
            rows = self._db.execute(
                "SELECT key, text, input_tokens, output_tokens FROM responses"
                f" WHERE key IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for key, text, input_tokens, output_tokens in rows:
                found[key] = CachedResponse(text, int(input_tokens), int(output_tokens))
        return found

    def put(self, key: str, model: str, question_id: str, response: CachedResponse) -> None:
        """Commit one response (a second put of the same key keeps the first)."""
        self.put_many([(key, model, question_id, response)])

    def put_many(self, entries: Sequence[tuple[str, str, str, CachedResponse]]) -> None:
        """Commit (key, model, question id, response) entries in one transaction."""
        now = time.time()
        rows = [
            (key, model, question_id, r.text, r.input_tokens, r.output_tokens, now)
            for key, model, question_id, r in entries
        ]
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_cache_path(bank: QuestionBank) -> Path | None:
    """`<bank folder>.responses.sqlite` beside an on-disk bank; None for other banks.

    Beside the bank, not inside it, so that rebuilding the bank keeps the paid responses.
    """
    where = Path(bank.where)
    if bank.where == "memory" or "://" in bank.where or not where.is_dir():
        return None
    return where.with_name(f"{where.name}.responses.sqlite")


@dataclass
class ModelTally:
    """What profiling did for one model in one run."""

    pending: int = 0
    """Questions without a result for this model when the run started."""
    recorded: int = 0
    """Graded results written to the bank."""
    correct: int = 0
    cached: int = 0
    """Responses taken from the cache instead of calling the model."""
    calls: int = 0
    """Successful model calls (each one paid for)."""
    retries: int = 0
    failures: int = 0
    """Questions left unanswered after retries (still masked; a rerun tries them again)."""
    grading_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    abandoned: bool = False
    """Given up after too many consecutive failures."""
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.abandoned or self.failures > 0 or self.grading_errors > 0

    def note(self, message: str) -> None:
        if len(self.errors) < _ERRORS_KEPT:
            self.errors.append(message)


@dataclass
class ProfileReport:
    """The outcome of one profiling run, per model."""

    models: dict[str, ModelTally]
    seconds: float
    cache_path: Path | None
    skipped: dict[str, str] = field(default_factory=dict)
    """Questions no model was asked, with the reason (no gradable record, no grader)."""

    @property
    def failed(self) -> list[str]:
        """Models with questions left unanswered or ungraded in this run."""
        return [name for name, tally in self.models.items() if tally.failed]

    @property
    def answers(self) -> int:
        return sum(t.recorded for t in self.models.values())

    def summary(self) -> str:
        """A human-readable table, one line per model, then the failures."""
        lines = [
            f"profiled {len(self.models)} model(s): {self.answers} result(s) recorded in "
            f"{self.seconds:.1f}s"
            + (f" ({self.answers / self.seconds:.2f}/s)" if self.seconds > 0 else "")
        ]
        for name, t in self.models.items():
            acc = f"{t.correct / t.recorded:.3f}" if t.recorded else "n/a"
            lines.append(
                f"  {name}: {t.recorded}/{t.pending} recorded, accuracy {acc}, {t.calls} calls "
                f"({t.cached} cached, {t.retries} retries), {t.input_tokens} in + "
                f"{t.output_tokens} out tokens, cost {t.cost:.6f}"
            )
        if self.skipped:
            few = "; ".join(f"{i}: {why}" for i, why in list(self.skipped.items())[:3])
            lines.append(f"  skipped {len(self.skipped)} ungradable question(s): {few}")
        for name, t in self.models.items():
            if t.failed:
                what = "given up after repeated failures" if t.abandoned else "failures"
                lines.append(
                    f"  FAILED {name}: {what}; {t.failures} unanswered, {t.grading_errors} "
                    f"grading error(s): {'; '.join(t.errors)}"
                )
        return "\n".join(lines)


def _known_families() -> set[str]:
    from smcs_graph.graders import known_families

    return set(known_families())


def _gradable(
    stored: Sequence[BankQuestion], graded_families: set[str] | None
) -> tuple[dict[str, QuestionRecord], dict[str, str]]:
    """Records of the questions that can be graded, and why the others cannot.

    Checked before any call, so that no paid answer goes to a question it cannot grade.
    """
    from smcs_graph.questions import QuestionFormatError

    records: dict[str, QuestionRecord] = {}
    skipped: dict[str, str] = {}
    for question in stored:
        if graded_families is not None and question.family not in graded_families:
            skipped[question.id] = f"no grader for family {question.family!r}"
            continue
        try:
            records[question.id] = question.to_record()
        except QuestionFormatError as exc:
            skipped[question.id] = f"no gradable record ({exc})"
    return records, skipped


def _default_grader() -> Grader:
    from smcs_graph.graders import grade

    return grade


def _prompt_for(record: QuestionRecord) -> str:
    from smcs_graph.questions import prompt_for

    return prompt_for(record)


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth retrying: connection errors, timeouts, 5xx, 408, 429."""
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:  # the OpenAI client's and httpx's transport errors (timeouts are subclasses)
        import httpx
        import openai

        transient: tuple[type[BaseException], ...] = (
            openai.APIConnectionError,
            httpx.TransportError,
        )
    except ImportError:
        return False
    return isinstance(exc, transient)


def _text(message: AIMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = [
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in message.content
        if isinstance(part, str) or part.get("type") == "text"
    ]
    return "".join(parts)


@dataclass(frozen=True)
class _Ungraded:
    """A committed response waiting for its grade."""

    model: str
    record: QuestionRecord
    text: str
    tally: ModelTally


def _grade_all(grader: Grader, batch: Sequence[_Ungraded]) -> list[Verdict | Exception]:
    """Grade a batch (on a grading thread); a grader error is kept for its answer alone."""
    outcomes: list[Verdict | Exception] = []
    for item in batch:
        try:
            outcomes.append(grader(item.record, item.text))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


@dataclass(frozen=True)
class _Uncommitted:
    """A response on its way to the cache, and the future its worker waits on."""

    entry: tuple[str, str, str, CachedResponse]
    committed: asyncio.Future[None]


class _Run:
    """The state of one profiling run (one event loop)."""

    def __init__(
        self,
        bank: QuestionBank,
        pool: Pool,
        cache: ResponseCache,
        grader: Grader,
        settings: GenerationSettings,
        *,
        retries: int,
        backoff_s: float,
        timeout_s: float | None,
        batch_size: int,
        max_consecutive_failures: int,
        grading_workers: int,
        progress: bool,
    ) -> None:
        self.bank, self.pool, self.cache, self.grader = bank, pool, cache, grader
        self.settings = settings
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self.batch_size = batch_size
        self.max_consecutive_failures = max_consecutive_failures
        self.grading = ThreadPoolExecutor(grading_workers, thread_name_prefix="smcs-grade")
        self.grading_workers = grading_workers
        self.ungraded: list[_Ungraded] = []
        self.grading_batches: set[asyncio.Task[None]] = set()
        self.cached: dict[str, CachedResponse] = {}
        self.cache_writer = ThreadPoolExecutor(1, thread_name_prefix="smcs-cache")
        self.uncommitted: list[_Uncommitted] = []
        self.committing = False
        self.closing = False
        self.progress = progress
        self.pending: dict[str, dict[str, bool]] = {}
        self.pending_count = 0
        self.flush_lock = asyncio.Lock()
        self.jitter = random.Random()
        self.tallies: dict[str, ModelTally] = {}
        self.consecutive: dict[str, int] = {}
        self.bar: Any = None

    async def call(
        self, member: PoolModel, prompt: str, tally: ModelTally, settings: GenerationSettings
    ) -> AIMessage:
        """One model call with retries on transient errors (exponential backoff + jitter)."""
        messages = [HumanMessage(content=prompt)]
        kwargs = settings.call_kwargs() if member.sampling_kwargs else {}
        attempt = 0
        while True:
            try:
                # asyncio.timeout, unlike wait_for, runs the call in this task (no task per call).
                async with asyncio.timeout(self.timeout_s):
                    message = await member.chat_model.ainvoke(messages, **kwargs)
            except Exception as exc:
                if attempt >= self.retries or not is_transient(exc):
                    raise
                delay = self.backoff_s * (2**attempt) * (0.5 + self.jitter.random())
                attempt += 1
                tally.retries += 1
                await asyncio.sleep(delay)
                continue
            if not isinstance(message, AIMessage):
                raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
            return message

    async def answer(
        self, member: PoolModel, record: QuestionRecord, prompt: str, tally: ModelTally
    ) -> CachedResponse | None:
        """The model's response from the cache, or from a call committed to the cache."""
        settings = self.settings.for_family(record.family)
        key = ResponseCache.key(member.name, record.id, record.question, prompt, settings)
        hit = self.cached.pop(key, None)
        if hit is not None:
            tally.cached += 1
            return hit
        try:
            message = await self.call(member, prompt, tally, settings)
        except Exception as exc:
            tally.failures += 1
            tally.note(f"{record.id}: {type(exc).__name__}: {exc}")
            self.consecutive[member.name] = self.consecutive.get(member.name, 0) + 1
            if self.consecutive[member.name] >= self.max_consecutive_failures:
                tally.abandoned = True
            return None
        self.consecutive[member.name] = 0
        usage = message.usage_metadata
        response = CachedResponse(
            _text(message),
            usage["input_tokens"] if usage else 0,
            usage["output_tokens"] if usage else 0,
        )
        await self.commit((key, member.name, record.id, response))
        tally.calls += 1
        tally.input_tokens += response.input_tokens
        tally.output_tokens += response.output_tokens
        tally.cost += member.cost(usage)
        return response

    async def commit(self, entry: tuple[str, str, str, CachedResponse]) -> None:
        """Return once the response is committed to the cache.

        Commits run on the cache thread, off the event loop; responses that arrive while one is
        being written share the next transaction.
        """
        committed = asyncio.get_running_loop().create_future()
        self.uncommitted.append(_Uncommitted(entry, committed))
        if not self.committing:
            self.start_commit()
        await committed

    def start_commit(self) -> None:
        batch, self.uncommitted = self.uncommitted, []
        self.committing = True
        written = asyncio.get_running_loop().run_in_executor(
            self.cache_writer, self.cache.put_many, [item.entry for item in batch]
        )
        written.add_done_callback(functools.partial(self.commit_done, batch))

    def commit_done(self, batch: list[_Uncommitted], written: asyncio.Future[None]) -> None:
        self.committing = False
        for item in batch:
            if item.committed.done():  # its worker was cancelled
                continue
            if written.cancelled():
                item.committed.cancel()
            elif (error := written.exception()) is not None:
                item.committed.set_exception(error)
            else:
                item.committed.set_result(None)
        if self.uncommitted and not self.closing:
            self.start_commit()

    def close_cache_writer(self) -> None:
        """Finish the commit under way, then commit what cancelled workers left (paid for)."""
        self.closing = True
        self.cache_writer.shutdown(wait=True)
        if self.uncommitted:
            self.cache.put_many([item.entry for item in self.uncommitted])
            self.uncommitted = []

    def grade_later(
        self, member: PoolModel, record: QuestionRecord, text: str, tally: ModelTally
    ) -> None:
        """Queue a committed response for grading, off the calling worker's path.

        Grading runs in batches on the grading threads (one batch per free thread), so a worker
        makes its next call at once, and the loop pays one thread hop per batch, not per answer.
        """
        self.ungraded.append(_Ungraded(member.name, record, text, tally))
        if len(self.grading_batches) < self.grading_workers:
            self.start_grading_batch()

    def start_grading_batch(self) -> None:
        batch, self.ungraded = self.ungraded, []
        task = asyncio.ensure_future(self.grade_batch(batch))
        self.grading_batches.add(task)
        task.add_done_callback(self.grading_batch_done)

    def grading_batch_done(self, task: asyncio.Task[None]) -> None:
        self.grading_batches.discard(task)
        healthy = not task.cancelled() and task.exception() is None
        if healthy and self.ungraded and len(self.grading_batches) < self.grading_workers:
            self.start_grading_batch()

    async def grade_batch(self, batch: list[_Ungraded]) -> None:
        loop = asyncio.get_running_loop()
        outcomes = await loop.run_in_executor(self.grading, _grade_all, self.grader, batch)
        if self.ungraded:  # answers that arrived meanwhile are graded while this batch is stored
            self.start_grading_batch()
        for item, outcome in zip(batch, outcomes, strict=True):
            tally = item.tally
            if isinstance(outcome, Exception):
                tally.grading_errors += 1
                tally.note(f"{item.record.id}: grader raised {type(outcome).__name__}: {outcome}")
            else:
                correct = bool(outcome.correct)
                self.pending.setdefault(item.model, {})[item.record.id] = correct
                self.pending_count += 1
                tally.recorded += 1
                tally.correct += int(correct)
            self.advance(tally)
        if self.pending_count >= self.batch_size:
            await self.flush()

    async def finish_grading(self) -> None:
        """Wait until every queued response is graded and its batch handled."""
        while self.grading_batches or self.ungraded:
            if not self.grading_batches:
                self.start_grading_batch()
            await asyncio.gather(*self.grading_batches)

    async def flush(self) -> None:
        """Write the graded results gathered so far to the bank (one batch)."""
        async with self.flush_lock:
            if not self.pending:
                return
            batch, self.pending, self.pending_count = self.pending, {}, 0
            await asyncio.to_thread(self.bank.record_many, batch)

    async def worker(
        self,
        member: PoolModel,
        queue: asyncio.Queue[QuestionRecord],
        prompts: Mapping[str, str],
        tally: ModelTally,
    ) -> None:
        while not tally.abandoned:
            try:
                record = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            response = await self.answer(member, record, prompts[record.id], tally)
            if response is None:
                self.advance(tally)
            else:
                self.grade_later(member, record, response.text, tally)

    def advance(self, tally: ModelTally) -> None:
        if self.bar is not None:
            self.bar.update(1)
            failed = sum(t.failures + t.grading_errors for t in self.tallies.values())
            if failed:
                self.bar.set_postfix(failed=failed, refresh=False)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Leave the objects made before the run out of garbage collection until it ends.

    A full collection walks every object in the process (bank, models, their libraries); here
    that paused the event loop, and with it every call in flight, for about 100 ms per pass.
    A heap already frozen by the caller is left as it is.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def aprofile_pool(
    bank: QuestionBank,
    pool: Pool,
    *,
    models: Sequence[str] | None = None,
    cache: ResponseCache | str | Path | None = None,
    concurrency: int | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float | None = 600.0,
    max_tokens: int = 1024,
    family_max_tokens: Mapping[str, int] | None = None,
    temperature: float = 0.0,
    seed: int | None = 0,
    grader: Grader | None = None,
    batch_size: int = 64,
    max_consecutive_failures: int = 5,
    grading_workers: int | None = None,
    progress: bool = True,
) -> ProfileReport:
    """Profile `models` (default: the whole pool) on every bank question they lack a result for.

    `cache`: a ResponseCache, a file path, or None for `default_cache_path(bank)` (in memory
    when the bank is not on disk). `concurrency`: calls in flight per model; None takes each
    pool entry's `max_concurrency`, else DEFAULT_CONCURRENCY. `retries` extra attempts on
    transient errors, the n-th after about `backoff_s * 2**n` seconds (jittered x0.5-1.5).
    `timeout_s` bounds each call. `grader(record, response) -> Verdict` defaults to the
    family graders (`smcs_graph.graders.grade`); it runs in `grading_workers` threads. Results
    reach the bank every `batch_size` grades and at the end.
    """
    started = time.monotonic()
    names = list(pool.names if models is None else models)
    for name in names:
        pool[name]
    if len(set(names)) != len(names):
        raise ConfigError(f"models are listed more than once: {names}")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    for label, value in (
        ("retries", retries),
        ("batch_size", batch_size - 1),
        ("max_consecutive_failures", max_consecutive_failures - 1),
    ):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{label} is out of range: {value!r}")
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    if not backoff_s >= 0:
        raise ConfigError(f"backoff_s must be >= 0 seconds, got {backoff_s!r}")
    settings = GenerationSettings(
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        family_max_tokens=tuple(sorted((family_max_tokens or {}).items())),
    )
    owned_cache = not isinstance(cache, ResponseCache)
    if isinstance(cache, ResponseCache):
        response_cache = cache
    else:
        response_cache = ResponseCache(cache if cache is not None else default_cache_path(bank))

    with _heap_frozen():
        # What is left: per model, the bank questions without a recorded result.
        await asyncio.to_thread(bank.refresh)
        ids = bank.question_ids()
        _, measured = bank.capability(names)
        todo = {
            name: [ids[i] for i in range(len(ids)) if not measured[row, i]]
            for row, name in enumerate(names)
        }
        wanted = sorted({i for pending in todo.values() for i in pending})
        stored = await asyncio.to_thread(bank.get, wanted)
        records, skipped = _gradable(stored, graded_families=None if grader else _known_families())
        todo = {name: [i for i in pending if i in records] for name, pending in todo.items()}
        prompts = {id_: _prompt_for(record) for id_, record in records.items()}

        run = _Run(
            bank,
            pool,
            response_cache,
            grader or _default_grader(),
            settings,
            retries=retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            batch_size=batch_size,
            max_consecutive_failures=max_consecutive_failures,
            grading_workers=grading_workers or max(2, os.cpu_count() or 2),
            progress=progress,
        )
        # One bulk read: the run then touches the cache only to commit, on its own thread.
        run.cached = response_cache.get_many(
            [
                ResponseCache.key(
                    name,
                    id_,
                    records[id_].question,
                    prompts[id_],
                    settings.for_family(records[id_].family),
                )
                for name in names
                for id_ in todo[name]
            ]
        )
        workers: list[asyncio.Task[None]] = []
        total = sum(len(p) for p in todo.values())
        try:
            if progress and total:
                from tqdm.auto import tqdm

                run.bar = tqdm(total=total, unit="answer", file=sys.stderr, dynamic_ncols=True)
            for name in names:
                member = pool[name]
                tally = run.tallies[name] = ModelTally(pending=len(todo[name]))
                queue: asyncio.Queue[QuestionRecord] = asyncio.Queue()
                for id_ in todo[name]:
                    queue.put_nowait(records[id_])
                limit = concurrency or member.max_concurrency or DEFAULT_CONCURRENCY
                workers += [
                    asyncio.create_task(run.worker(member, queue, prompts, tally))
                    for _ in range(min(limit, len(todo[name])))
                ]
            await asyncio.gather(*workers)
            await run.finish_grading()
        finally:
            # Results not graded yet are in the cache; a rerun grades them again.
            for task in [*workers, *run.grading_batches]:
                task.cancel()
            await asyncio.gather(*workers, *run.grading_batches, return_exceptions=True)
            try:
                run.close_cache_writer()
                await run.flush()
            finally:
                run.grading.shutdown(wait=False, cancel_futures=True)
                if run.bar is not None:
                    run.bar.close()
                if owned_cache:
                    response_cache.close()
        return ProfileReport(run.tallies, time.monotonic() - started, response_cache.path, skipped)


def _synchronous(run: Callable[_P, Awaitable[_T]]) -> Callable[_P, _T]:
    @functools.wraps(run)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run(*args, **kwargs))  # type: ignore[arg-type]
        raise RuntimeError(
            f"{run.__name__.removeprefix('a')}() was called inside a running event loop; "
            f"await {run.__name__}() instead"
        )

    return wrapper


profile_pool = _synchronous(aprofile_pool)
"""`aprofile_pool` for synchronous callers (runs its own event loop)."""

"""One profiling run: what is left to do, calls, commits to the response cache, grading, and
writes to the bank (see `smcs_graph.offline.profiling`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from smcs_graph import answers
from smcs_graph.bank.store import BankQuestion, QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.models.pool import Pool, PoolModel
from smcs_graph.models.prompts import model_messages, prompt_digest
from smcs_graph.offline._sync import synchronous
from smcs_graph.offline.cache import CachedResponse, ResponseCache, RetryPolicy
from smcs_graph.offline.profiling.prompts import PromptRecord, measured_with, stale_cells
from smcs_graph.offline.profiling.report import ModelTally, ProfileReport
from smcs_graph.offline.profiling.settings import (
    DEFAULT_CONCURRENCY,
    GenerationSettings,
    default_cache_path,
    question_key,
)

if TYPE_CHECKING:
    from smcs_graph.grading import Verdict
    from smcs_graph.questions import QuestionRecord

__all__ = ["Grader", "aprofile_pool", "profile_pool"]

Grader = Callable[["QuestionRecord", str], "Verdict"]
"""`grader(record, response) -> Verdict`."""


def _known_families() -> set[str]:
    from smcs_graph.grading import known_families

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
    from smcs_graph.grading import grade

    return grade


def _prompt_for(record: QuestionRecord) -> str:
    from smcs_graph.questions import prompt_for

    return prompt_for(record)


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

    entry: tuple[str, str, CachedResponse]
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
        retry: RetryPolicy,
        batch_size: int,
        max_consecutive_failures: int,
        grading_workers: int,
        progress: bool,
    ) -> None:
        self.bank, self.pool, self.cache, self.grader = bank, pool, cache, grader
        self.settings = settings
        self.retry = retry
        self.batch_size = batch_size
        self.max_consecutive_failures = max_consecutive_failures
        self.grading = ThreadPoolExecutor(grading_workers, thread_name_prefix="smcs-grade")
        self.grading_workers = grading_workers
        self.ungraded: list[_Ungraded] = []
        self.grading_batches: set[asyncio.Task[None]] = set()
        self.cached: dict[str, CachedResponse] = {}
        self.limit_only: dict[str, CachedResponse] = {}
        """By current key: the answer cached when recovery finished only cut-off replies
        (`question_key(unfinished=False)`); it is reused, with a follow-up if one is now due."""
        self.cache_writer = ThreadPoolExecutor(1, thread_name_prefix="smcs-cache")
        self.uncommitted: list[_Uncommitted] = []
        self.committing = False
        self.closing = False
        self.progress = progress
        self.pending: dict[str, dict[str, bool]] = {}
        self.pending_count = 0
        self.recorded: set[tuple[str, str]] = set()
        """(model, question id) of the results graded in this run."""
        self.flush_lock = asyncio.Lock()
        self.tallies: dict[str, ModelTally] = {}
        self.consecutive: dict[str, int] = {}
        self.bar: Any = None

    async def call(
        self,
        member: PoolModel,
        messages: Sequence[BaseMessage],
        tally: ModelTally,
        kwargs: Mapping[str, Any],
    ) -> AIMessage:
        """One model call with retries on transient errors (exponential backoff + jitter)."""

        def count_retry(_: BaseException) -> None:
            tally.retries += 1

        message = await self.retry.run(
            lambda: member.chat_model.ainvoke(messages, **kwargs), on_retry=count_retry
        )
        if not isinstance(message, AIMessage):
            raise TypeError(f"expected an AIMessage, got {type(message).__name__}")
        return message

    async def answer(
        self, member: PoolModel, record: QuestionRecord, prompt: str, tally: ModelTally
    ) -> CachedResponse | None:
        """The model's response from the cache, or from a call committed to the cache."""
        settings = self.settings.for_family(record.family)
        digest = prompt_digest(member, record.family)
        key = question_key(member.name, record.id, record.question, prompt, settings, digest)
        hit = self.cached.pop(key, None)
        if hit is not None:
            tally.cached += 1
            return hit
        earlier = self.limit_only.pop(key, None)
        try:
            if earlier is not None:
                tally.cached += 1
                message = await self.recovered(
                    member,
                    model_messages(member, record.family, [HumanMessage(content=prompt)]),
                    earlier.to_message(),
                    tally,
                    settings,
                    settings.call_kwargs() if member.sampling_kwargs else {},
                )
            else:
                message = await self.finished_reply(member, record.family, prompt, tally, settings)
        except Exception as exc:
            tally.failures += 1
            tally.note(f"{record.id}: {type(exc).__name__}: {exc}")
            self.consecutive[member.name] = self.consecutive.get(member.name, 0) + 1
            if self.consecutive[member.name] >= self.max_consecutive_failures:
                tally.abandoned = True
            return None
        self.consecutive[member.name] = 0
        response = CachedResponse.from_message(message)
        await self.commit((key, member.name, response))
        return response

    async def finished_reply(
        self,
        member: PoolModel,
        family: str,
        prompt: str,
        tally: ModelTally,
        settings: GenerationSettings,
    ) -> AIMessage:
        """The model's reply to `prompt` of `family`, in the messages the model is sent
        (`models.prompts.model_messages`); with recovery on, a reply without its final answer
        is finished by one follow-up call (`recovered`), and the two count as one reply (text
        joined, tokens summed)."""
        conversation = model_messages(member, family, [HumanMessage(content=prompt)])
        kwargs = settings.call_kwargs() if member.sampling_kwargs else {}
        message = await self.call(member, conversation, tally, kwargs)
        _paid(member, message, tally)
        tally.hit_limit += int(answers.hit_limit(message, settings.max_tokens))
        return await self.recovered(member, conversation, message, tally, settings, kwargs)

    async def recovered(
        self,
        member: PoolModel,
        conversation: Sequence[BaseMessage],
        message: AIMessage,
        tally: ModelTally,
        settings: GenerationSettings,
        kwargs: Mapping[str, Any],
    ) -> AIMessage:
        """`message` finished by one follow-up call when it lacks a final answer that its
        family's recovery can finish (`answers.needs_recovery`), else `message` itself (also
        with recovery off)."""
        contract = settings.recovery
        if contract is None or not answers.needs_recovery(
            contract.family, message, settings.max_tokens
        ):
            return message
        family = contract.family
        follow_up_kwargs = {**kwargs, "max_tokens": contract.recovery_tokens} if kwargs else {}
        partial = CachedResponse.from_message(message).text
        follow_up = await self.call(
            member,
            answers.recovery_messages(conversation, partial, family),
            tally,
            follow_up_kwargs,
        )
        _paid(member, follow_up, tally)
        tally.recoveries += 1
        return answers.recovered_message(message, follow_up, family)

    async def commit(self, entry: tuple[str, str, CachedResponse]) -> None:
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
                self.recorded.add((item.model, item.record.id))
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


def _paid(member: PoolModel, message: AIMessage, tally: ModelTally) -> None:
    """Count one successful call, its tokens and its cost."""
    usage: Mapping[str, Any] = message.usage_metadata or {}
    tally.calls += 1
    tally.input_tokens += int(usage.get("input_tokens", 0) or 0)
    tally.output_tokens += int(usage.get("output_tokens", 0) or 0)
    tally.cost += member.cost(message.usage_metadata)


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
    answer_recovery: bool = False,
    generation: GenerationSettings | None = None,
    grader: Grader | None = None,
    batch_size: int = 64,
    max_consecutive_failures: int = 5,
    grading_workers: int | None = None,
    progress: bool = True,
    prompt_record: str | Path | None = None,
) -> ProfileReport:
    """Profile `models` (default: the whole pool) on every bank question they lack a result for.

    `cache`: a ResponseCache, a file path, or None for `default_cache_path(bank)` (in memory
    when the bank is not on disk). `concurrency`: calls in flight per model; None takes each
    pool entry's `max_concurrency`, else DEFAULT_CONCURRENCY. `retries` extra attempts on
    transient errors, the n-th after about `backoff_s * 2**n` seconds (jittered x0.5-1.5).
    `timeout_s` bounds each call. Each question is asked with `max_tokens` (its family's
    `family_max_tokens` entry where there is one), `temperature` and `seed`; with
    `answer_recovery`, a reply cut off before its final answer is finished by one follow-up
    call (`smcs_graph.answers`). `generation` replaces those five, e.g.
    `GenerationSettings.from_settings(settings)` for the runtime's. `grader(record, response)
    -> Verdict` defaults to the family graders (`smcs_graph.grading.grade`); it runs in
    `grading_workers` threads. Results reach the bank every `batch_size` grades and at the end.
    A pool entry's own prompt (`models.prompts`) is part of each cache key, and the cell
    prompt record (`prompt_record`: a JSON file; None: `profiling.prompts.PromptRecord`'s
    default) says which prompt each model's measured cells of a family were asked with: cells
    whose model prompt changed since are asked again.
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
    settings = generation or GenerationSettings(
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        family_max_tokens=tuple(sorted((family_max_tokens or {}).items())),
        answer_recovery=answer_recovery,
    )
    owned_cache = not isinstance(cache, ResponseCache)
    if isinstance(cache, ResponseCache):
        response_cache = cache
    else:
        response_cache = ResponseCache(cache if cache is not None else default_cache_path(bank))

    cell_prompts = PromptRecord(bank, prompt_record)
    with _heap_frozen():
        # What is left: per model, the bank questions without a recorded result, and those
        # measured with a model prompt other than the model's now.
        await asyncio.to_thread(bank.refresh)
        ids = bank.question_ids()
        _, measured = bank.capability(names)
        todo = {
            name: [ids[i] for i in range(len(ids)) if not measured[row, i]]
            for row, name in enumerate(names)
        }
        recorded = await asyncio.to_thread(cell_prompts.read)
        stale = await asyncio.to_thread(stale_cells, bank, pool, names, ids, measured, recorded)
        for name, found in stale.items():
            todo[name] += found
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
            retry=RetryPolicy(retries, backoff_s, timeout_s),
            batch_size=batch_size,
            max_consecutive_failures=max_consecutive_failures,
            grading_workers=grading_workers or max(2, os.cpu_count() or 2),
            progress=progress,
        )
        # One bulk read: the run then touches the cache only to commit, on its own thread.
        run.cached, run.limit_only = _cached_answers(
            response_cache, pool, names, todo, records, prompts, settings
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
        families = {id_: record.family for id_, record in records.items()}
        asked, complete = measured_with(pool, todo, families, run.recorded)
        for name, digest in asked.items():
            run.tallies[name].prompt_digests = digest
        await asyncio.to_thread(cell_prompts.update, complete)
        return ProfileReport(
            run.tallies, time.monotonic() - started, response_cache.path, skipped, cell_prompts.path
        )


profile_pool = synchronous(aprofile_pool)
"""`aprofile_pool` for synchronous callers (runs its own event loop)."""


def _cached_answers(
    cache: ResponseCache,
    pool: Pool,
    names: Sequence[str],
    todo: Mapping[str, Sequence[str]],
    records: Mapping[str, QuestionRecord],
    prompts: Mapping[str, str],
    settings: GenerationSettings,
) -> tuple[dict[str, CachedResponse], dict[str, CachedResponse]]:
    """The cached answers by key, and, by current key, the answers cached under the key that
    finished only cut-off replies, for the answers now missing whose contract also finishes
    replies that ended without a final answer."""
    keys: list[str] = []
    earlier: dict[str, str] = {}
    for name in names:
        for id_ in todo[name]:
            record = records[id_]
            narrowed = settings.for_family(record.family)
            parts = (name, id_, record.question, prompts[id_], narrowed)
            digest = prompt_digest(pool[name], record.family)
            key = question_key(*parts, digest)
            keys.append(key)
            contract = narrowed.recovery
            if contract is not None and contract.recover_unfinished:
                earlier[question_key(*parts, digest, unfinished=False)] = key
    cached = cache.get_many(keys)
    missing = {old: key for old, key in earlier.items() if key not in cached}
    found = cache.get_many(list(missing)) if missing else {}
    return cached, {missing[old]: response for old, response in found.items()}

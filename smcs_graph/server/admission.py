"""Admission control: a fixed number of runs at once, a bounded queue, 429 beyond it, and a
deadline on each run (504 past it).

Each admitted run is an `asyncio.Task` owned here, so its place is released exactly once
however it ends: answered, failed, past its deadline, or cancelled (its client left) while
running, while queued, or before its first step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from smcs_graph.server.errors import APIError

__all__ = ["Admission"]

T = TypeVar("T")


class Admission:
    """`max_concurrency` runs at once, `max_queue` waiting, the rest refused with 429; each run
    cancelled after `run_timeout_s` seconds of running (queueing does not count).

    Create it inside the serving event loop; it is used from that one loop only, so its
    counters need no lock.
    """

    def __init__(self, max_concurrency: int, max_queue: int, run_timeout_s: float) -> None:
        self._slots = asyncio.Semaphore(max_concurrency)
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.run_timeout_s = run_timeout_s
        self.admitted = 0
        """Requests admitted and not yet finished: running or queued."""
        self.running = 0
        # asyncio holds tasks weakly: keep each run until it ends.
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def queued(self) -> int:
        return self.admitted - self.running

    @property
    def saturated(self) -> bool:
        """No run slot is free: a new request would wait in the queue."""
        return self.admitted >= self.max_concurrency

    @property
    def full(self) -> bool:
        """No place is left: a new request would get 429."""
        return self.admitted >= self.max_concurrency + self.max_queue

    def start(self, work: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Admit `work` and start it as a task (it waits for a slot), or raise a 429 `APIError`
        (with `Retry-After`) when no place is left.

        Cancel the task to stop the run; a run past its deadline raises a 504 `APIError`.
        """
        if self.full:
            raise APIError(
                429,
                f"the server is at capacity ({self.running} SMCS runs in progress, "
                f"{self.queued} queued); retry shortly",
                type="rate_limit_error",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        self.admitted += 1
        released = False

        def release(_: object = None) -> None:
            nonlocal released
            if not released:
                released = True
                self.admitted -= 1

        async def admitted() -> T:
            try:
                async with self._slots:
                    self.running += 1
                    try:
                        return await self._bounded(work)
                    finally:
                        self.running -= 1
            finally:
                release()

        task = asyncio.create_task(admitted())
        # A task cancelled before its first step never runs `admitted`: release it here too.
        task.add_done_callback(release)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _bounded(self, work: Callable[[], Awaitable[T]]) -> T:
        deadline = asyncio.timeout(self.run_timeout_s)
        try:
            async with deadline:
                return await work()
        except TimeoutError:
            if not deadline.expired():
                raise  # raised by the run itself, not by the deadline
            raise APIError(
                504,
                f"the SMCS run exceeded this server's deadline of {self.run_timeout_s:g} s "
                "and was cancelled; retry, or ask the operator to raise --run-timeout",
                type="server_error",
                code="run_timeout",
            ) from None

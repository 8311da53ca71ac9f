"""Model calls that end at their deadline, cancelled rather than abandoned.

One deadline covers a whole call: waiting for an endpoint slot, every attempt of the client's
own retries and the backoff between them. The call is a coroutine awaited under
`asyncio.timeout`, which at the deadline cancels the request and closes its connection, so
nothing outlives the call and nothing holds a worker that other calls need.

- Async path (`ainvoke`): the coroutine runs on the caller's event loop.
- Sync path (`invoke`), OpenAI-compatible clients (every endpoint and local pool entry): it
  runs on one private event loop in a daemon thread, shared by the process. A private loop per
  call would not do: the client's pooled HTTP connections belong to the loop that opened them
  and break on another one. Their async code never blocks, so one loop serves every call.
- Other chat models on the sync path, and models with no async implementation on either path,
  cannot be cancelled (nor trusted not to block a shared loop): each call runs `invoke` on a
  daemon thread of its own (never a shared pool), left behind at the deadline; it holds its
  endpoint slot until it really ends and does not delay exit.

At interpreter exit, and on Ctrl-C inside `cancel_calls_on_interrupt()`, every sync-path call in
flight is cancelled, so the graph's worker threads end at once instead of at their deadlines.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel

T = TypeVar("T")

SLOT_POLL_S = (0.005, 0.05)
"""First and longest pause between tries for an endpoint slot: the slots are a thread
semaphore shared by every loop and thread, so an async waiter polls it (a blocking wait
would hold a thread per waiter)."""


class CallCancelled(Exception):
    """A call cancelled because the process is exiting or was interrupted."""


_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_in_flight: set[concurrent.futures.Future[Any]] = set()
_stopping: str | None = None
"""Why new sync-path calls are refused (set at exit and during an interrupt), else None."""
_stop: concurrent.futures.Future[str] = concurrent.futures.Future()
"""Done once `cancel_in_flight` ran: wakes the sync waiters of calls on their own threads."""


def cancellable(model: Any) -> bool:
    """Whether sync-path calls to `model` run on the private loop: an OpenAI-compatible client
    (`langchain_openai`), whose async calls cancel cleanly and never block the loop."""
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:  # pragma: no cover - a dependency of the package
        return False
    return isinstance(model, BaseChatOpenAI)


def async_native(model: Any) -> bool:
    """Whether `model` (a chat model) has its own async implementation, which cancellation
    can stop; the default `_agenerate` runs the sync one on a thread."""
    cls = type(model)
    return not isinstance(model, BaseChatModel) or (cls._agenerate is not BaseChatModel._agenerate)


async def acquire_slot(slots: threading.BoundedSemaphore | None) -> None:
    """Take one of the endpoint's slots without blocking the loop (cancellable)."""
    if slots is None:
        return
    pause, longest = SLOT_POLL_S
    while not slots.acquire(blocking=False):
        await asyncio.sleep(pause)
        pause = min(pause * 2, longest)


def in_own_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
    """Run `fn` on a daemon thread of its own (with the caller's context variables)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(fn, *args, **kwargs))
        except BaseException as exc:  # handed to the waiter
            future.set_exception(exc)

    threading.Thread(target=target, name="smcs-sync-call", daemon=True).start()
    return future


def wait_in_thread(deadline: float | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` on a thread of its own and wait for it up to `deadline` seconds (the sync path
    of a call that cannot be cancelled): `TimeoutError` at the deadline, `CallCancelled` on an
    interrupt or at exit."""
    if _stopping is not None:
        raise CallCancelled(_stopping)
    stop = _stop
    future = in_own_thread(fn, *args, **kwargs)
    waited: list[concurrent.futures.Future[Any]] = [future, stop]
    done, _ = concurrent.futures.wait(
        waited, timeout=deadline, return_when=concurrent.futures.FIRST_COMPLETED
    )
    if future in done:
        return future.result()
    if stop in done:
        raise CallCancelled(_stopping or "cancelled")
    raise TimeoutError(f"no answer within {deadline} s")


def _private_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="smcs-calls", daemon=True).start()
            _register_exit_hook()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a call's coroutine on the private loop and wait for it (the sync path)."""
    if _stopping is not None:
        coro.close()
        raise CallCancelled(_stopping)
    future = asyncio.run_coroutine_threadsafe(coro, _private_loop())
    with _lock:
        _in_flight.add(future)
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise CallCancelled(_stopping or "cancelled") from None
    except BaseException:
        future.cancel()  # e.g. KeyboardInterrupt in a caller on the main thread
        raise
    finally:
        with _lock:
            _in_flight.discard(future)


def cancel_in_flight(reason: str) -> int:
    """Cancel every sync-path call in flight; new ones are refused until `resume()`.
    Returns how many were cancelled."""
    global _stopping
    with _lock:
        _stopping = reason
        futures = list(_in_flight)
        if not _stop.done():
            _stop.set_result(reason)
    for future in futures:
        future.cancel()
    return len(futures)


def resume() -> None:
    """Accept sync-path calls again after `cancel_in_flight`."""
    global _stopping, _stop
    with _lock:
        _stopping = None
        if _stop.done():
            _stop = concurrent.futures.Future()


def _register_exit_hook() -> None:
    # threading's exit hooks run before it joins worker threads (LangGraph's executor threads
    # wait on these calls), and in reverse order, so this one runs before the executors' joins.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # registering during shutdown: too late
            register(cancel_in_flight, "the process is exiting")


@contextlib.contextmanager
def cancel_calls_on_interrupt() -> Iterator[None]:
    """Within this block, Ctrl-C (SIGINT) first cancels every sync-path model call in flight,
    then raises `KeyboardInterrupt` as usual: `graph.invoke` returns at once instead of waiting
    for its calls' deadlines. A no-op outside the main thread. `SMCSChatModel` and `smcs ask`
    run the graph inside it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        cancel_in_flight("interrupted")
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        # None: a handler not set from Python, which cannot be put back; Python's own then.
        restored = previous if previous is not None else signal.default_int_handler
        signal.signal(signal.SIGINT, restored)
        resume()

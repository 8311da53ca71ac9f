"""The process-wide set of local servers (``LocalServerManager``, ``get_local_servers``) and
``local_chat_model``, a ``ChatOpenAI`` on one of them.

One manager per process is shared by every caller, thread-safe, and stops its servers at
interpreter exit (``atexit``). A model may run as several replicas (servers of the same file,
one thread each); ``local_chat_model(name, replicas=N)`` then routes each request to the least
busy one (``replicas.py``).

A process forked while servers run keeps reaching them (the parent serves), but must leave with
``os._exit`` (as multiprocessing's fork children do): a normal exit hangs in an xllamacpp static
destructor. Prefer the ``spawn`` start method for worker processes.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smcs_graph.models.local.registry import LocalModelError, get_spec
from smcs_graph.models.local.replicas import loopback_http_clients, replica_http_clients
from smcs_graph.models.local.server import LocalModelServer

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = ["LocalServerManager", "get_local_servers", "local_chat_model"]

logger = logging.getLogger(__name__)


class LocalServerManager:
    """Process-wide shared local servers: ``ensure(names)`` starts the missing ones.

    The first configuration of a model wins: asking again with other ``threads`` returns the
    server already running. Servers that failed to start are forgotten, so a later ``ensure``
    tries again.
    """

    def __init__(self, cache_dir: Path | str | None = None, startup_timeout: float = 60.0) -> None:
        self.cache_dir = cache_dir
        self.startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._servers: dict[str, Future[LocalModelServer]] = {}
        self._closed = False

    def ensure(
        self,
        names: Iterable[str] | str,
        threads: int = 1,
        *,
        n_ctx: int | None = None,
        parallel: int = 1,
        replicas: int = 1,
    ) -> dict[str, str]:
        """Base URLs of the named models' servers, starting those not yet running (in parallel).

        ``parallel`` slots decode that many requests together in one batch (llama.cpp's
        continuous batching; each slot gets the full context, ``n_ctx`` per slot). On a CPU
        server with one thread it gains nothing reliable (3 requests to Qwen2.5-Coder-1.5B took
        0.9x-1.1x the queued time here, ``benchmarks/local_settings.py``); on GPUs it pays.

        ``replicas`` servers of each model are kept running (more are started if fewer run; the
        returned URL is the first one's, ``replica_urls`` lists all). Replicas share the
        weights' page cache, so each adds only its context and compute buffers.

        Raises ``LocalModelError`` naming every model that failed; the others keep running.
        """
        wanted_names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        for name in wanted_names:
            get_spec(name)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise LocalModelError(f"replicas must be an integer >= 1 (got {replicas!r})")
        wanted = [_replica_key(name, i) for name in wanted_names for i in range(replicas)]
        waiting: dict[str, Future[LocalModelServer]] = {}
        to_start: list[tuple[str, Future[LocalModelServer]]] = []
        with self._lock:
            if self._closed:
                raise LocalModelError("the local server manager has been shut down")
            for name in wanted:
                future = self._servers.get(name)
                if future is None:
                    future = Future()
                    self._servers[name] = future
                    to_start.append((name, future))
                waiting[name] = future
        if len(to_start) == 1:
            self._start_one(*to_start[0], threads=threads, n_ctx=n_ctx, parallel=parallel)
        else:
            starters = [
                threading.Thread(
                    target=self._start_one,
                    args=(name, future),
                    kwargs={"threads": threads, "n_ctx": n_ctx, "parallel": parallel},
                    name=f"smcs-start-{name}",
                    daemon=True,
                )
                for name, future in to_start
            ]
            for starter in starters:
                starter.start()
            for starter in starters:
                starter.join()
        urls: dict[str, str] = {}
        failures: dict[str, BaseException] = {}
        for key, future in waiting.items():
            try:
                url = future.result().base_url
            except Exception as exc:
                failures[key] = exc
            else:
                urls.setdefault(_replica_name(key), url)
        if failures:
            detail = "; ".join(f"{name}: {exc}" for name, exc in failures.items())
            raise LocalModelError(
                f"local model server(s) failed to start: {', '.join(failures)} ({detail})"
            )
        return urls

    def _start_one(
        self,
        name: str,
        future: Future[LocalModelServer],
        *,
        threads: int,
        n_ctx: int | None,
        parallel: int = 1,
    ) -> None:
        model = _replica_name(name)
        per_slot = n_ctx if n_ctx is not None else get_spec(model).n_ctx
        server = LocalModelServer(
            model,
            threads=threads,
            n_ctx=per_slot * parallel,
            n_parallel=parallel,
            cache_dir=self.cache_dir,
            startup_timeout=self.startup_timeout,
        )
        try:
            server.start()
        except BaseException as exc:
            with self._lock:
                if self._servers.get(name) is future:
                    del self._servers[name]
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        future.set_result(server)

    def _up(self) -> dict[str, LocalModelServer]:
        """{key: server} of the servers that started and still run."""
        with self._lock:
            futures = dict(self._servers)
        return {key: future.result() for key, future in futures.items() if _is_up(future)}

    def running(self) -> dict[str, str]:
        """{name: base_url} of the servers that are up (further replicas as ``name#2``, ...)."""
        return {key: server.base_url for key, server in self._up().items()}

    def replica_urls(self, name: str) -> list[str]:
        """Base URLs of every running replica of ``name``, first one first."""
        return [server.base_url for key, server in self._up().items() if _replica_name(key) == name]

    def server(self, name: str) -> LocalModelServer:
        """The running server of ``name`` (its first replica; for its port, model path or
        startup time)."""
        with self._lock:
            future = self._servers.get(name)
        if future is None or not future.done() or future.exception() is not None:
            raise LocalModelError(f"local model server {name!r} is not running")
        return future.result()

    def stop(self, name: str, drain_timeout: float = 30.0) -> None:
        """Stop one model's servers, replicas included (waiting for any still starting)."""
        with self._lock:
            keys = [key for key in self._servers if _replica_name(key) == name]
            futures = [self._servers.pop(key) for key in keys]
        for future in futures:
            self._close_future(future, drain_timeout)

    def shutdown(self, drain_timeout: float = 5.0) -> None:
        """Stop every server; later ``ensure`` calls raise. Registered with ``atexit``."""
        with self._lock:
            self._closed = True
            futures = list(self._servers.values())
            self._servers.clear()
        for future in futures:
            self._close_future(future, drain_timeout)

    @staticmethod
    def _close_future(future: Future[LocalModelServer], drain_timeout: float) -> None:
        try:
            server = future.result(timeout=120.0)
        except Exception:
            return
        try:
            server.close(drain_timeout=drain_timeout)
        except LocalModelError as exc:
            logger.warning("%s", exc)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # another parent thread may have held it at fork time
        for name, future in list(self._servers.items()):
            # A start still in progress never completes here: its thread stayed in the parent.
            if not _is_up(future):
                del self._servers[name]


def _is_up(future: Future[LocalModelServer]) -> bool:
    return future.done() and future.exception() is None and future.result().running


def _replica_key(name: str, index: int) -> str:
    """The manager's key of replica ``index`` of ``name``: the name itself for the first."""
    return name if index == 0 else f"{name}#{index + 1}"


def _replica_name(key: str) -> str:
    return key.split("#", 1)[0]


_MANAGER: LocalServerManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_local_servers() -> LocalServerManager:
    """The process-wide ``LocalServerManager`` (created on first use, shut down at exit)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = LocalServerManager()
            atexit.register(_MANAGER.shutdown)
        return _MANAGER


def _after_fork_in_child() -> None:
    global _MANAGER_LOCK
    _MANAGER_LOCK = threading.Lock()
    if _MANAGER is not None:
        _MANAGER._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------- chat model


def local_chat_model(
    name: str,
    *,
    manager: LocalServerManager | None = None,
    threads: int = 1,
    parallel: int = 1,
    replicas: int = 1,
    **kwargs: Any,
) -> ChatOpenAI:
    """A ``ChatOpenAI`` on the local server of ``name`` (started on first use, with ``threads``
    threads and ``parallel`` batched slots if this call starts it; a running server is shared
    as it is).

    With ``replicas > 1`` that many servers of the model run and the client's HTTP transport
    sends each request to the one with the fewest requests in flight from this process (ties:
    the first), so concurrent calls (the aggregation map) decode side by side on separate cores.

    Defaults: ``logprobs=True`` (per-token logprobs in
    ``msg.response_metadata["logprobs"]["content"]``), ``use_responses_api=False``,
    ``max_retries=0`` (the server is in-process: retrying hides real failures), and shared
    HTTP clients fit for loopback (see ``loopback_http_clients``). Any keyword
    (``temperature``, ``seed``, ``max_tokens``, ``top_logprobs``, ...) overrides or extends them.
    Without ``temperature`` the server samples at its default 0.8.
    """
    spec = get_spec(name)
    if not spec.chat:
        raise LocalModelError(
            f"local model {name!r} is a base model, not chat-tuned: through chat it echoes the "
            "prompt. Use a few-shot completion prompt on /v1/completions instead."
        )
    from langchain_openai import ChatOpenAI

    manager = manager or get_local_servers()
    base_url = manager.ensure([name], threads=threads, parallel=parallel, replicas=replicas)[name]
    if replicas > 1:
        urls = manager.replica_urls(name)
        http_client, http_async_client = replica_http_clients(tuple(urls))
        base_url = urls[0]
    else:
        http_client, http_async_client = loopback_http_clients()
    settings: dict[str, Any] = {
        "base_url": base_url,
        "api_key": "local",
        "model": name,
        "logprobs": True,
        "use_responses_api": False,
        "max_retries": 0,
        "http_client": http_client,
        "http_async_client": http_async_client,
    }
    settings.update(kwargs)
    return ChatOpenAI(**settings)

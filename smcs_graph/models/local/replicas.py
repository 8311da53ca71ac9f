"""HTTP clients for local servers: loopback clients shared by every local model, and clients
whose transports spread one model's requests over its replicas.

On a CPU, two one-thread replicas (servers of the same file) decode two requests in 0.58-0.72x
the wall time of one, where one server with two slots gains nothing and two threads per server
spin-wait badly under contention. The routing transport counts this process's requests in
flight per replica and sends each request to the least busy one.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

__all__ = ["loopback_http_clients", "replica_http_clients"]


class _ReplicaRouter:
    """Counts this process's requests in flight per replica and picks the least busy one.

    A replica that refused a connection is passed over for ``DOWN_SECONDS`` (its request is
    sent to another: a refused connection sent nothing, so nothing runs twice)."""

    DOWN_SECONDS = 10.0

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.ports = [urllib.parse.urlsplit(url).port for url in urls]
        self.in_flight = [0] * len(urls)
        self.down_until = [0.0] * len(urls)
        self._lock = threading.Lock()

    def route(self, request: Any, tried: set[int]) -> int:
        """Point ``request`` at the least busy replica not yet ``tried`` (up ones first), count
        it as busy and add it to ``tried``; ``retry`` never asks once every replica was tried."""
        with self._lock:
            now = time.monotonic()
            left = [i for i in range(len(self.ports)) if i not in tried]
            index = min(left, key=lambda i: (self.down_until[i] > now, self.in_flight[i], i))
            self.in_flight[index] += 1
            tried.add(index)
        request.url = request.url.copy_with(port=self.ports[index])
        return index

    def releaser(self, index: int) -> Callable[[], None]:
        """A function that releases ``index`` on its first call and does nothing after."""
        pending = [index]

        def release() -> None:
            with self._lock:
                if pending:
                    self.in_flight[pending.pop()] -= 1

        return release

    def retry(self, index: int, refused: bool, tried: set[int]) -> bool:
        """Release a request that raised; True when it should go to another replica (the
        connection was refused, so nothing was sent, and some replica is left to try)."""
        with self._lock:
            self.in_flight[index] -= 1
            if refused:
                self.down_until[index] = time.monotonic() + self.DOWN_SECONDS
        return refused and len(tried) < len(self.ports)


def _httpx_module() -> Any:
    """httpx or httpx2, whichever this openai SDK is built on."""
    import openai

    return importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.split(".")[0])


@functools.cache
def replica_http_clients(urls: tuple[str, ...]) -> tuple[Any, Any]:
    """Sync and async clients (shared per replica set, so every ``ChatOpenAI`` of the model
    counts the same requests) whose transports send each request to the least busy replica.
    The request is counted from when it is sent until its response is closed (read in full or
    abandoned), so a streamed reply holds its replica while it streams. A replica that refuses
    the connection hands the request to the next one; only when every replica refused does the
    call fail, with the last connection error."""
    import openai

    httpx = _httpx_module()
    router = _ReplicaRouter(urls)

    class _Released(httpx.SyncByteStream):  # type: ignore[name-defined]
        def __init__(self, stream: Any, release: Callable[[], None]) -> None:
            self._stream, self._release = stream, release

        def __iter__(self) -> Iterator[bytes]:
            yield from self._stream

        def close(self) -> None:
            try:
                self._stream.close()
            finally:
                self._release()

    class _AsyncReleased(httpx.AsyncByteStream):  # type: ignore[name-defined]
        def __init__(self, stream: Any, release: Callable[[], None]) -> None:
            self._stream, self._release = stream, release

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            try:
                await self._stream.aclose()
            finally:
                self._release()

    class _Routing(httpx.BaseTransport):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport(limits=openai.DEFAULT_CONNECTION_LIMITS)

        def handle_request(self, request: Any) -> Any:
            tried: set[int] = set()
            while True:
                index = router.route(request, tried)
                try:
                    response = self._inner.handle_request(request)
                except BaseException as exc:
                    if router.retry(index, isinstance(exc, httpx.ConnectError), tried):
                        continue
                    raise
                response.stream = _Released(response.stream, router.releaser(index))
                return response

        def close(self) -> None:
            self._inner.close()

    class _AsyncRouting(httpx.AsyncBaseTransport):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._inner = httpx.AsyncHTTPTransport(limits=_no_idle_limits())

        async def handle_async_request(self, request: Any) -> Any:
            tried: set[int] = set()
            while True:
                index = router.route(request, tried)
                try:
                    response = await self._inner.handle_async_request(request)
                except BaseException as exc:
                    if router.retry(index, isinstance(exc, httpx.ConnectError), tried):
                        continue
                    raise
                response.stream = _AsyncReleased(response.stream, router.releaser(index))
                return response

        async def aclose(self) -> None:
            await self._inner.aclose()

    return (
        openai.DefaultHttpxClient(trust_env=False, transport=_Routing()),
        openai.DefaultAsyncHttpxClient(trust_env=False, transport=_AsyncRouting()),
    )


def _no_idle_limits() -> Any:
    """openai's connection limits (its httpx or httpx2 type) without idle keep-alive."""
    import openai

    limits_type = type(openai.DEFAULT_CONNECTION_LIMITS)
    return limits_type(
        max_connections=openai.DEFAULT_CONNECTION_LIMITS.max_connections,
        max_keepalive_connections=0,
    )


@functools.cache
def loopback_http_clients() -> tuple[Any, Any]:
    """openai's default httpx clients, shared by all local models, with two changes for
    loopback servers: proxy settings from the environment are ignored (with HTTP_PROXY set and
    127.0.0.1 not in NO_PROXY, httpx would send local calls to the proxy), and the async client
    keeps no idle connections, so one ChatOpenAI works across event loops (a pooled connection
    from a closed loop fails with "Event loop is closed"; a loopback connect costs ~0.1 ms)."""
    import openai

    return (
        openai.DefaultHttpxClient(trust_env=False),
        openai.DefaultAsyncHttpxClient(trust_env=False, limits=_no_idle_limits()),
    )

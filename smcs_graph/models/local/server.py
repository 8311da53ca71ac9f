"""One in-process llama.cpp server for one registry model (``LocalModelServer``).

xllamacpp has no ``stop()``: the server lives exactly as long as its ``xllamacpp.Server``
object, and dropping the last reference runs its destructor, which stops the HTTP loop and frees
the model synchronously. That destructor holds the GIL and waits for every in-flight request's
client to hang up, so a client thread in this process would deadlock it: ``close()`` first lets
requests drain (bounded), then shuts the server side of the remaining connections, then drops
the object and checks that the port refuses connections. The object stays private so nothing
else pins it.

``xllamacpp.Server(params)`` loads the model holding the GIL (0.4 s for SmolLM2-135M, 1 s for
Qwen2.5-0.5B, 2 s for Qwen2.5-1.5B here): starting servers on several threads overlaps the file
assembly and hashing, not the loads, and stalls every Python thread meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from smcs_graph.models.local.files import model_file
from smcs_graph.models.local.registry import LocalModelError, get_spec

__all__ = ["DEFAULT_HOST", "LocalModelServer"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"

# Servers started in this process: a forked child must leak them (see _after_fork_in_child).
_RUNNING: weakref.WeakSet[LocalModelServer] = weakref.WeakSet()

# Loopback only: never route the health checks through an HTTP proxy from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _busy_from_metrics(server: Any) -> int | None:
    """requests_processing + requests_deferred from the in-process Prometheus metrics."""
    try:
        text = str(server.handle_metrics())
    except Exception:
        return None
    busy: int | None = None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("llamacpp:requests_processing", "llamacpp:requests_deferred"):
            with contextlib.suppress(ValueError):
                busy = (busy or 0) + int(float(value))
    return busy


def _shutdown_server_connections(port: int) -> int:
    """Shut down this process's accepted (server-side) TCP connections on ``port``.

    Linux only (reads /proc); elsewhere a no-op. Returns how many were shut down.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            # 0A = LISTEN: the listening socket belongs to the server and closes with it.
            if state != "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    if not inodes:
        return 0
    count = 0
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            try:
                with socket.socket(fileno=os.dup(int(fd))) as conn:
                    conn.shutdown(socket.SHUT_RDWR)
                count += 1
            except OSError:
                continue
    return count


def _port_accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


class LocalModelServer:
    """An OpenAI-compatible llama.cpp server for one registry model, inside this process.

    ``start()`` (or entering the context manager) loads the model and blocks until ``/health``
    answers 200 and ``/v1/models`` lists the alias; ``close()`` stops it and frees the port.
    """

    def __init__(
        self,
        name: str,
        *,
        threads: int = 1,
        n_ctx: int | None = None,
        n_parallel: int = 1,
        cache_dir: Path | str | None = None,
        startup_timeout: float = 60.0,
        host: str = DEFAULT_HOST,
    ) -> None:
        self.spec = get_spec(name)
        if threads < 1:
            raise LocalModelError(f"{name}: threads must be >= 1 (got {threads})")
        if n_parallel < 1:
            raise LocalModelError(f"{name}: n_parallel must be >= 1 (got {n_parallel})")
        self.name = name
        self.threads = threads
        self.n_ctx = n_ctx if n_ctx is not None else self.spec.n_ctx
        self.n_parallel = n_parallel
        self.cache_dir = cache_dir
        self.startup_timeout = startup_timeout
        self.host = host
        self.model_path: Path | None = None
        self.startup_seconds: float | None = None
        self._server: Any = None  # xllamacpp.Server; the only reference, so dropping it stops it
        self._port: int | None = None
        self._inherited = False  # True in a forked child: the parent serves, the child must not
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = self.base_url if self._port is not None else "stopped"
        return f"LocalModelServer({self.name!r}, threads={self.threads}, {state})"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalModelError(f"local model server {self.name!r} is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI API root, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> str:
        """Start serving (idempotent) and return ``base_url``."""
        with self._lock:
            if self._server is not None:
                return self.base_url
            started = time.monotonic()
            try:
                import xllamacpp
            except ImportError as exc:
                raise LocalModelError(
                    f"local model {self.name!r} needs xllamacpp: pip install xllamacpp "
                    "(or the project's 'local' extra)"
                ) from exc
            self.model_path = model_file(self.name, self.cache_dir)
            params = self._params(xllamacpp)
            try:
                server = xllamacpp.Server(params)
            except Exception as exc:  # it raises a bare RuntimeError("Failed to init server ...")
                raise LocalModelError(
                    f"local model {self.name!r} failed to start from {self.model_path}: {exc}"
                ) from exc
            try:
                port = urllib.parse.urlsplit(str(server.listening_address)).port
                if port is None:
                    raise LocalModelError(
                        f"local model {self.name!r}: no port in listening address "
                        f"{server.listening_address!r}"
                    )
                self._server, self._port = server, port
                self._wait_ready(started)
            except BaseException:
                self._server = self._port = None
                del server
                raise
            self.startup_seconds = time.monotonic() - started
            _RUNNING.add(self)
            logger.info("%s serving at %s", self.name, self.base_url)
            return self.base_url

    def _params(self, xllamacpp: Any) -> Any:
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        # Recent xllamacpp types model_alias as a set of names; a str there would become a set
        # of its characters.
        if isinstance(params.model_alias, set | frozenset):
            params.model_alias = {self.name}
        else:
            params.model_alias = self.name
        params.n_ctx = self.n_ctx
        params.n_parallel = self.n_parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.hostnames = [self.host]
        params.port = 0  # the OS picks a free port; read back from listening_address
        params.ui = False
        params.verbosity = 0
        params.endpoint_metrics = True  # close() reads requests_processing in-process
        return params

    def _wait_ready(self, started: float) -> None:
        root = f"http://{self.host}:{self._port}"
        deadline = started + self.startup_timeout
        last = "no answer"
        while True:
            try:
                status, body = _http_get(f"{root}/health", timeout=5.0)
                if status == 200:
                    status, body = _http_get(f"{root}/v1/models", timeout=5.0)
                    ids = [m.get("id") for m in json.loads(body).get("data", [])]
                    if self.name in ids:
                        return
                    raise LocalModelError(
                        f"local model {self.name!r} started but /v1/models lists {ids}, "
                        "not its alias"
                    )
                last = f"/health answered {status}: {body[:200]!r}"
            except (OSError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise LocalModelError(
                    f"local model {self.name!r} did not become ready within "
                    f"{self.startup_timeout:.0f} s at {root} ({last})"
                )
            time.sleep(0.05)

    def busy_requests(self) -> int | None:
        """Requests being processed or queued (from the server's own metrics); None if unknown."""
        server = self._server
        if server is None:
            return 0
        return _busy_from_metrics(server)

    def close(self, drain_timeout: float = 30.0, timeout: float = 10.0) -> None:
        """Stop the server (idempotent); returns once the port refuses connections.

        Requests in flight get up to ``drain_timeout`` seconds to finish; the connections of
        those still running then are shut down (their clients see the connection drop).
        """
        with self._lock:
            server, host, port = self._server, self.host, self._port
            if server is None or port is None:
                return
            _RUNNING.discard(self)
            if self._inherited:  # the parent process serves it: only forget it here
                self._server = self._port = None
                return
            deadline = time.monotonic() + drain_timeout
            while (_busy_from_metrics(server) or 0) > 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            # The destructor waits until every in-flight request's client hangs up, holding
            # the GIL: a client thread in this process could then never hang up (deadlock).
            # Shutting the server side of open connections down first lets it return.
            _shutdown_server_connections(port)
            # xllamacpp.Server has no stop(): its destructor stops the HTTP loop and frees the
            # model. These are the only references, so it runs here, synchronously.
            self._server = None
            self._port = None
            del server
        deadline = time.monotonic() + timeout
        while _port_accepts(host, port):
            if time.monotonic() >= deadline:
                raise LocalModelError(
                    f"local model {self.name!r}: port {port} still accepts connections "
                    f"{timeout:.0f} s after close()"
                )
            time.sleep(0.05)
        logger.info("%s stopped (port %d freed)", self.name, port)

    def _after_fork_in_child(self) -> None:
        # The server's threads stayed in the parent, which keeps serving on the same port; in
        # the child its destructor would abort (joining threads that do not exist), so the
        # Python object is leaked for good and close() only forgets it.
        self._lock = threading.Lock()
        if self._server is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._server))
            self._inherited = True

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _after_fork_in_child() -> None:
    for server in list(_RUNNING):
        server._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

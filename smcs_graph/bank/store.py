"""`QuestionBank`: the question bank and capability matrix in one Chroma collection.

The bank is a thin facade over its parts:

- `collection`: Chroma clients, opening or creating the collection, layout and embedder checks,
  the completeness mark of bulk writes;
- `records`: `BankQuestion`, `Support` and how a question is laid out as a Chroma record (our
  own embedding, never Chroma's default embedding function, which downloads a model);
- `snapshot`: the in-process copy that reads and retrieval use (all embeddings as one float32
  matrix plus the capability matrix), loaded once and kept current by this process's writes;
  `refresh()` reloads it when other processes write to the same bank;
- `writes`: adding questions and recording results;
- `retrieval`: support sets of a query.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph import core
from smcs_graph.bank import collection as _chroma
from smcs_graph.bank.collection import DEFAULT_NAME
from smcs_graph.bank.index import unit_query
from smcs_graph.bank.records import (
    SCHEMA_VERSION,
    BankQuestion,
    Support,
    few,
    page_rows,
    stored_question,
    validate_questions,
)
from smcs_graph.bank.retrieval import Retriever
from smcs_graph.bank.snapshot import Snapshot, load_snapshot
from smcs_graph.bank.writes import (
    checked_embeddings,
    chunks,
    outcomes_by_question,
    snapshot_with_outcomes,
    write_outcomes,
    write_questions,
)
from smcs_graph.embedder import Embedder, default_embedder
from smcs_graph.errors import BankError, ConfigError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["DEFAULT_NAME", "SCHEMA_VERSION", "BankQuestion", "QuestionBank", "Support"]


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
        _chroma.check_name(name)
        self._client = client
        # None: the default MiniLM embedder (loaded lazily, on the first embed).
        self._embedder = embedder if embedder is not None else default_embedder()
        self._name = name
        self._where = where or "a Chroma client"
        self._dim = int(self._embedder.dimension)
        self._lock = threading.RLock()
        self._snapshot: Snapshot | None = None
        self._retriever = Retriever()
        self._collection = _chroma.open_collection(
            client, name, self._where, self._embedder.id, self._dim, create
        )
        _chroma.check_collection(
            self._collection, name, self._where, self._embedder.id, self._dim, allow_incomplete
        )
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
        client, folder = _chroma.persistent_client(path, create)
        return cls(
            client,
            embedder,
            name=name,
            create=create,
            where=folder,
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
        client, url = _chroma.http_client(host, port, ssl, headers)
        return cls(client, embedder, name=name, create=create, where=url)

    @classmethod
    def in_memory(cls, embedder: Embedder, *, name: str | None = None) -> QuestionBank:
        """A bank in process memory (lost at exit); unique name unless `name` is given.

        All in-memory Chroma clients of a process share one store, hence the unique default.
        """
        name = name or f"smcs_bank_{uuid.uuid4().hex}"
        return cls(_chroma.ephemeral_client(), embedder, name=name, create=True, where="memory")

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
        return _chroma.is_complete(self._collection)

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
        _chroma.set_complete(self._collection, complete)

    # ------------------------------------------------------------------ snapshot

    def _snap(self) -> Snapshot:
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

    def _load(self) -> Snapshot:
        return load_snapshot(self._collection, self._dim, self._name, self._where)

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
        validate_questions(items)
        if not items:
            return 0
        vectors = None
        if embeddings is not None:
            vectors = checked_embeddings(embeddings, len(items), self._dim, self._embedder.id)
        changed = 0
        with self._lock:
            for start in range(0, len(items), self._max_batch):
                chunk = items[start : start + self._max_batch]
                given = None if vectors is None else vectors[start : start + len(chunk)]
                written = write_questions(
                    self._collection, self._embedder, self._name, chunk, given
                )
                if self._snapshot is not None:
                    self._snapshot = written.applied_to(self._snapshot)
                changed += len(written.questions)
        return changed

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
        outcomes = outcomes_by_question(results)
        if not outcomes:
            return
        with self._lock:
            write_outcomes(self._collection, self._name, self._max_batch, outcomes)
            if self._snapshot is not None:
                self._snapshot = snapshot_with_outcomes(self._snapshot, list(results), outcomes)

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
        for chunk in chunks(unique, self._max_batch):
            page = self._collection.get(ids=list(chunk), include=["documents", "metadatas"])
            for id_, doc, meta in page_rows(page):
                found[id_] = stored_question(id_, doc, meta)
        self._check_known(unique, found)
        return [found[i] for i in wanted]

    def _check_known(self, ids: Sequence[str], known: Mapping[str, object]) -> None:
        missing = [i for i in ids if i not in known]
        if missing:
            raise BankError(f"question id(s) not in bank {self._name!r}: {few(missing)}")

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
            self._check_known(ids, snap.index)
            columns = np.fromiter((snap.index[i] for i in ids), dtype=np.intp, count=len(ids))
        return snap.capability(list(models), columns)

    def coverage(self) -> dict[str, int]:
        """Per model, how many questions have a recorded result."""
        return self._snap().coverage()

    def accuracy(self, models: Sequence[str]) -> NDArray[np.float64]:
        """Each model's accuracy over its measured bank questions (0.5 with none), in `models`
        order: what shrunk priors shrink toward. Cached until the next write."""
        per_model = self._snap().accuracy
        return np.array([per_model.get(m, 0.5) for m in models], dtype=np.float64)

    def category_accuracy(
        self, models: Sequence[str], strength: float = 0.0
    ) -> dict[str, NDArray[np.float64]]:
        """Each model's accuracy per category (a question's family where it has none), shrunk
        toward its bank-wide accuracy with `strength` (`core.category_accuracy`), in `models`
        order: what 'hier' priors shrink toward. Counts are cached until the next write."""
        names, per_model = self._snap().category_tallies
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
        for page in _chroma.pages(self._collection, ["metadatas"]):
            for meta in page["metadatas"] or []:
                sources[str((meta or {}).get("source") or "")] += 1
                categories[str((meta or {}).get("category") or "")] += 1
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

    # ------------------------------------------------------------------ retrieval

    def support(
        self,
        query_embedding: ArrayLike,
        models: Sequence[str],
        *,
        n_sup_base: int,
        gamma: float,
        rule: core.Rule = "paper",
    ) -> Support:
        """The support set of a query (RPS step 2) and its capability columns for `models`.

        Every bank similarity is exact (`retrieval`), then `core.support_set`. Ties are ordered
        by question id. An empty bank gives an empty Support (threshold NaN).
        """
        holder = f"bank {self._name!r} (embedder {self._embedder.id!r})"
        query = unit_query(query_embedding, self._dim, holder)
        return self._retriever.support(self._snap(), query, list(models), n_sup_base, gamma, rule)

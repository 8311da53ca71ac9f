"""The in-process snapshot of a bank that reads and retrieval use.

A `Snapshot` holds every question id, text, family and category, all embeddings as one float32
matrix of unit rows, and the capability matrix as one int8 row per model (1, 0, or -1 where not
measured). It is immutable: a write builds a new one (`with_rows`, `with_results`) and swaps it
in, so readers in other threads never see a half-made one. Statistics over it (accuracies,
per-category tallies) are computed once per snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.bank.collection import pages
from smcs_graph.bank.index import unit_rows
from smcs_graph.bank.records import RESULT_PREFIX, category_of, page_rows, stored_outcome
from smcs_graph.errors import BankError

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection

__all__ = ["Snapshot", "load_snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy of the bank for reads; writers build a new one and swap it in."""

    ids: list[str]
    index: dict[str, int]
    texts: list[str]
    families: list[str]
    matrix: NDArray[np.float32]  # (N, d), unit rows
    results: dict[str, NDArray[np.int8]]  # model -> (N,): 1, 0, or -1 = not measured
    categories: list[str]  # category, else family (`records.category_of`)

    @classmethod
    def empty(cls, dim: int) -> Snapshot:
        return cls([], {}, [], [], np.zeros((0, dim), dtype=np.float32), {}, [])

    def capability(
        self, models: Sequence[str], columns: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """The 0/1 capability of `models` on the questions at `columns`, and its mask."""
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
        """Per model, how many questions have a recorded result."""
        return {m: int((self.results[m] >= 0).sum()) for m in sorted(self.results)}

    # ------------------------------------------------------------------ statistics

    @cached_property
    def accuracy(self) -> dict[str, float]:
        """Each model's accuracy over its measured questions (`core.global_accuracy`)."""
        return {
            model: float(core.global_accuracy((row == 1)[np.newaxis], (row >= 0)[np.newaxis])[0])
            for model, row in self.results.items()
        }

    @cached_property
    def category_tallies(
        self,
    ) -> tuple[list[str], dict[str, tuple[NDArray[np.int64], NDArray[np.int64]]]]:
        """The category names, and per model its (correct, measured) counts per category."""
        names, codes = core.category_codes(self.categories)
        tallies = {
            model: (
                np.bincount(codes[row == 1], minlength=len(names)).astype(np.int64),
                np.bincount(codes[row >= 0], minlength=len(names)).astype(np.int64),
            )
            for model, row in self.results.items()
        }
        return names, tallies

    # ------------------------------------------------------------------ updated copies

    def with_rows(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        families: Sequence[str],
        vectors: Mapping[str, NDArray[np.float32]],
        cleared: set[str],
        categories: Sequence[str],
    ) -> Snapshot:
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
        return Snapshot(all_ids, index, all_texts, all_families, matrix, results, all_categories)

    def with_results(self, model: str, outcomes: Mapping[str, int | None]) -> Snapshot:
        """This snapshot with `model`'s outcomes set (None: unmeasured) for known ids."""
        values = self.results.get(model)
        values = np.full(len(self.ids), -1, dtype=np.int8) if values is None else values.copy()
        for id_, outcome in outcomes.items():
            values[self.index[id_]] = -1 if outcome is None else outcome
        results = dict(self.results)
        if (values >= 0).any():
            results[model] = values
        else:
            results.pop(model, None)
        return Snapshot(
            self.ids, self.index, self.texts, self.families, self.matrix, results, self.categories
        )


def load_snapshot(collection: Collection, dim: int, name: str, where: str) -> Snapshot:
    """Read the whole collection into a snapshot (BankError on embeddings of another size)."""
    ids: list[str] = []
    texts: list[str] = []
    families: list[str] = []
    categories: list[str] = []
    metas: list[Mapping[str, object]] = []
    blocks: list[NDArray[np.float32]] = []
    seen: set[str] = set()
    for page in pages(collection, ["embeddings", "documents", "metadatas"]):
        vectors = np.asarray(page["embeddings"], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise BankError(
                f"bank {name!r} at {where} holds embeddings of shape "
                f"{vectors.shape}, expected dimension {dim}; rebuild the bank"
            )
        keep: list[int] = []
        for i, (id_, doc, meta) in enumerate(page_rows(page)):
            if id_ in seen:  # offset paging repeated it
                continue
            keep.append(i)
            seen.add(id_)
            ids.append(id_)
            texts.append(doc or "")
            meta = meta or {}
            metas.append(meta)
            families.append(str(meta.get("family", "general")))
            categories.append(category_of(meta))
        blocks.append(vectors[keep])
    if not ids:
        return Snapshot.empty(dim)
    n = len(ids)
    results: dict[str, NDArray[np.int8]] = {}
    for col, meta in enumerate(metas):
        for key, value in meta.items():
            if not key.startswith(RESULT_PREFIX):
                continue
            outcome = stored_outcome(value)
            if outcome is None:
                continue
            model = key[len(RESULT_PREFIX) :]
            row = results.get(model)
            if row is None:
                row = results[model] = np.full(n, -1, dtype=np.int8)
            row[col] = outcome
    matrix = unit_rows(np.concatenate(blocks))
    return Snapshot(
        ids, {id_: i for i, id_ in enumerate(ids)}, texts, families, matrix, results, categories
    )

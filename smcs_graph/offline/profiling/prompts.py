"""The cell prompt record: per model and family, the model prompt its bank cells were measured
with (`models.prompts.prompt_digest`: the pool entry's system prompt and template), so that
profiling re-asks exactly the cells whose model prompt changed.

The capability matrix holds one 0/1 per cell; this record holds the prompt beside it. For a
bank on disk it is a JSON file in the bank folder (``<bank folder>/<bank name>.prompts.json``,
``{"models": {model: {family: digest}}}``), replaced atomically, so it goes with the bank; for
other banks it lives as long as the bank object in this process (`profile_pool(...,
prompt_record=PATH)` keeps it in a file). No entry means the default prompt (digest ""): a bank
profiled or imported before pool entries had prompts of their own needs no record, and the file
is written only once some model has one.

A run updates a model's family only when every cell of that family it had to ask was recorded:
a run that stops midway leaves the old digest, so the next run asks those cells again and the
response cache (keyed by the digest) answers the ones already asked.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from smcs_graph.errors import ConfigError
from smcs_graph.models.prompts import prompt_digest

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from smcs_graph.bank.store import QuestionBank
    from smcs_graph.models.pool import Pool

__all__ = ["PromptRecord", "digests", "measured_with", "stale_cells"]

Digests = dict[str, dict[str, str]]
"""`{model: {family: digest}}`."""

_IN_MEMORY: weakref.WeakKeyDictionary[QuestionBank, Digests] = weakref.WeakKeyDictionary()


class PromptRecord:
    """A bank's cell prompt record (see the module): read it, merge a run's families into it."""

    def __init__(self, bank: QuestionBank, path: str | Path | None = None) -> None:
        self._bank = bank
        self.path = Path(path) if path is not None else _default_path(bank)
        if self.path is not None and self.path.is_dir():
            raise ConfigError(f"prompt record {self.path} is a folder: pass a JSON file path")

    def read(self) -> Digests:
        """`{model: {family: digest}}` as recorded (empty: no record)."""
        if self.path is None:
            return {m: dict(f) for m, f in _IN_MEMORY.get(self._bank, {}).items()}
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            models = data["models"]
            if not isinstance(models, dict) or not all(
                isinstance(f, dict) and all(isinstance(d, str) for d in f.values())
                for f in models.values()
            ):
                raise ValueError("'models' is not {model: {family: digest}}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{self.path} is not a cell prompt record ({exc}); delete it and rerun: the "
                "cells of models with a prompt of their own are asked again (cached answers "
                "are reused)"
            ) from exc
        return {str(m): dict(f) for m, f in models.items()}

    def update(self, measured: Mapping[str, Mapping[str, str]]) -> None:
        """Record that `measured` ({model: {family: digest}}) cells were measured with those
        digests; other models and families keep theirs. A file is written only when it exists
        or some digest is not the default."""
        if not any(measured.values()):
            return
        record = self.read()
        for model, families in measured.items():
            record.setdefault(model, {}).update(families)
        if self.path is None:
            _IN_MEMORY[self._bank] = record
            return
        if not self.path.is_file() and not any(d for f in record.values() for d in f.values()):
            return
        text = json.dumps(
            {
                "about": "per model and family, the model prompt digest its capability cells "
                "were measured with (smcs_graph.models.prompts.prompt_digest); written by "
                "smcs profile",
                "models": {m: dict(sorted(f.items())) for m, f in sorted(record.items())},
            },
            indent=2,
        )
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def _default_path(bank: QuestionBank) -> Path | None:
    """``<bank folder>/<bank name>.prompts.json`` for a bank on disk; None for other banks."""
    where = Path(bank.where)
    if bank.where == "memory" or "://" in bank.where or not where.is_dir():
        return None
    return where / f"{bank.name}.prompts.json"


def stale_cells(
    bank: QuestionBank,
    pool: Pool,
    names: Sequence[str],
    ids: Sequence[str],
    measured: NDArray[np.bool_],
    recorded: Mapping[str, Mapping[str, str]],
) -> dict[str, list[str]]:
    """Per model (rows of `measured` follow `names`, columns `ids`), the measured cells whose
    family's recorded digest differs from the model's prompt now. Models without a prompt of
    their own and without a recorded one are not looked at (no bank read)."""
    looked = [
        (row, name)
        for row, name in enumerate(names)
        if _custom(pool, name) or any(recorded.get(name, {}).values())
    ]
    cells = {name: [ids[i] for i in measured[row].nonzero()[0]] for row, name in looked}
    wanted = sorted({i for found in cells.values() for i in found})
    family = {q.id: q.family for q in bank.get(wanted)} if wanted else {}
    stale: dict[str, list[str]] = {}
    for _, name in looked:
        now = digests(pool, name, {family[i] for i in cells[name]})
        then = recorded.get(name, {})
        stale[name] = [i for i in cells[name] if then.get(family[i], "") != now[family[i]]]
    return stale


def digests(pool: Pool, name: str, families: Iterable[str]) -> dict[str, str]:
    """The model's prompt digest per family."""
    member = pool[name]
    return {family: prompt_digest(member, family) for family in sorted(set(families))}


def measured_with(
    pool: Pool,
    todo: Mapping[str, Sequence[str]],
    families: Mapping[str, str],
    recorded: Collection[tuple[str, str]],
) -> tuple[Digests, Digests]:
    """Per model, the prompt digest of each family of the cells it was to do (`todo`, question
    ids; `families`: each one's family), and of those the families whose every cell is in
    `recorded` ((model, question id) graded in the run): what the record may take."""
    asked: Digests = {}
    complete: Digests = {}
    for name, pending in todo.items():
        by_family: dict[str, list[str]] = {}
        for id_ in pending:
            by_family.setdefault(families[id_], []).append(id_)
        asked[name] = digests(pool, name, by_family)
        complete[name] = {
            family: asked[name][family]
            for family, cells in by_family.items()
            if all((name, id_) in recorded for id_ in cells)
        }
    return asked, complete


def _custom(pool: Pool, name: str) -> bool:
    member = pool[name]
    return bool(member.system_prompt or member.templates)

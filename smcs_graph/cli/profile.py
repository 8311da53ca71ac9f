"""`smcs profile`: every pool model answers the bank questions it has no result for yet."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from smcs_graph.cli._common import add_bank_options, fail, open_bank
from smcs_graph.errors import BankError, ConfigError
from smcs_graph.offline.profiling import DEFAULT_CONCURRENCY


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "profile",
        help="have the pool's models answer the bank's questions; grade and record the results",
        description=(
            "Every model of --pool answers every question of --bank it has no recorded result "
            "for (a new model answers the whole bank; new questions are answered by every "
            "model). Answers are graded by their family's grader and written to the bank's "
            "capability matrix. Each response is committed to a cache file first: kill the run "
            "at any point and rerun the same command; it finishes without asking any model a "
            "question whose response was saved."
        ),
        epilog=(
            "Exit codes: 0 every question got a result; 1 some model kept failing or some "
            "answers could not be graded (named in the report; the others' results are kept, "
            "rerun to retry); 2 bad usage or configuration (pool file, bank embedder)."
        ),
    )
    parser.add_argument(
        "--pool", type=Path, required=True, metavar="FILE", help="pool file (YAML or JSON)"
    )
    add_bank_options(parser, bank_help="bank folder (built with `smcs bank build` or `import`)")
    parser.add_argument(
        "--models",
        default=None,
        metavar="A,B",
        help="comma-separated pool model names to profile (default: every pool model)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="PATH",
        help="response cache file (SQLite; default: <bank>.responses.sqlite beside the bank)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        metavar="N",
        help="calls in flight per model (default: the pool entry's max_concurrency, else "
        f"{DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="answer length limit in tokens of every family without --max-tokens-for "
        "(default: the pool file's smcs: settings, max_tokens and max_tokens_<family>, as "
        "the graph asks; its answer_recovery too)",
    )
    parser.add_argument(
        "--max-tokens-for",
        action="append",
        default=[],
        metavar="FAMILY=N",
        help="answer limit for one family, replacing --max-tokens there (repeatable), e.g. "
        "--max-tokens-for multiple_choice=64 --max-tokens-for code=384",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature (default: %(default)s, greedy)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed sent to the models (default: 0)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries of a call after a connection error, timeout, HTTP 5xx, 408 or 429 "
        "(never other 4xx) with exponential backoff and jitter (default: %(default)s)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="first retry delay; doubled at each retry (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="limit of one call; a timeout is retried (default: %(default)s)",
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=5,
        metavar="N",
        help="give a model up after N questions in a row failed after retries "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="N",
        help="graded results written to the bank per batch (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph.cli import EXIT_FAILED, EXIT_OK
    from smcs_graph.models.pool import read_pool_file
    from smcs_graph.offline.profiling import GenerationSettings, profile_pool

    try:
        pool_file = read_pool_file(args.pool)
        generation = GenerationSettings.from_settings(
            pool_file.settings, temperature=args.temperature, seed=args.seed
        )
        limits = {} if args.max_tokens is not None else dict(generation.family_max_tokens)
        limits.update(_family_limits(args.max_tokens_for))
        generation = dataclasses.replace(
            generation,
            max_tokens=generation.max_tokens if args.max_tokens is None else args.max_tokens,
            family_max_tokens=tuple(sorted(limits.items())),
        )
        pool = pool_file.pool()
        models = None
        if args.models is not None:
            models = [m.strip() for m in args.models.split(",") if m.strip()]
            if not models:
                raise ConfigError("--models is empty; name pool models, e.g. --models a,b")
        with open_bank(args, create=False) as bank:
            report = profile_pool(
                bank,
                pool,
                models=models,
                cache=args.cache,
                concurrency=args.concurrency,
                retries=args.retries,
                backoff_s=args.backoff,
                timeout_s=args.timeout,
                generation=generation,
                batch_size=args.batch_size,
                max_consecutive_failures=args.max_failures,
                progress=not args.no_progress,
            )
    except (BankError, ConfigError) as exc:
        return fail(exc)
    if args.json:
        payload = {
            "seconds": report.seconds,
            "cache": str(report.cache_path) if report.cache_path else None,
            "failed": report.failed,
            "skipped": report.skipped,
            "models": {name: vars(tally) for name, tally in report.models.items()},
        }
        print(json.dumps(payload, indent=2))
    else:
        print(report.summary())
    return EXIT_FAILED if report.failed else EXIT_OK


def _family_limits(items: list[str]) -> dict[str, int]:
    """`FAMILY=N` pairs of --max-tokens-for."""
    limits: dict[str, int] = {}
    for item in items:
        family, sep, value = item.partition("=")
        if not sep or not family.strip() or not value.strip().isdigit():
            raise ConfigError(f"--max-tokens-for expects FAMILY=N, got {item!r}")
        limits[family.strip()] = int(value)
    return limits

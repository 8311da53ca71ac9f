"""`smcs ask`: answer one question with SMCS and print what happened."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from smcs_graph.cli._common import add_bank_options, add_pool_options, fail, open_bank
from smcs_graph.errors import BankError, ConfigError, InvalidQuestionError, SMCSError

MAX_QUESTION_BYTES = 1_000_000
"""Largest question `smcs ask` reads from stdin or a file (a bound, not a model limit: the
pool's own context windows decide what fits)."""


def read_question(question: str | None, path: str | None) -> str:
    """The question from the argument, standard input (`-`) or `--question-file`."""
    if question is not None and path is not None:
        raise ConfigError("give the question as an argument or with --question-file, not both")
    if path is not None:
        source = f"question file {path}"
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_QUESTION_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from exc
    elif question == "-":
        source = "standard input"
        data = sys.stdin.buffer.read(MAX_QUESTION_BYTES + 1)
    elif question is None:
        raise ConfigError(
            "no question: give it as an argument, '-' to read standard input, "
            "or --question-file PATH"
        )
    else:
        return question
    if len(data) > MAX_QUESTION_BYTES:
        raise InvalidQuestionError(
            f"the question from {source} is over {MAX_QUESTION_BYTES:,} bytes; shorten it"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidQuestionError(
            f"the question from {source} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc


def _flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The SMCSConfig fields set by --collaborate, --max-calls, --max-cost and --deadline."""
    flags = {
        "collaboration": args.collaborate,
        "max_calls": args.max_calls,
        "max_cost": args.max_cost,
        "deadline_s": args.deadline,
    }
    return {name: value for name, value in flags.items() if value is not None}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "ask",
        help="answer a question with the pool and print a summary (or the full trace)",
        description="Answer QUESTION with SMCS over the pool in --pool and the bank in --bank. "
        "Without them: the embedded local pool (started on 127.0.0.1) and the default bank "
        "(built in the cache on first use). Progress goes to stderr; the answer and a summary "
        "of the run (or the full trace with --json) to stdout.",
    )
    parser.add_argument(
        "question",
        nargs="?",
        help="the question (use quotes); '-' reads it from standard input",
    )
    parser.add_argument(
        "--question-file",
        metavar="PATH",
        help="read the question from a UTF-8 text file (for long questions)",
    )
    add_pool_options(parser, default=True)
    add_bank_options(parser, bank_help="question bank folder (Chroma on disk)", default=True)
    adaptive = parser.add_argument_group("collaboration and budget (override the pool file)")
    adaptive.add_argument(
        "--collaborate",
        choices=["always", "adaptive"],
        help="'always': the full method (K references, n fusions); 'adaptive': the gates "
        "decide (the top model alone when confident); default: the pool file's setting",
    )
    adaptive.add_argument(
        "--max-calls", type=int, metavar="N", help="model calls planned at most (K + n)"
    )
    adaptive.add_argument(
        "--max-cost",
        type=float,
        metavar="COST",
        help="planned spend at most, in the pool's cost units (its per-Mtok prices)",
    )
    adaptive.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="answer by then with what arrived (a finished fusion, else the top reference)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print the full trace as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph import build_graph
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.cli._common import load_pool, run_settings
    from smcs_graph.cli._render import render_progress, render_trace
    from smcs_graph.graph import runnable_config
    from smcs_graph.nodes import cancel_calls_on_interrupt

    started = time.perf_counter()

    def say(text: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:5.1f}s] {text}", file=sys.stderr, flush=True)

    try:
        question = read_question(args.question, args.question_file)
        raw, settings = run_settings(args)
        settings = settings.replace(**_flag_settings(args))
        say("starting the pool's models" if args.pool is None else "loading the pool")
        pool = load_pool(args, raw)
        say(f"pool ready: {', '.join(pool.names)}; opening the bank")
        bank = open_bank(args, create=False)
        say(f"bank ready: {len(bank)} questions at {bank.where}")
        graph = build_graph(pool, bank, bank.embedder, settings).compile()
        final: dict[str, Any] = {}
        chunk: Any
        with cancel_calls_on_interrupt():  # one Ctrl-C ends the in-flight model calls at once
            for mode, chunk in graph.stream(
                {"question": question},
                runnable_config(settings),
                stream_mode=["custom", "values"],
            ):
                if mode == "custom":
                    say(render_progress(chunk).strip())
                else:
                    final = chunk
    except (SMCSError, BankError, ConfigError, InvalidQuestionError) as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(final["trace"], indent=2, default=str))
    else:
        print(render_trace(final["trace"], final["answer"]))
    return EXIT_OK

"""`smcs ask`: answer one question with SMCS and print what happened."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from smcs_graph.cli._common import add_bank_options, add_pool_options, fail, open_bank
from smcs_graph.errors import BankError, ConfigError, SMCSError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "ask",
        help="answer a question with the pool and print a summary (or the full trace)",
        description="Answer QUESTION with SMCS over the pool in --pool and the bank in --bank. "
        "Without them: the embedded local pool (started on 127.0.0.1) and the default bank "
        "(built in the cache on first use). Progress goes to stderr; the answer and a summary "
        "of the run (or the full trace with --json) to stdout.",
    )
    parser.add_argument("question", help="the question (use quotes)")
    add_pool_options(parser, default=True)
    add_bank_options(parser, bank_help="question bank folder (Chroma on disk)", default=True)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print the full trace as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph import build_graph
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.cli._common import load_pool, run_settings
    from smcs_graph.cli._render import render_progress, render_trace

    started = time.perf_counter()

    def say(text: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - started:5.1f}s] {text}", file=sys.stderr, flush=True)

    try:
        raw, config = run_settings(args)
        say("starting the pool's models" if args.pool is None else "loading the pool")
        pool = load_pool(args, raw)
        say(f"pool ready: {', '.join(pool.names)}; opening the bank")
        bank = open_bank(args, create=False)
        say(f"bank ready: {len(bank)} questions at {bank.where}")
        graph = build_graph(pool, bank, bank.embedder, config).compile()
        final: dict[str, Any] = {}
        chunk: Any
        for mode, chunk in graph.stream(
            {"question": args.question},
            {"max_concurrency": config.max_concurrency},
            stream_mode=["custom", "values"],
        ):
            if mode == "custom":
                say(render_progress(chunk).strip())
            else:
                final = chunk
    except (SMCSError, BankError, ConfigError) as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(final["trace"], indent=2, default=str))
    else:
        print(render_trace(final["trace"], final["answer"]))
    return EXIT_OK

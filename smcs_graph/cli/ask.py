"""`smcs ask`: answer one question with SMCS and print what happened."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from smcs_graph.cli._common import add_bank_options, add_pool_options, fail, open_bank
from smcs_graph.errors import BankError, SMCSError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "ask",
        help="answer a question with the pool and print a summary (or the full trace)",
        description="Answer QUESTION with SMCS over the pool in --pool and the bank in --bank.",
    )
    parser.add_argument("question", help="the question (use quotes)")
    add_pool_options(parser)
    add_bank_options(parser, bank_help="question bank folder (Chroma on disk)")
    parser.add_argument("--json", action="store_true", help="print the full trace as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph import build_graph
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.cli._common import load_pool, run_settings
    from smcs_graph.cli._render import render_trace

    raw, config = run_settings(args)
    pool = load_pool(args, raw)
    try:
        bank = open_bank(args, create=False)
        graph = build_graph(pool, bank, bank.embedder, config).compile()
        final: dict[str, Any] = {}
        chunk: Any
        for mode, chunk in graph.stream(
            {"question": args.question},
            {"max_concurrency": config.max_concurrency},
            stream_mode=["custom", "values"],
        ):
            if mode == "custom":
                print(f"... {chunk['stage']}", file=sys.stderr, flush=True)
            else:
                final = chunk
    except (SMCSError, BankError) as exc:
        return fail(exc)
    if args.json:
        print(json.dumps(final["trace"], indent=2, default=str))
    else:
        print(render_trace(final["trace"], final["answer"]))
    return EXIT_OK

"""`smcs ask`: answer one question with SMCS and print what happened."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smcs_graph.errors import BankError, ConfigError, SMCSError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "ask",
        help="answer a question with the pool and print a summary (or the full trace)",
        description="Answer QUESTION with SMCS over the pool in --pool and the bank in --bank.",
    )
    parser.add_argument("question", help="the question (use quotes)")
    parser.add_argument(
        "--pool",
        type=Path,
        required=True,
        help="pool file (YAML or JSON): the models, and optional 'smcs:' settings",
    )
    parser.add_argument(
        "--bank",
        type=Path,
        required=True,
        help="question bank folder (Chroma on disk), built with the default MiniLM embedder",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override an SMCSConfig field, e.g. --set k=3 --set seed=1 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print the full trace as JSON")
    parser.set_defaults(handler=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` pairs; values are parsed as JSON when they can be (numbers, true, null)."""
    out: dict[str, Any] = {}
    for item in items:
        field, sep, raw = item.partition("=")
        if not sep or not field:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            out[field.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[field.strip()] = raw
    return out


def run(args: argparse.Namespace) -> int:
    from smcs_graph import Pool, QuestionBank, SMCSConfig, build_graph
    from smcs_graph.cli import EXIT_FAILED, EXIT_OK
    from smcs_graph.cli._render import render_trace
    from smcs_graph.embedder import default_embedder
    from smcs_graph.pool import load_config_file

    raw = load_config_file(args.pool)
    pool = Pool.from_config(raw, source=str(args.pool))
    config = SMCSConfig.from_mapping({**(raw.get("smcs") or {}), **parse_overrides(args.set)})
    try:
        bank = QuestionBank.open(args.bank, default_embedder(), create=False)
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
        print(f"smcs: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(final["trace"], indent=2, default=str))
    else:
        print(render_trace(final["trace"], final["answer"]))
    return EXIT_OK

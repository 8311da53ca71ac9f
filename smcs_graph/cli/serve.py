"""`smcs serve`: the OpenAI-compatible HTTP server over SMCS (see smcs_graph/server/)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

from smcs_graph.cli._common import add_bank_options, add_pool_options, fail, open_bank
from smcs_graph.errors import BankError, ConfigError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve SMCS as an OpenAI-compatible HTTP API (/v1/chat/completions)",
        description=(
            "Serve SMCS over the pool in --pool and the bank in --bank as an OpenAI-compatible "
            "API: POST /v1/chat/completions (streaming too), GET /v1/models, GET /health. "
            "Binds 127.0.0.1 unless --host says otherwise; stop with Ctrl-C or SIGTERM "
            "(in-flight requests finish first)."
        ),
    )
    add_pool_options(parser, default=True)
    add_bank_options(parser, bank_help="question bank folder (Chroma on disk)", default=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="require 'Authorization: Bearer <key>', the key read from environment variable NAME",
    )
    auth.add_argument(
        "--api-key",
        help="require this bearer key (visible in the process list: prefer --api-key-env)",
    )
    parser.add_argument(
        "--model-name", default="smcs", help="the model id clients send (default 'smcs')"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=8, help="SMCS runs at once (default 8)"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="requests waiting for a run slot before new ones get 429 (default 64)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_048_576,
        help="largest request body accepted; larger ones get 413 (default 1 MiB)",
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help=(
            "cancel a run that has taken this long once it got a slot; its client gets 504 "
            "(default 600)"
        ),
    )
    caps = parser.add_argument_group(
        "per-request budget caps",
        "a request's 'smcs': {'max_calls', 'max_cost', 'deadline_s'} above a cap gets 400; a "
        "request without one runs at the pool file's value lowered to the cap",
    )
    caps.add_argument("--max-calls-cap", type=int, metavar="N", help="most model calls a run plans")
    caps.add_argument(
        "--max-cost-cap", type=float, metavar="COST", help="most a run plans to spend (pool units)"
    )
    caps.add_argument("--deadline-cap", type=float, metavar="SECONDS", help="longest deadline_s")
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=30,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, wait this long for in-flight requests (default 30)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default info)",
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="do not log one line per request"
    )
    parser.set_defaults(handler=run)


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ConfigError(
                f"--api-key-env {args.api_key_env}: that environment variable is not set or "
                "empty; export it, or drop --api-key-env to serve without auth"
            )
        return key
    return str(args.api_key) if args.api_key is not None else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from smcs_graph import SMCSChatModel
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.cli._common import load_pool, run_settings
    from smcs_graph.server import ServerSettings, create_app, run_server

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be a TCP port number (1-65535), got {args.port}")
    settings = ServerSettings(
        model_name=args.model_name,
        api_key=_api_key(args),
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        run_timeout_s=args.run_timeout,
        max_calls_cap=args.max_calls_cap,
        max_cost_cap=args.max_cost_cap,
        deadline_s_cap=args.deadline_cap,
    )
    raw, config = run_settings(args)
    pool = load_pool(args, raw)
    try:
        bank = open_bank(args, create=False)
    except (BankError, ConfigError) as exc:
        return fail(exc)
    if settings.api_key is None and not _is_loopback(args.host):
        print(
            f"smcs serve: warning: binding {args.host} without an API key: anyone who can reach "
            "this address can spend the pool's tokens (use --api-key-env)",
            file=sys.stderr,
        )
    model = SMCSChatModel(pool=pool, bank=bank, embedder=bank.embedder, config=config)
    print(
        f"smcs serve: model {settings.model_name!r} over pool {pool.names} at "
        f"http://{args.host}:{args.port}/v1 (auth {'on' if settings.api_key else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    try:
        run_server(
            create_app(model, settings),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=not args.no_access_log,
            shutdown_timeout_s=args.shutdown_timeout,
        )
    finally:
        bank.close()
    return EXIT_OK

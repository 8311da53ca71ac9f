"""The `smcs` command line: one module per subcommand, registered here.

Exit codes: 0 success, 1 the run failed (a model, the bank), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from smcs_graph.errors import ConfigError, InvalidQuestionError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Register = Callable[[argparse._SubParsersAction], None]


def _registrars() -> list[Register]:
    """Every public module of this package is a subcommand with a `register(commands)`."""
    import importlib
    import pkgutil

    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{__name__}.{name}").register for name in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smcs",
        description="SMCS: a pool of LLMs that answers better together (a LangGraph plugin).",
        epilog="Exit codes: 0 success, 1 the run failed, 2 bad usage or configuration.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ConfigError, InvalidQuestionError) as exc:
        print(f"smcs: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("smcs: interrupted", file=sys.stderr)
        return 130
    return code

"""`smcs calibrate`: choose the prior gate's threshold on the bank and write it to a pool file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from smcs_graph.errors import BankError, ConfigError


def register(commands: Any) -> None:
    from smcs_graph.cli._common import add_bank_options, add_pool_options

    parser = commands.add_parser(
        "calibrate",
        help="choose the adaptive gate's threshold on the bank for a calls or escalation target",
        description=(
            "Choose prior_gate_threshold on the bank alone so that the expected calls per question "
            "(--max-calls) or the share of escalated questions (--escalation-rate) meets the "
            "target with the pool file's K and n. Each bank question is held out (leave-one-out, "
            "or --folds F) and gets the top model and P(correct) the prior gate would give it "
            "on the bank without it: the run's prior_rule, any of paper/shrunk/hier/learned, "
            "and its Platt calibration refitted without it. The test split is never read. "
            "Prints a reliability table and the accuracy-vs-calls curve it expects, and writes "
            "collaboration: adaptive and the threshold into the pool file's smcs: section "
            "(or --out FILE). Calls no model."
        ),
    )
    add_pool_options(parser, default=True)
    add_bank_options(
        parser,
        bank_help="bank folder with the pool's recorded results (`smcs profile`)",
        default=True,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--max-calls",
        type=float,
        metavar="N",
        help="expected model calls per question at most (1 alone, K + n escalated)",
    )
    target.add_argument(
        "--escalation-rate",
        type=float,
        metavar="R",
        help="share of questions sent to the full method at most, in [0, 1]",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="write the settings into FILE's smcs: section (created as a copy of the pool "
        "file when missing) instead of the pool file; required for the embedded default",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=None,
        metavar="F",
        help="hold out F seeded folds of the bank, one rule fitted per fold; 0: leave-one-out, "
        "one fit per question (default: leave-one-out on banks of up to 2000 questions, "
        "else 10 folds; always 10 folds with prior_rule learned, whose fit is slow)",
    )
    parser.add_argument("--plot", type=Path, metavar="PATH", help="save the curve as a PNG")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the report, write no settings"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.cli._common import fail, open_bank, pool_file, run_settings
    from smcs_graph.offline.calibrate import (
        bank_held_out,
        choose_threshold,
        gate_settings,
        plot_curve,
        render_report,
        write_settings,
    )
    from smcs_graph.offline.calibrate.output import packaged

    try:
        parsed, settings = run_settings(args)
        target = args.out if args.out is not None else pool_file(args)
        if not args.dry_run and packaged(target):
            raise ConfigError(
                f"{target} ships inside the smcs_graph package (the embedded default's pool "
                "file): it is not edited; name a file for the settings with --out FILE (a copy "
                "of the pool file with them), or --dry-run"
            )
        bank = open_bank(args, create=False)
        try:
            held = bank_held_out(bank, parsed.model_names, settings, folds=args.folds)
        finally:
            bank.close()
        result = choose_threshold(
            held, max_calls=args.max_calls, escalation_rate=args.escalation_rate
        )
        print(render_report(result, bank=bank.name, pool=str(parsed.path)))
        if args.plot is not None:
            plot_curve(result, args.plot)
            print(f"curve: {args.plot}")
        if not args.dry_run:
            values = gate_settings(result)
            written = write_settings(Path(parsed.path), values, args.out)
            shown = ", ".join(f"{k}: {v}" for k, v in values.items())
            print(f"wrote {shown} into the smcs: section of {written}")
    except (BankError, ConfigError) as exc:
        return fail(exc)
    return EXIT_OK

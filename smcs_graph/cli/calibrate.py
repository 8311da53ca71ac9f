"""`smcs calibrate`: choose the prior gate's threshold on the bank (and, with --agreement, the
agreement gate's settings from the profiled replies) and write them to a pool file."""

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
            "(or --out FILE). With --agreement, also the agreement gate from the replies "
            "`smcs profile` cached beside the bank: each family's agreement among the top-K "
            "models' replies, agreement_similarity for the families without an answer "
            "extractor, and agreement_gate on only where it saves calls within the tolerance. "
            "Calls no model."
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
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        metavar="C",
        help="meet the target with this one-sided confidence on new questions like the bank's: "
        "the upper bound of the mean (mean + z standard errors) must meet it; 0.5: the bank's "
        "mean itself (default: %(default)s)",
    )
    parser.add_argument(
        "--rules",
        metavar="R,R",
        help="choose the gate's prior rule (gate_rule) among these (paper, shrunk, hier, "
        "learned, or 'all'): each is held out on the bank; of the rules within one paired "
        "standard error of the best accuracy of the model answering alone, the best "
        "calibrated. Selection keeps prior_rule (default: the run's gate_rule, else "
        "prior_rule)",
    )
    parser.add_argument("--plot", type=Path, metavar="PATH", help="save the curve as a PNG")
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="also calibrate the agreement gate from the profiled replies and write "
        "agreement_gate and agreement_similarity (default: the prior gate only; the agreement "
        "settings are left as they are)",
    )
    parser.add_argument(
        "--responses",
        type=Path,
        metavar="FILE",
        help="the response cache `smcs profile` wrote (default: <bank folder>.responses.sqlite "
        "beside the bank; for the default bank, the one `python -m smcs_graph.embedded "
        "profile` writes in the cache)",
    )
    parser.add_argument(
        "--agreement-tolerance",
        type=float,
        default=0.02,
        metavar="G",
        help="with --agreement: how much collaborating may still add (P(some top-K right) - "
        "P(top right)) on the questions that agree (default: %(default)s)",
    )
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
    from smcs_graph.offline.calibrate.agreement import check_tolerance
    from smcs_graph.offline.calibrate.choice import choose_rule, rule_table, with_followups
    from smcs_graph.offline.calibrate.output import packaged

    try:
        if args.agreement:
            check_tolerance(args.agreement_tolerance)
        parsed, settings = run_settings(args)
        target = args.out if args.out is not None else pool_file(args)
        if not args.dry_run and packaged(target):
            raise ConfigError(
                f"{target} ships inside the smcs_graph package (the embedded default's pool "
                "file): it is not edited; name a file for the settings with --out FILE (a copy "
                "of the pool file with them), or --dry-run"
            )
        rules = _rules(args.rules, settings)
        bank = open_bank(args, create=False)
        try:
            results = {}
            flags: dict[tuple[str, str], bool] | None = None
            snap = bank._snap()
            families = dict(zip(snap.ids, snap.families, strict=True))
            for rule in rules:
                ruled = settings.replace(gate_rule=rule)
                held = bank_held_out(bank, parsed.model_names, ruled, folds=args.folds)
                if flags is None:  # the referencers follow prior_rule: the same for every rule
                    flags = _followups(args, bank, held, parsed, settings, families)
                held = with_followups(held, flags, families, settings.aggregator)
                results[rule] = choose_threshold(
                    held,
                    max_calls=args.max_calls,
                    escalation_rate=args.escalation_rate,
                    confidence=args.confidence,
                )
            choice = choose_rule(results)
            if len(rules) > 1:
                print(rule_table(choice))
                print()
            result, held = choice.chosen, choice.chosen.held
            print(render_report(result, bank=bank.name, pool=str(parsed.path)))
            agreed = _agreement(args, bank, held, parsed, settings, result.threshold)
        finally:
            bank.close()
        if args.plot is not None:
            plot_curve(result, args.plot)
            print(f"curve: {args.plot}")
        if not args.dry_run:
            values = {**gate_settings(result), **agreed}
            written = write_settings(Path(parsed.path), values, args.out)
            shown = ", ".join(f"{k}: {v}" for k, v in values.items())
            print(f"wrote {shown} into the smcs: section of {written}")
    except (BankError, ConfigError) as exc:
        return fail(exc)
    return EXIT_OK


def _rules(text: str | None, settings: Any) -> list[str]:
    """--rules as a list of known rules (default: the run's gate rule)."""
    from smcs_graph.config import choices

    known = list(choices("prior_rule"))
    if text is None:
        return [settings.gate_rule or settings.prior_rule]
    wanted = known if text.strip() == "all" else [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in known]
    if unknown or not wanted:
        raise ConfigError(
            f"--rules {text!r}: unknown rule(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(known)}, or 'all'"
        )
    return list(dict.fromkeys(wanted))


def _followups(
    args: argparse.Namespace,
    bank: Any,
    held: Any,
    parsed: Any,
    settings: Any,
    families: dict[str, str],
) -> dict[tuple[str, str], bool]:
    """Whether each profiled reply of a held-out question's referencers needed a follow-up
    (empty: no profiled replies; `families`: each bank question's family, by id)."""
    from smcs_graph.offline.calibrate.agreement import profiled_replies
    from smcs_graph.offline.calibrate.choice import followup_flags

    path = _responses(args, bank)
    if path is None or not path.is_file():
        return {}
    wanted = dict(zip(held.question_ids, held.referencers, strict=True))
    entries = parsed.data["models"]
    replies = profiled_replies(path, bank.get(list(wanted)), entries, settings, wanted)
    return followup_flags(replies, families)


def _responses(args: argparse.Namespace, bank: Any) -> Path | None:
    """--responses, else where `smcs profile` caches the bank's replies (None: a bank not on
    disk)."""
    if args.responses is not None:
        return Path(args.responses)
    if args.bank is None:  # the default bank: `python -m smcs_graph.embedded profile`'s cache
        from smcs_graph.embedded.default_bank import DEFAULT_BANK_VERSION, default_cache_dir

        return default_cache_dir() / f"bank-v{DEFAULT_BANK_VERSION}.responses.sqlite"
    from smcs_graph.offline.profiling.settings import default_cache_path

    return default_cache_path(bank)


def _agreement(
    args: argparse.Namespace,
    bank: Any,
    held: Any,
    parsed: Any,
    settings: Any,
    prior_threshold: float,
) -> dict[str, Any]:
    """With --agreement, the agreement gate's report and settings; else a note (no settings)."""
    from smcs_graph.offline.calibrate import (
        agreement_settings,
        bank_agreement_evidence,
        choose_similarity,
        cross_validated,
        render_agreement,
    )

    path = _responses(args, bank)
    found = path is not None and path.is_file()
    print()
    if held.k < 2 or held.n == 0:
        print(
            f"Agreement gate: not calibrated: K = {held.k}, n = {held.n} (it compares two "
            "references or more and skips fusions; raise k or n_aggregations)"
        )
        return {}
    if not args.agreement:
        where = f"the profiled replies in {path}" if found else "the replies `smcs profile` caches"
        print(f"Agreement gate: not calibrated (--agreement calibrates it from {where})")
        return {}
    if not found:
        print(
            "Agreement gate: not calibrated, agreement_gate and agreement_similarity left as "
            f"they are: no profiled replies at {path or 'a bank not on disk'}. Profile the pool "
            "on the bank first (`smcs profile` caches every reply beside the bank; for the "
            "default bank, python -m smcs_graph.embedded profile), or name the cache with "
            "--responses FILE"
        )
        return {}
    assert path is not None
    evidence = bank_agreement_evidence(bank, held, parsed.data["models"], settings, path)
    if not evidence.question_ids:
        print(
            "Agreement gate: not calibrated, agreement_gate and agreement_similarity left as "
            f"they are: {path} holds no reply of every top-K model for any held-out bank "
            "question under the pool file's current settings (prompts, token limits, recovery; "
            "greedy, seed 0). Profile the pool on the bank again with these settings"
        )
        return {}
    result = choose_similarity(
        evidence,
        tolerance=args.agreement_tolerance,
        prior_threshold=prior_threshold,
        current=settings.agreement_similarity,
    )
    held_out = cross_validated(evidence, tolerance=args.agreement_tolerance)
    print(
        render_agreement(
            result, source=str(path), held_questions=len(held.question_ids), held_out=held_out
        )
    )
    return agreement_settings(result)

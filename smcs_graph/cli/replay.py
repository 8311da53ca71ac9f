"""`smcs replay`: evaluate prior selection on recorded correctness, without any LLM call."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, get_args

from smcs_graph.config import PriorRule, SupportRule
from smcs_graph.errors import BankError, ConfigError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from exc


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "replay",
        help="score prior selection (RPS and baselines) on recorded correctness, no LLM calls",
        description=(
            "Replay evaluation of prior selection. The questions are split into a bank and a "
            "held-out test set (a stratified share of each category, one split per seed); every "
            "method ranks the models for each test question from the bank alone, and is scored "
            "on the recorded correctness: top-1 routing accuracy, top-K coverage (at least one "
            "of the K top-ranked models correct) and the pairwise ranking score (eq. 8). "
            "Methods: RPS with the paper's rule, RPS with the shrunk and hier rules (tuned on the "
            "bank by leave-one-out; hier infers each test question's category from its bank "
            "neighbours), RPS with the learned rule (a per-model logistic model on the "
            "embeddings blended with hier, tuned on the bank by cross-validation), the best "
            "single model on the bank, a per-category router (told each test question's "
            "category; ties broken by bank-wide accuracy, then pool order), random selection "
            "(expected value) and the oracle. Each rule's P(correct) is Platt-calibrated on "
            "held-out bank questions and its expected calibration error reported; every rule "
            "is compared, split by split, with the router and the paper's RPS. "
            "Models without a record on a test question are ranked out, never counted wrong. "
            "Input: --questions and --matrix (default: MMLU-Pro from $SMCS_BENCHMARKS_DIR), or "
            "--bank."
        ),
    )
    source = parser.add_argument_group("input (files, or a bank)")
    source.add_argument(
        "--questions",
        type=Path,
        help="question file, the one `smcs bank import` reads: a records JSONL (one JSON object "
        "per line: id, family, question; optional choices, answer, tests, entry_point, "
        "constraints, category, source), a benchmark file, or question_id, question, category, "
        "options rows; recognised from its fields. A question's category is its category if "
        "set, else its family. Default mmlu_pro.jsonl in $SMCS_BENCHMARKS_DIR (or "
        "<repo>/../shared/benchmarks)",
    )
    source.add_argument(
        "--matrix",
        type=Path,
        help="correctness CSV: a question id column, then one column per model with 1, 0 or "
        "empty (no record); default mmlu_pro_correctness_29_models.csv beside the default "
        "questions",
    )
    source.add_argument(
        "--id-column",
        default=None,
        metavar="COL",
        help="matrix column holding question ids (default: question_id if present, else the "
        "first column); ids match the question file's full ids (e.g. mmlu_pro/70) or its own "
        "ids (70), whichever matches more rows",
    )
    source.add_argument(
        "--bank",
        type=Path,
        help="a question bank folder (Chroma on disk, e.g. built by `smcs bank import`) instead "
        "of files: its stored embeddings, categories (the category if set, else the family) "
        "and capability matrix",
    )
    source.add_argument(
        "--name", dest="bank_name", default=None, help="collection name inside --bank"
    )
    source.add_argument(
        "--bank-name", dest="bank_name", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    source.add_argument(
        "--exclude-model",
        action="append",
        default=[],
        metavar="NAME",
        help="leave a model out of the pool (repeatable)",
    )
    source.add_argument(
        "--text",
        choices=("question", "question+options"),
        default="question",
        help="what is embedded for retrieval with files: the question alone (default) or the "
        "question followed by its lettered options",
    )
    source.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache folder (default $SMCS_EMBEDDING_CACHE or "
        "~/.cache/smcs-graph/embeddings); the MiniLM embeddings are computed once",
    )
    split = parser.add_argument_group("splits and settings")
    split.add_argument("--seeds", type=int, default=10, help="number of seeded splits (0..N-1)")
    split.add_argument(
        "--seed",
        type=int,
        default=None,
        help="run only the split of this seed (overrides --seeds), e.g. to rerun one split",
    )
    split.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of each category held out for testing (default 0.1)",
    )
    split.add_argument(
        "--n-sup-base", type=int, default=400, help="paper rule's N_sup_base (default 400)"
    )
    split.add_argument("--gamma", type=float, default=0.95, help="support slack (default 0.95)")
    split.add_argument(
        "--support-rule",
        choices=get_args(SupportRule),
        default="paper",
        help="eq. 3 as in the paper ('>=' the N-th largest) or the authors' code",
    )
    split.add_argument(
        "--rule",
        choices=(*get_args(PriorRule), "both", "all"),
        default="all",
        help="RPS prior rule(s) to score: the paper's eq. 4, the shrunk rule, the hier rule, "
        "the learned rule, both paper and shrunk, or all (default)",
    )
    split.add_argument(
        "--sweep-n-sup-base",
        type=_ints,
        default=(50, 100, 200, 400, 800),
        metavar="N,N,...",
        help="N_sup_base values of the paper-rule sweep (default 50,100,200,400,800)",
    )
    split.add_argument(
        "--sweep-gamma",
        type=_floats,
        default=(0.9, 0.95, 1.0),
        metavar="G,G,...",
        help="gamma values of the paper-rule sweep (default 0.9,0.95,1.0)",
    )
    split.add_argument(
        "--calibration-queries",
        type=int,
        default=2000,
        help="bank questions used as leave-one-out queries to tune the shrunk rule",
    )
    split.add_argument(
        "--hier-calibration-queries",
        type=int,
        default=20000,
        help="bank questions used as leave-one-out queries to tune the hier rule (default "
        "20000: the whole bank on MMLU-Pro)",
    )
    split.add_argument(
        "--learned-rank-grid",
        type=_ints,
        default=None,
        metavar="K,K,...",
        help="question-map ranks the learned rule's cross-validation searches (default "
        "4,8,16,32,64)",
    )
    split.add_argument(
        "--learned-penalty-grid",
        type=_floats,
        default=None,
        metavar="A,A,...",
        help="L2 penalties the learned rule's cross-validation searches (default "
        "1,10,100,1000,10000)",
    )
    stream = parser.add_argument_group(
        "stream (--stream): learning from partial feedback",
        "Simulate a stream instead of one split: per seed a held-out set (--test-fraction), an "
        "initial bank (--initial-fraction of each category, every model's cells), and the rest "
        "arriving in a seeded order; each question is routed from the current bank (--rule: "
        "paper, shrunk or hier), the top-1's recorded correctness is scored, then the bank "
        "gains the question with the cells the mode reveals: static (none), chosen (the "
        "top-1's), top-k (the K top-ranked), full (all), explore / explore-top-k (chosen / "
        "top-k ranked by an upper-confidence bonus c*sqrt(log n_support / (1 + n_labels)); c "
        "chosen on the initial bank unless --explore-c). Unrevealed cells are masked, never "
        "wrong. --seeds, --n-sup-base, --gamma, --support-rule, --json and --markdown apply.",
    )
    stream.add_argument("--stream", action="store_true", help="run the stream replay")
    stream.add_argument(
        "--modes",
        default="static,chosen,top-k,full,explore",
        metavar="M,M,...",
        help="modes to compare (default static,chosen,top-k,full,explore; also explore-top-k)",
    )
    stream.add_argument(
        "--initial-fraction",
        type=float,
        default=0.05,
        help="share of each category in the initial bank (default 0.05)",
    )
    stream.add_argument("--k", type=int, default=7, help="models asked in top-k modes (default 7)")
    stream.add_argument(
        "--window", type=int, default=1000, help="questions per accuracy window (default 1000)"
    )
    stream.add_argument(
        "--explore-c", type=float, default=None, help="fix the UCB weight c (default: chosen)"
    )
    stream.add_argument(
        "--limit", type=int, default=None, help="stream at most this many questions per seed"
    )
    stream.add_argument("--plot", type=Path, help="write the stream plot as a PNG")
    output = parser.add_argument_group("output")
    output.add_argument("--json", type=Path, help="write the full report (per seed) as JSON")
    output.add_argument("--markdown", type=Path, help="write the tables as Markdown")
    output.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smcs_graph.cli import EXIT_FAILED, EXIT_OK
    from smcs_graph.offline.evaluation import (
        ReplaySettings,
        render_json,
        render_markdown,
        render_text,
        run_replay,
    )

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    grids: dict[str, Any] = {}
    if args.learned_rank_grid is not None:
        grids["learned_rank_grid"] = args.learned_rank_grid
    if args.learned_penalty_grid is not None:
        grids["learned_penalty_grid"] = args.learned_penalty_grid
    named: dict[str, tuple[PriorRule, ...]] = {
        "both": ("paper", "shrunk"),
        "all": get_args(PriorRule),
    }
    rules = named.get(args.rule, (args.rule,))
    try:
        settings = ReplaySettings(
            rules=rules,
            seeds=(args.seed,) if args.seed is not None else tuple(range(args.seeds)),
            test_fraction=args.test_fraction,
            n_sup_base=args.n_sup_base,
            gamma=args.gamma,
            support_rule=args.support_rule,
            sweep_n_sup_base=args.sweep_n_sup_base,
            sweep_gamma=args.sweep_gamma,
            calibration_queries=args.calibration_queries,
            hier_calibration_queries=args.hier_calibration_queries,
            **grids,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        data, embeddings = _load(args)
    except BankError as exc:
        print(f"smcs: error: {exc}", file=sys.stderr)
        return EXIT_FAILED

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    if args.stream:
        return _run_stream(args, data, embeddings, progress)

    report = run_replay(
        embeddings,
        data.capability,
        data.measured,
        data.categories,
        data.models,
        settings,
        progress=progress,
    )
    print(render_text(report))
    _write_reports(
        args, lambda command: render_markdown(report, command), lambda m: render_json(report, m)
    )
    return EXIT_OK


def _write_reports(args: argparse.Namespace, markdown: Any, json_: Any) -> None:
    """`--markdown` and `--json` files, each given the command line that made them."""
    command = "smcs replay " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else None
    if args.markdown is not None:
        _write(args.markdown, markdown(command))
    if args.json is not None:
        _write(args.json, json_({"command": command, "text": args.text}))


def _run_stream(args: argparse.Namespace, data: Any, embeddings: Any, progress: Any) -> int:
    """`--stream`: the stream replay's table on stdout, JSON, Markdown and plot on request."""
    from smcs_graph.cli import EXIT_OK
    from smcs_graph.offline.evaluation.stream import StreamSettings, run_stream
    from smcs_graph.offline.evaluation.stream_report import (
        render_stream_json,
        render_stream_markdown,
        render_stream_text,
        stream_plot,
    )

    rule = "paper" if args.rule == "all" else args.rule
    try:
        settings = StreamSettings(
            rule=rule,
            modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
            seeds=(args.seed,) if args.seed is not None else tuple(range(args.seeds)),
            initial_fraction=args.initial_fraction,
            held_out_fraction=args.test_fraction,
            k=args.k,
            window=args.window,
            n_sup_base=args.n_sup_base,
            gamma=args.gamma,
            support_rule=args.support_rule,
            explore_c=args.explore_c,
            limit=args.limit,
        )
    except ValueError as exc:
        raise ConfigError(f"--stream: {exc}") from exc
    report = run_stream(
        embeddings,
        data.capability,
        data.measured,
        data.categories,
        data.models,
        settings,
        progress=progress,
    )
    print(render_stream_text(report))
    _write_reports(
        args,
        lambda command: render_stream_markdown(report, command),
        lambda m: render_stream_json(report, m),
    )
    if args.plot is not None:
        try:
            stream_plot(report, args.plot)
        except OSError as exc:
            raise ConfigError(f"cannot write {args.plot}: {exc}; choose a writable path") from exc
    return EXIT_OK


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}; choose a writable path") from exc


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """The replay data and its embeddings, from files or from a bank, models excluded."""
    import numpy as np

    from smcs_graph.embedder import default_embedder
    from smcs_graph.offline.evaluation import (
        ReplayData,
        benchmarks_dir,
        cached_embeddings,
        load_replay_data,
        replay_data_from_bank,
    )

    if args.bank is not None:
        if args.questions is not None or args.matrix is not None:
            raise ConfigError("give either --bank or --questions/--matrix, not both")
        from smcs_graph.bank.store import DEFAULT_NAME, QuestionBank

        bank = QuestionBank.open(
            args.bank, default_embedder(), name=args.bank_name or DEFAULT_NAME, create=False
        )
        data, embeddings = replay_data_from_bank(bank)
    else:
        if args.bank_name is not None:
            raise ConfigError("--name applies to --bank only")
        folder = benchmarks_dir()
        questions = args.questions or folder / "mmlu_pro.jsonl"
        matrix = args.matrix or folder / "mmlu_pro_correctness_29_models.csv"
        data = load_replay_data(questions, matrix, id_column=args.id_column)
        embeddings = cached_embeddings(default_embedder(), data.texts(args.text), args.cache_dir)
    unknown = sorted(set(args.exclude_model) - set(data.models))
    if unknown:
        raise ConfigError(
            f"--exclude-model names unknown model(s) {', '.join(unknown)}; models: "
            + ", ".join(data.models)
        )
    keep = [i for i, m in enumerate(data.models) if m not in set(args.exclude_model)]
    if len(keep) < 2:
        raise ConfigError("a replay needs at least two models; exclude fewer")
    if len(keep) < len(data.models):
        data = ReplayData(
            question_ids=data.question_ids,
            questions=data.questions,
            categories=data.categories,
            models=[data.models[i] for i in keep],
            capability=data.capability[keep],
            measured=data.measured[keep],
            options=data.options,
        )
    return data, np.asarray(embeddings)

"""`smcs eval`: does SMCS beat its parts? Every method answers every held-out question, graded.

The methods (`METHODS`) and what each one is: `smcs_graph.offline.evaluation.methods`.

Calls go through the cached pool (`smcs_graph.offline.evaluation.calls`, over the offline jobs'
response cache): a request that two methods share is made once, and a rerun replays it. Results
are committed per (method, question) as they come (`ResultStore`); a rerun skips those stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smcs_graph.answers import PROMPT_VERSION
from smcs_graph.bank.store import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError
from smcs_graph.grading import get_grader
from smcs_graph.models.pool import Pool, PoolModel
from smcs_graph.offline._sync import synchronous
from smcs_graph.offline.cache import ResponseCache
from smcs_graph.offline.evaluation.calls import CachedChatModel
from smcs_graph.offline.evaluation.methods import METHODS, MethodRunner, QuestionJob, adaptive_row
from smcs_graph.offline.evaluation.results import ANY_VALUE, MethodResult, ResultStore
from smcs_graph.offline.evaluation.standings import BankStandings, bank_standings
from smcs_graph.offline.evaluation.voting import EXTRACTABLE, answer_key, majority_vote, rescore
from smcs_graph.questions import QuestionRecord

__all__ = [
    "DEFAULT_CONCURRENCY",
    "METHODS",
    "BankStandings",
    "EvalOptions",
    "EvalRun",
    "aevaluate",
    "answer_key",
    "bank_standings",
    "evaluate",
    "expand_methods",
    "majority_vote",
    "rescore",
]


DEFAULT_CONCURRENCY = 2
"""Questions evaluated at once (each runs all its methods concurrently)."""

MODEL_CONCURRENCY = 4
"""Uncached calls in flight per model when its pool entry sets no max_concurrency."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how (the SMCS settings themselves are the SMCSConfig)."""

    methods: tuple[str, ...] = tuple(METHODS)
    samples: int | None = None
    """K of Self-MoA and majority voting (default: the config's k)."""
    scaling: tuple[int, ...] = ()
    """Sub-pool sizes r for `smcs@r` (the first r pool models); the full pool is `smcs`."""
    thresholds: tuple[float, ...] = ()
    """Prior-gate thresholds T for `smcs-adaptive@T` rows (the adaptive curve)."""
    concurrency: int = DEFAULT_CONCURRENCY
    limit: int | None = None
    """Evaluate the first N test questions only."""
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(
                f"unknown method(s) {unknown or '(none given)'}; choose from: " + ", ".join(METHODS)
            )
        for name, value in (
            ("samples", self.samples),
            ("concurrency", self.concurrency),
            ("limit", self.limit),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1 (got {value!r})")
        bad = [r for r in self.scaling if not isinstance(r, int) or r < 1]
        if bad:
            raise ConfigError(f"scaling sizes must be integers >= 1 (got {bad})")
        off = [t for t in self.thresholds if not (isinstance(t, int | float) and 0 <= t <= 1)]
        if off:
            raise ConfigError(
                f"thresholds are prior-gate P(correct) levels between 0 and 1 (got {off}); "
                "give e.g. 0.5,0.6,0.7,0.8,0.9"
            )


def expand_methods(
    methods: Sequence[str],
    pool_names: Sequence[str],
    scaling: Sequence[int],
    thresholds: Sequence[float] = (),
) -> list[str]:
    """Result rows the methods give: `single` -> `single:<model>` each; sizes -> `smcs@r`;
    thresholds -> `smcs-adaptive@T`, after `smcs-adaptive` when it is asked for."""
    rows: list[str] = []
    curve = [adaptive_row(t) for t in sorted(set(thresholds))]
    for method in methods:
        if method == "single":
            rows.extend(f"single:{name}" for name in pool_names)
        elif method == "smcs-adaptive":
            rows.extend([method, *curve])
        else:
            rows.append(method)
    rows.extend(curve)
    rows.extend(f"smcs@{r}" for r in sorted(set(scaling)) if r < len(pool_names))
    return list(dict.fromkeys(rows))


# --------------------------------------------------------------------------- the run


@dataclass
class EvalRun:
    """What an evaluation produced: every stored result, and what the run itself did."""

    records: list[QuestionRecord]
    rows: list[str]
    """Result rows that were asked for, in table order."""
    results: list[MethodResult]
    failures: dict[tuple[str, str], str]
    standings: BankStandings
    pool: list[str]
    config: SMCSConfig
    samples: int
    seconds: float
    calls_made: int
    cache_hits: int
    notes: list[str] = field(default_factory=list)


def _checked_records(records: Sequence[QuestionRecord], bank: QuestionBank) -> list[QuestionRecord]:
    if not records:
        raise ConfigError("the test file holds no question; give a non-empty --test file")
    missing_grader: set[str] = set()
    for family in {r.family for r in records}:
        try:
            get_grader(family)
        except KeyError:
            missing_grader.add(family)
    if missing_grader:
        raise ConfigError(
            f"no grader for test question family(ies) {sorted(missing_grader)}: fix the "
            "records' family, or register a grader (smcs_graph.grading.register_grader)"
        )
    no_gold = [r.id for r in records if r.family in EXTRACTABLE and r.answer is None]
    if no_gold:
        raise ConfigError(
            f"test questions without a gold 'answer' cannot be graded: {no_gold[:5]}; add "
            "their answers or leave them out of the test file"
        )
    leaked = sorted({r.id for r in records} & set(bank.question_ids()))
    if leaked:
        raise ConfigError(
            f"{len(leaked)} test question(s) are also in the bank (e.g. {leaked[:3]}): held-out "
            "questions must not be in the bank; use the test split written by `smcs bank build`"
        )
    return list(records)


def _wrapped_pool(pool: Pool, cache: ResponseCache) -> Pool:
    """The pool with each model behind the call cache (concurrency enforced by the wrapper)."""
    return Pool(
        [
            PoolModel(
                name=member.name,
                chat_model=CachedChatModel(
                    inner=member.chat_model,
                    model_id=member.name,
                    store=cache,
                    max_concurrency=member.max_concurrency or MODEL_CONCURRENCY,
                ),
                logprobs=member.logprobs,
                input_cost_per_mtok=member.input_cost_per_mtok,
                output_cost_per_mtok=member.output_cost_per_mtok,
                sampling_kwargs=member.sampling_kwargs,
            )
            for member in pool
        ]
    )


_RESUMABLE_WITH_CHANGES = {
    "max_concurrency",
    "min_referencers",
    "referencer_timeout_s",
    "aggregation_timeout_s",
}


def _run_settings(
    config: SMCSConfig, pool: Pool, bank: QuestionBank, standings: BankStandings, samples: int
) -> dict[str, Any]:
    """What results depend on: a folder's stored results are reused only under the same.

    Limits that decide only whether a call fails (timeouts, quorum, concurrency) may change.
    """
    settings = {
        f"config.{name}": value
        for name, value in dataclasses.asdict(config).items()
        if name not in _RESUMABLE_WITH_CHANGES
    }
    return {
        **settings,
        "prompt_version": PROMPT_VERSION,
        "samples": samples,
        "pool": pool.names,
        "bank": {"name": bank.name, "size": len(bank), "coverage": bank.coverage()},
        "best_single": standings.best,
    }


_GATES = (
    "collaboration",
    "prior_gate_threshold",
    "min_collaboration_gain",
    "agreement_gate",
    "agreement_similarity",
)


def _absent_settings() -> dict[str, Any]:
    """What a setting newer than an evaluation folder meant before it existed: the behaviour
    of its default, except answer recovery (off) and the prompts (version 1); the gates only
    change `smcs-adaptive` rows, which such a folder cannot hold."""
    defaults = {
        f"config.{f.name}": f.default
        for f in dataclasses.fields(SMCSConfig)
        if f.default is not dataclasses.MISSING
    }
    return {
        **defaults,
        **{f"config.{name}": ANY_VALUE for name in _GATES},
        "config.answer_recovery": False,
        "prompt_version": 1,
    }


async def aevaluate(
    pool: Pool,
    bank: QuestionBank,
    records: Sequence[QuestionRecord],
    config: SMCSConfig,
    out: str | Path | None,
    *,
    cache: ResponseCache | str | Path | None = None,
    options: EvalOptions | None = None,
) -> EvalRun:
    """Evaluate `options.methods` on the test `records`; results go to `out`/results.sqlite.

    `out=None` keeps results in memory (not resumable). `cache`: a ResponseCache, a file path, or
    None for `out`/calls.sqlite (in memory when `out` is None). A config without a seed gets
    seed 0, so that the run (prior drop, random selection) can be repeated. The circuit breaker
    is off (`breaker_cooldown_s=0`): one transient failure must not change which models later
    questions get, or a rerun would differ.
    """
    started = time.monotonic()
    options = options or EvalOptions()
    notes: list[str] = []
    if config.seed is None:
        config = config.replace(seed=0)
        notes.append("the config sets no seed: seed 0 was used, so that reruns are identical")
    config = config.replace(breaker_cooldown_s=0)
    if config.collaboration == "adaptive" or config.agreement_gate:
        notes.append(
            "the run's settings turn gates on: `smcs` (and the methods built on it) runs the "
            "paper's method, always collaborating; `smcs-adaptive` runs the run's gates"
        )
    if config.temperature == 0 and {"self-moa", "majority"} & set(options.methods):
        notes.append("temperature 0: the K samples of self-moa and majority may all be alike")
    if config.aggregator is not None and config.aggregator not in pool:
        raise ConfigError(f"aggregator {config.aggregator!r} is not in the pool {pool.names}")
    records = _checked_records(list(records)[: options.limit], bank)
    samples = options.samples or config.k
    out_dir = None if out is None else Path(out).expanduser()
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"--out {out_dir} is a file; give a folder for the results")
        out_dir.mkdir(parents=True, exist_ok=True)
    owned_cache = not isinstance(cache, ResponseCache)
    if isinstance(cache, ResponseCache):
        call_cache = cache
    else:
        default = None if out_dir is None else out_dir / "calls.sqlite"
        call_cache = ResponseCache(cache if cache is not None else default)
    store = ResultStore(None if out_dir is None else out_dir / "results.sqlite")
    try:
        await asyncio.to_thread(bank.refresh)
        standings = await asyncio.to_thread(bank_standings, bank, pool.names)
        if standings.unmeasured:
            notes.append(
                "no bank result for " + ", ".join(standings.unmeasured) + ": never chosen as "
                "best single model or by the router"
            )
        store.check_settings(
            _run_settings(config, pool, bank, standings, samples), _absent_settings()
        )
        evaluation = MethodRunner(
            _wrapped_pool(pool, call_cache), bank, config, standings, store, call_cache, samples
        )
        rows = expand_methods(options.methods, pool.names, options.scaling, options.thresholds)
        evaluation.rows = set(rows)
        todo = sum(1 for r in records for row in rows if store.get(row, r.id) is None)
        if options.progress and todo:
            from tqdm.auto import tqdm

            evaluation.bar = tqdm(
                total=todo, unit="result", file=sys.stderr, dynamic_ncols=True, desc="smcs eval"
            )
        gate = asyncio.Semaphore(options.concurrency)

        async def one(record: QuestionRecord) -> None:
            async with gate:
                await QuestionJob(evaluation, record).run(rows)

        try:
            await asyncio.gather(*(one(record) for record in records))
        finally:
            evaluation.close()
            if evaluation.bar is not None:
                evaluation.bar.close()
        wanted = {r.id for r in records}
        return EvalRun(
            records=list(records),
            rows=rows,
            results=[r for r in store.results() if r.question_id in wanted],
            failures={
                key: error
                for key, error in store.failures().items()
                if key[1] in wanted and key[0] in rows
            },
            standings=standings,
            pool=pool.names,
            config=config,
            samples=samples,
            seconds=time.monotonic() - started,
            calls_made=call_cache.calls,
            cache_hits=call_cache.hits,
            notes=notes,
        )
    finally:
        store.close()
        if owned_cache:
            call_cache.close()


evaluate = synchronous(aevaluate)
"""`aevaluate` for synchronous callers (runs its own event loop)."""

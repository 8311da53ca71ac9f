"""`smcs eval`: does SMCS beat its parts? Every method answers every held-out question, graded.

Methods (`METHODS`), each on the same test questions, graded by the family graders:

- `smcs`: the SMCS graph with the run's `SMCSConfig`.
- `single`: each pool model alone, one row `single:<model>` per model. The request is the one a
  referencer sends, so these answers are the SMCS referencers' answers (one call each).
- `best-single`: the model with the highest accuracy on the bank (its `single` answers).
- `router`: per question, the model with the highest bank accuracy on the question's category,
  else on its family, else overall (its `single` answers).
- `random-k` (the paper's "no RPS" ablation): SMCS with retrieval-based selection replaced by
  K referencers drawn at random (seeded per question); the aggregator is the configured one, else
  the first drawn; prior drop is uniform (every prior is equal), aggregation and scoring as SMCS.
- `moa`: Mixture-of-Agents: every pool model answers, one aggregation of all the answers by the
  configured aggregator, else by the best bank model.
- `self-moa`: the best bank model sampled K times (K = `samples`, default the config's k) at the
  run's temperature, the samples aggregated once by the same model.
- `majority` (self-consistency): majority vote over the same K samples of the best model.
- `vote-all`: majority vote over every pool model's single answer (ties: the better bank model).
  Votes count answers the family grader extracts (multiple-choice letters, numbers, math
  answers, the latter grouped by math-verify equivalence); on other families both votes are
  "not applicable" and the question is left out of their accuracy.
- ablations of the paper, each switched off in turn against `smcs`:
  `no-similarity` and `no-perplexity` re-score the candidates of the same SMCS run (perplexity
  alone, and similarity alone i.e. lambda = 0) and grade the one they choose: no model call;
  `no-prior-drop` runs the graph with k_drop = 0 (every aggregation sees all K references).
  "No RPS" is `random-k`.
- `smcs@r` (with `scaling`): SMCS on the sub-pool of the first r pool models (nested).

Calls go through the evaluation's call cache (`smcs_graph.evaluation.calls`): a request that two
methods share is made once, and a rerun replays it. Results are committed per (method, question)
as they come (`ResultStore`); a rerun skips those already stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from langchain_core.messages import HumanMessage

from smcs_graph._input import message_text
from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError, SMCSError
from smcs_graph.evaluation.calls import CachedChatModel, CallCache, call_scope
from smcs_graph.evaluation.results import MethodResult, ResultStore
from smcs_graph.graders import Verdict, get_grader, grade
from smcs_graph.graph import build_graph
from smcs_graph.nodes._common import acall_model
from smcs_graph.pool import Pool, PoolModel
from smcs_graph.questions import QuestionRecord, prompt_for

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

METHODS: dict[str, str] = {
    "smcs": "SMCS (the graph with the run's settings)",
    "single": "each pool model alone (one row per model)",
    "best-single": "the model with the highest accuracy on the bank",
    "router": "best bank model for the question's category, else family, else overall",
    "random-k": "K random referencers, same aggregation and scoring (SMCS without RPS)",
    "moa": "Mixture-of-Agents: every model answers, one aggregation",
    "self-moa": "Self-MoA: the best model sampled K times, aggregated by itself",
    "majority": "self-consistency: majority vote over the best model's K samples",
    "vote-all": "majority vote over every pool model's answer",
    "no-similarity": "ablation: SMCS candidates scored by perplexity alone (no new call)",
    "no-perplexity": "ablation: SMCS candidates scored by similarity alone, lambda=0 (no call)",
    "no-prior-drop": "ablation: k_drop=0, every aggregation sees all K references",
}
"""Method names (as given to `--methods`) and what each one is."""

DEFAULT_CONCURRENCY = 2
"""Questions evaluated at once (each runs all its methods concurrently)."""

MODEL_CONCURRENCY = 4
"""Uncached calls in flight per model when its pool entry sets no max_concurrency."""

EXTRACTABLE = ("multiple_choice", "numeric", "math")
"""Families whose graders extract a final answer that votes can count."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


class MethodFailed(Exception):
    """A method produced no graded answer for a question (the message says why)."""


# --------------------------------------------------------------------------- bank standings


@dataclass(frozen=True)
class BankStandings:
    """What the bank split says of each pool model: accuracy overall and per category/family."""

    order: list[str]
    """Pool models with bank results, best first (ties: pool order)."""
    accuracy: dict[str, float]
    by_group: dict[str, dict[str, float]]
    """'category:X' or 'family:Y' -> model -> accuracy on those bank questions."""
    unmeasured: list[str]
    """Pool models without any bank result (never chosen by best-single or the router)."""

    @property
    def best(self) -> str:
        return self.order[0]

    def route(self, record: QuestionRecord) -> tuple[str, str]:
        """(model, group): the best model of the record's category, else family, else overall."""
        groups = [f"category:{record.category}"] if record.category else []
        groups.append(f"family:{record.family}")
        rank = {name: i for i, name in enumerate(self.order)}
        for group in groups:
            scores = self.by_group.get(group)
            if scores:
                return min(scores, key=lambda m: (-scores[m], rank[m])), group
        return self.best, "overall"


def bank_standings(bank: QuestionBank, models: Sequence[str]) -> BankStandings:
    """Accuracy of each model over its measured bank questions, overall and per group."""
    import numpy as np

    ids = bank.question_ids()
    capability, measured = bank.capability(list(models))
    questions = bank.get(ids) if ids else []
    groups: dict[str, list[int]] = {}
    for column, question in enumerate(questions):
        if question.category:
            groups.setdefault(f"category:{question.category}", []).append(column)
        groups.setdefault(f"family:{question.family}", []).append(column)

    def accuracies(columns: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for row, name in enumerate(models):
            mask = measured[row, columns]
            if mask.any():
                out[name] = float(capability[row, columns][mask].mean())
        return out

    accuracy = accuracies(np.arange(len(ids)))
    if not accuracy:
        raise ConfigError(
            f"the bank has no recorded result for any pool model ({', '.join(models)}): "
            "profile the pool on the bank first (`smcs profile --pool FILE --bank PATH`)"
        )
    pool_rank = {name: i for i, name in enumerate(models)}
    order = sorted(accuracy, key=lambda m: (-accuracy[m], pool_rank[m]))
    by_group = {group: accuracies(np.asarray(cols)) for group, cols in groups.items()}
    return BankStandings(
        order=order,
        accuracy=accuracy,
        by_group={g: scores for g, scores in by_group.items() if scores},
        unmeasured=[m for m in models if m not in accuracy],
    )


# --------------------------------------------------------------------------- voting


def answer_key(family: str, extracted: str | None) -> str | None:
    """What a vote counts for an extracted answer: a normalized form; None abstains."""
    if extracted is None or not extracted.strip() or family not in EXTRACTABLE:
        return None
    if family == "multiple_choice":
        return extracted.strip().upper()
    if family == "numeric":
        from smcs_graph.graders.numeric import parse_number

        value = parse_number(extracted)
        return None if value is None else repr(value)
    text = extracted.strip().rstrip(".").strip("$ ")
    for noise in (" ", "\\left", "\\right", "\\!", "\\,", "\\displaystyle"):
        text = text.replace(noise, "")
    return text or None


def _math_equivalent(a: str, b: str) -> bool:
    from math_verify import parse, verify

    left = parse("\\boxed{" + a + "}", parsing_timeout=None)
    right = parse("\\boxed{" + b + "}", parsing_timeout=None)
    return bool(left and right and verify(left, right, timeout_seconds=None))


def majority_vote(family: str, verdicts: Sequence[Verdict]) -> int | None:
    """Index of the answer that wins the vote: the first sample of the largest group of equal
    answers (ties: the group that appears first); None when no sample has an answer to count.

    Math answers are grouped by math-verify equivalence, the others by their `answer_key`.
    """
    groups: list[tuple[str, list[int]]] = []
    for index, verdict in enumerate(verdicts):
        key = answer_key(family, verdict.extracted)
        if key is None:
            continue
        for representative, members in groups:
            same = key == representative or (
                family == "math" and _math_equivalent(representative, key)
            )
            if same:
                members.append(index)
                break
        else:
            groups.append((key, [index]))
    if not groups:
        return None
    largest = max(len(members) for _, members in groups)
    return next(members[0] for _, members in groups if len(members) == largest)


def rescore(candidates: Sequence[Mapping[str, Any]], *, without: str) -> int | None:
    """Position of the candidate the hybrid score (eq. 7) picks with one term switched off.

    `candidates` are a trace's (`similarity`, `perplexity`; a null perplexity is infinite).
    without="similarity": S = 1 - PPL (None when no candidate has a perplexity);
    without="perplexity": S = S_sim (lambda = 0). Ties: the first, as in the graph.
    """
    if without == "similarity":
        if all(c["perplexity"] is None for c in candidates):
            return None
        scores = [
            -math.inf if c["perplexity"] is None else 1.0 - float(c["perplexity"])
            for c in candidates
        ]
    elif without == "perplexity":
        scores = [float(c["similarity"]) for c in candidates]
    else:
        raise ValueError(f"without must be 'similarity' or 'perplexity', got {without!r}")
    best = max(scores)
    return scores.index(best)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how (the SMCS settings themselves are the SMCSConfig)."""

    methods: tuple[str, ...] = tuple(METHODS)
    samples: int | None = None
    """K of Self-MoA and majority voting (default: the config's k)."""
    scaling: tuple[int, ...] = ()
    """Sub-pool sizes r for `smcs@r` (the first r pool models); the full pool is `smcs`."""
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


def expand_methods(
    methods: Sequence[str], pool_names: Sequence[str], scaling: Sequence[int]
) -> list[str]:
    """Result rows the methods give: `single` -> `single:<model>` each; sizes -> `smcs@r`."""
    rows: list[str] = []
    for method in methods:
        if method == "single":
            rows.extend(f"single:{name}" for name in pool_names)
        else:
            rows.append(method)
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
            "records' family, or register a grader (smcs_graph.graders.register_grader)"
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


def _wrapped_pool(pool: Pool, cache: CallCache) -> Pool:
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


def _usage(calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "input_tokens": sum(int(c["input_tokens"]) for c in calls),
        "output_tokens": sum(int(c["output_tokens"]) for c in calls),
        "cost": round(sum(float(c["cost"]) for c in calls), 10),
        "calls": len(calls),
    }


class _Evaluation:
    """One evaluation: the services, the bank's standings, and the per-method recipes."""

    def __init__(
        self,
        pool: Pool,
        bank: QuestionBank,
        config: SMCSConfig,
        standings: BankStandings,
        store: ResultStore,
        cache: CallCache,
        samples: int,
    ) -> None:
        self.pool, self.bank, self.config = pool, bank, config
        self.standings, self.store, self.cache, self.samples = standings, store, cache, samples
        self.embedder = bank.embedder
        self._empty_bank: QuestionBank | None = None
        self._graphs: dict[str, Any] = {}
        self.bar: Any = None
        self.rows: set[str] = set()

    # ---- helpers

    def close(self) -> None:
        if self._empty_bank is not None:
            self._empty_bank.close()

    @property
    def empty_bank(self) -> QuestionBank:
        """A bank without questions: every prior is 0, so pool order picks the referencers."""
        if self._empty_bank is None:
            self._empty_bank = QuestionBank.in_memory(self.embedder)
        return self._empty_bank

    def graph(self, label: str, pool: Pool, bank: QuestionBank) -> Any:
        if label not in self._graphs:
            self._graphs[label] = build_graph(pool, bank, self.embedder, self.config).compile()
        return self._graphs[label]

    async def grade(self, record: QuestionRecord, text: str) -> Verdict:
        try:
            return await asyncio.to_thread(grade, record, text)
        except Exception as exc:
            raise MethodFailed(f"grader raised {type(exc).__name__}: {exc}") from exc

    def result(
        self,
        method: str,
        record: QuestionRecord,
        answer: str,
        verdict: Verdict | None,
        usage: Mapping[str, Any],
        detail: Mapping[str, Any],
        correct: bool | None = None,
    ) -> MethodResult:
        return MethodResult(
            method=method,
            question_id=record.id,
            family=record.family,
            category=record.category,
            correct=verdict.correct if verdict is not None and correct is None else correct,
            answer=answer,
            extracted=verdict.extracted if verdict is not None else None,
            input_tokens=int(usage["input_tokens"]),
            output_tokens=int(usage["output_tokens"]),
            cost=float(usage["cost"]),
            calls=int(usage["calls"]),
            detail=dict(detail),
        )

    async def run_graph(
        self, method: str, record: QuestionRecord, graph: Any, config: SMCSConfig
    ) -> MethodResult:
        try:
            with call_scope(f"{method}:{record.id}"):
                out = await graph.ainvoke(
                    {"messages": [HumanMessage(prompt_for(record))]},
                    {"max_concurrency": config.max_concurrency},
                    context=config,
                )
        except SMCSError as exc:
            raise MethodFailed(str(exc)) from exc
        trace = out["trace"]
        verdict = await self.grade(record, out["answer"])
        detail = {
            "referencers": trace["referencers"],
            "aggregator": trace["aggregator"],
            "perplexity_available": trace["perplexity_available"],
            "failures": [f"{f['stage']} {f['model']}: {f['error']}" for f in trace["failures"]],
            "candidates": [
                {key: c[key] for key in ("index", "subset", "text", "similarity", "perplexity")}
                for c in trace["candidates"]
            ],
            "chosen": trace["chosen"],
        }
        return self.result(method, record, out["answer"], verdict, _usage(trace["calls"]), detail)

    async def sample(self, model: str, record: QuestionRecord, stage: str) -> tuple[str, Any]:
        """One answer of `model` to the record's prompt, as a referencer would be asked."""
        member = self.pool[model]
        outcome = await acall_model(
            stage,
            member,
            0,
            [HumanMessage(prompt_for(record))],
            member.call_kwargs(self.config),
            self.config.referencer_timeout_s,
            None,
        )
        if outcome.failure is not None or outcome.message is None:
            error = outcome.failure["error"] if outcome.failure else "no message"
            raise MethodFailed(f"{model}: {error}")
        return message_text(outcome.message), outcome.record

    # ---- methods that call models

    async def single(self, job: _Job, model: str) -> MethodResult:
        with call_scope(f"single:{model}:{job.record.id}"):
            text, call = await self.sample(model, job.record, "single")
        verdict = await self.grade(job.record, text)
        return self.result(
            f"single:{model}", job.record, text, verdict, _usage([call]), {"model": model}
        )

    async def smcs(self, job: _Job) -> MethodResult:
        graph = self.graph("smcs", self.pool, self.bank)
        return await self.run_graph("smcs", job.record, graph, self.config)

    async def smcs_subpool(self, job: _Job, size: int) -> MethodResult:
        subpool = Pool([self.pool[name] for name in self.pool.names[:size]])
        graph = self.graph(f"smcs@{size}", subpool, self.bank)
        return await self.run_graph(f"smcs@{size}", job.record, graph, self.config)

    async def no_prior_drop(self, job: _Job) -> MethodResult:
        graph = self.graph("smcs", self.pool, self.bank)
        config = self.config.replace(k_drop=0)
        return await self.run_graph("no-prior-drop", job.record, graph, config)

    async def random_k(self, job: _Job) -> MethodResult:
        names = self.pool.names
        k = min(self.config.k, len(names))
        seed = self.config.seed if self.config.seed is not None else 0
        drawn = random.Random(f"{seed}:{job.record.id}").sample(names, k)
        aggregator = self.config.aggregator
        # With no bank evidence every prior is 0: the drawn order picks referencers and the
        # (unset) aggregator; a configured aggregator joins last, so it is not a referencer.
        members = drawn + ([aggregator] if aggregator and aggregator not in drawn else [])
        subpool = Pool([self.pool[name] for name in members])
        graph = build_graph(subpool, self.empty_bank, self.embedder, self.config).compile()
        return await self.run_graph("random-k", job.record, graph, self.config.replace(k=k))

    async def moa(self, job: _Job) -> MethodResult:
        graph = self.graph("moa", self.pool, self.empty_bank)
        config = self.config.replace(
            k=len(self.pool),
            n_aggregations=1,
            k_drop=0,
            aggregator=self.config.aggregator or self.standings.best,
        )
        return await self.run_graph("moa", job.record, graph, config)

    async def self_moa(self, job: _Job) -> MethodResult:
        best = self.pool[self.standings.best]
        aliases = [
            dataclasses.replace(best, name=best.name if i == 0 else f"{best.name}#{i + 1}")
            for i in range(self.samples)
        ]
        graph = self.graph("self-moa", Pool(aliases), self.empty_bank)
        config = self.config.replace(
            k=self.samples, n_aggregations=1, k_drop=0, aggregator=best.name
        )
        return await self.run_graph("self-moa", job.record, graph, config)

    async def majority(self, job: _Job) -> MethodResult:
        best = self.standings.best
        with call_scope(f"majority:{job.record.id}"):
            samples = await asyncio.gather(
                *(self.sample(best, job.record, "sample") for _ in range(self.samples))
            )
        texts = [text for text, _ in samples]
        return await self.vote(
            "majority", job, texts, [call for _, call in samples], [best] * len(texts)
        )

    async def vote(
        self,
        method: str,
        job: _Job,
        texts: Sequence[str],
        calls: Sequence[Mapping[str, Any]],
        models: Sequence[str],
    ) -> MethodResult:
        record = job.record
        verdicts = list(await asyncio.gather(*(self.grade(record, t) for t in texts)))
        detail: dict[str, Any] = {
            "models": list(models),
            "votes": [v.extracted for v in verdicts],
        }
        if record.family not in EXTRACTABLE:
            detail["why"] = f"family {record.family!r} has no extractable answer to vote on"
            return self.result(method, record, "", None, _usage(calls), detail, correct=None)
        winner = await asyncio.to_thread(majority_vote, record.family, verdicts)
        chosen = 0 if winner is None else winner
        detail["winner"] = winner
        return self.result(method, record, texts[chosen], verdicts[chosen], _usage(calls), detail)

    # ---- methods derived from other results (no model call)

    async def best_single(self, job: _Job) -> MethodResult:
        base = await job.get(f"single:{self.standings.best}")
        return dataclasses.replace(base, method="best-single")

    async def router(self, job: _Job) -> MethodResult:
        model, group = self.standings.route(job.record)
        base = await job.get(f"single:{model}")
        return dataclasses.replace(base, method="router", detail={"model": model, "group": group})

    async def vote_all(self, job: _Job) -> MethodResult:
        order = self.standings.order + self.standings.unmeasured
        singles = await asyncio.gather(*(job.get(f"single:{name}") for name in order))
        calls = [
            {k: getattr(s, k) for k in ("input_tokens", "output_tokens", "cost")} for s in singles
        ]
        result = await self.vote("vote-all", job, [s.answer for s in singles], calls, order)
        return dataclasses.replace(result, calls=sum(s.calls for s in singles))

    async def rescored(self, job: _Job, method: str) -> MethodResult:
        base = await job.get("smcs")
        candidates = base.detail["candidates"]
        chosen = rescore(candidates, without=method.removeprefix("no-"))
        if chosen is None:
            detail = {"why": "the aggregator returned no logprobs: no perplexity to score by"}
            return dataclasses.replace(
                base, method=method, correct=None, answer="", extracted=None, detail=detail
            )
        text = candidates[chosen]["text"]
        if candidates[chosen]["index"] == base.detail["chosen"]:
            verdict = Verdict(correct=bool(base.correct), extracted=base.extracted)
        else:
            verdict = await self.grade(job.record, text)
        return dataclasses.replace(
            base,
            method=method,
            correct=verdict.correct,
            answer=text,
            extracted=verdict.extracted,
            detail={"chosen": candidates[chosen]["index"], "smcs_chosen": base.detail["chosen"]},
        )

    def recipe(self, row: str) -> Callable[[_Job], Awaitable[MethodResult]]:
        if row.startswith("single:"):
            return functools.partial(self.single, model=row.partition(":")[2])
        if row.startswith("smcs@"):
            return functools.partial(self.smcs_subpool, size=int(row.partition("@")[2]))
        if row in ("no-similarity", "no-perplexity"):
            return functools.partial(self.rescored, method=row)
        recipes: dict[str, Callable[[_Job], Awaitable[MethodResult]]] = {
            "smcs": self.smcs,
            "best-single": self.best_single,
            "router": self.router,
            "random-k": self.random_k,
            "moa": self.moa,
            "self-moa": self.self_moa,
            "majority": self.majority,
            "vote-all": self.vote_all,
            "no-prior-drop": self.no_prior_drop,
        }
        return recipes[row]


class _Job:
    """All methods on one question: each result computed once, from the store when it can."""

    def __init__(self, evaluation: _Evaluation, record: QuestionRecord) -> None:
        self.evaluation = evaluation
        self.record = record
        self._tasks: dict[str, asyncio.Task[MethodResult]] = {}

    def get(self, row: str) -> asyncio.Task[MethodResult]:
        if row not in self._tasks:
            self._tasks[row] = asyncio.ensure_future(self._resolve(row))
        return self._tasks[row]

    async def _resolve(self, row: str) -> MethodResult:
        ev = self.evaluation
        stored = ev.store.get(row, self.record.id)
        if stored is not None:
            return stored
        try:
            result = await ev.recipe(row)(self)
        except MethodFailed as exc:
            ev.store.fail(row, self.record.id, str(exc))
            raise
        except Exception as exc:  # one failing method must not stop the others
            ev.store.fail(row, self.record.id, f"{type(exc).__name__}: {exc}")
            raise MethodFailed(f"{row}: {type(exc).__name__}: {exc}") from exc
        finally:
            if ev.bar is not None and row in ev.rows:
                ev.bar.set_postfix(calls=ev.cache.calls, cached=ev.cache.hits, refresh=False)
                ev.bar.update(1)
        ev.store.put(result)
        return result

    async def run(self, rows: Sequence[str]) -> None:
        await asyncio.gather(*(self.get(row) for row in rows), return_exceptions=True)


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
        "samples": samples,
        "pool": pool.names,
        "bank": {"name": bank.name, "size": len(bank), "coverage": bank.coverage()},
        "best_single": standings.best,
    }


async def aevaluate(
    pool: Pool,
    bank: QuestionBank,
    records: Sequence[QuestionRecord],
    config: SMCSConfig,
    out: str | Path | None,
    *,
    cache: CallCache | str | Path | None = None,
    options: EvalOptions | None = None,
) -> EvalRun:
    """Evaluate `options.methods` on the test `records`; results go to `out`/results.sqlite.

    `out=None` keeps results in memory (not resumable). `cache`: a CallCache, a file path, or
    None for `out`/calls.sqlite (in memory when `out` is None). A config without a seed gets
    seed 0, so that the run (prior drop, random selection) can be repeated.
    """
    started = time.monotonic()
    options = options or EvalOptions()
    notes: list[str] = []
    if config.seed is None:
        config = config.replace(seed=0)
        notes.append("the config sets no seed: seed 0 was used, so that reruns are identical")
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
    owned_cache = not isinstance(cache, CallCache)
    if isinstance(cache, CallCache):
        call_cache = cache
    else:
        default = None if out_dir is None else out_dir / "calls.sqlite"
        call_cache = CallCache(cache if cache is not None else default)
    store = ResultStore(None if out_dir is None else out_dir / "results.sqlite")
    try:
        await asyncio.to_thread(bank.refresh)
        standings = await asyncio.to_thread(bank_standings, bank, pool.names)
        if standings.unmeasured:
            notes.append(
                "no bank result for " + ", ".join(standings.unmeasured) + ": never chosen as "
                "best single model or by the router"
            )
        store.check_settings(_run_settings(config, pool, bank, standings, samples))
        evaluation = _Evaluation(
            _wrapped_pool(pool, call_cache), bank, config, standings, store, call_cache, samples
        )
        rows = expand_methods(options.methods, pool.names, options.scaling)
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
                await _Job(evaluation, record).run(rows)

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


def _synchronous(run: Callable[_P, Awaitable[_T]]) -> Callable[_P, _T]:
    @functools.wraps(run)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(run(*args, **kwargs))  # type: ignore[arg-type]
        raise RuntimeError("evaluate() was called inside a running event loop; await aevaluate()")

    return wrapper


evaluate = _synchronous(aevaluate)
"""`aevaluate` for synchronous callers (runs its own event loop)."""

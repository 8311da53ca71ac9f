"""The methods of `smcs eval`, each on one question (`MethodRunner`), and the job that gets each
result of one question once (`QuestionJob`).

Methods (`METHODS`), each on the same test questions, graded by the family graders:

- `smcs`: the SMCS graph with the run's `SMCSConfig`, always collaborating (the paper's method:
  `collaboration="always"`, no agreement gate, whatever the run's gates are).
- `smcs-adaptive`: SMCS with the run's gates (`collaboration="adaptive"`, the run's
  `prior_gate_threshold`, agreement gate, ...: the calibrated ones when the pool file holds
  them); `smcs-adaptive@T` (with `thresholds`): the same at prior-gate threshold T, a curve.
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
- `oracle`: right when any pool model's single answer is right (an upper bound, no call of its
  own; it answers with the best-ranked right answer).
  Votes count answers the family grader extracts (multiple-choice letters, numbers, math
  answers, the latter grouped by math-verify equivalence); on other families both votes are
  "not applicable" and the question is left out of their accuracy.
- ablations of the paper, each switched off in turn against `smcs`:
  `no-similarity` and `no-perplexity` re-score the candidates of the same SMCS run (perplexity
  alone, and similarity alone i.e. lambda = 0) and grade the one they choose: no model call;
  `no-prior-drop` runs the graph with k_drop = 0 (every aggregation sees all K references).
  "No RPS" is `random-k`.
- `smcs@r` (with `scaling`): SMCS on the sub-pool of the first r pool models (nested).

Each result is computed once per question: methods derived from others (`best-single`,
`router`, `vote-all`, the rescoring ablations) await those results. Calls go through the
evaluation's cached pool (`smcs_graph.offline.evaluation.calls`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import HumanMessage

from smcs_graph._input import message_text
from smcs_graph.bank.store import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.errors import SMCSError
from smcs_graph.grading import Verdict, grade
from smcs_graph.graph import build_graph
from smcs_graph.models.pool import Pool
from smcs_graph.nodes._common import acall_model, answer_call
from smcs_graph.offline.cache import ResponseCache
from smcs_graph.offline.evaluation.callpath import (
    Chain,
    answer_chain,
    chains,
    critical_path,
    no_final_answer,
)
from smcs_graph.offline.evaluation.calls import call_scope
from smcs_graph.offline.evaluation.results import MethodResult, ResultStore
from smcs_graph.offline.evaluation.standings import BankStandings
from smcs_graph.offline.evaluation.voting import EXTRACTABLE, majority_vote, rescore
from smcs_graph.questions import QuestionRecord, prompt_for

__all__ = ["METHODS", "MethodFailed", "MethodRunner", "QuestionJob", "adaptive_row"]

METHODS: dict[str, str] = {
    "smcs": "SMCS (the graph with the run's settings, always collaborating)",
    "smcs-adaptive": "SMCS with the run's gates (collaboration='adaptive'); @T rows: --thresholds",
    "single": "each pool model alone (one row per model)",
    "best-single": "the model with the highest accuracy on the bank",
    "router": "best bank model for the question's category, else family, else overall",
    "random-k": "K random referencers, same aggregation and scoring (SMCS without RPS)",
    "moa": "Mixture-of-Agents: every model answers, one aggregation",
    "self-moa": "Self-MoA: the best model sampled K times, aggregated by itself",
    "majority": "self-consistency: majority vote over the best model's K samples",
    "vote-all": "majority vote over every pool model's answer",
    "oracle": "upper bound: right when any pool model's single answer is right (no call)",
    "no-similarity": "ablation: SMCS candidates scored by perplexity alone (no new call)",
    "no-perplexity": "ablation: SMCS candidates scored by similarity alone, lambda=0 (no call)",
    "no-prior-drop": "ablation: k_drop=0, every aggregation sees all K references",
}
"""Method names (as given to `--methods`) and what each one is."""


def adaptive_row(threshold: float) -> str:
    """The result row of adaptive SMCS at prior-gate threshold `threshold`."""
    return f"smcs-adaptive@{threshold:g}"


def _hit(replies: Sequence[Chain], text: str) -> bool | None:
    """Whether the reply that wrote `text` hit its token limit (None: no call wrote it)."""
    reply = answer_chain(replies, text)
    return None if reply is None else reply.hit_limit


def _parallel(results: Sequence[MethodResult]) -> float | None:
    """Wall time of results whose calls run side by side: the slowest (None: one unknown)."""
    seconds = [r.seconds for r in results]
    return None if not seconds or None in seconds else max(s for s in seconds if s is not None)


class MethodFailed(Exception):
    """A method produced no graded answer for a question (the message says why)."""


def _usage(calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "input_tokens": sum(int(c["input_tokens"]) for c in calls),
        "output_tokens": sum(int(c["output_tokens"]) for c in calls),
        "cost": round(sum(float(c["cost"]) for c in calls), 10),
        "calls": len(calls),
    }


class MethodRunner:
    """One evaluation: the services, the bank's standings, and the per-method recipes."""

    def __init__(
        self,
        pool: Pool,
        bank: QuestionBank,
        config: SMCSConfig,
        standings: BankStandings,
        store: ResultStore,
        cache: ResponseCache,
        samples: int,
    ) -> None:
        self.pool, self.bank = pool, bank
        # `smcs` and the methods built on it are the paper's, whatever the run's gates;
        # `smcs-adaptive` runs the run's gates.
        self.config = config.replace(collaboration="always", agreement_gate=False)
        self.adaptive_config = config.replace(collaboration="adaptive")
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
            self._graphs[label] = build_graph(
                pool, bank, self.embedder, self.config, runs=False
            ).compile()
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
        *,
        seconds: float | None = None,
        hit_limit: bool | None = None,
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
            seconds=seconds,
            hit_limit=hit_limit,
            no_final_answer=no_final_answer(record.family, answer),
        )

    async def run_graph(
        self, method: str, record: QuestionRecord, graph: Any, config: SMCSConfig
    ) -> MethodResult:
        try:
            with call_scope(f"{method}:{record.id}") as scope:
                out = await graph.ainvoke(
                    {"messages": [HumanMessage(prompt_for(record))]},
                    {"max_concurrency": config.max_concurrency},
                    context=config,
                )
        except SMCSError as exc:
            raise MethodFailed(str(exc)) from exc
        trace = out["trace"]
        verdict = await self.grade(record, out["answer"])
        replies = chains(scope.log)
        detail = {
            "referencers": trace["referencers"],
            "aggregator": trace["aggregator"],
            "perplexity_available": trace["perplexity_available"],
            "failures": [f"{f['stage']} {f['model']}: {f['error']}" for f in trace["failures"]],
            "candidates": [
                {
                    **{k: c[k] for k in ("index", "subset", "text", "similarity", "perplexity")},
                    "hit_limit": _hit(replies, c["text"]),
                }
                for c in trace["candidates"]
            ],
            "chosen": trace["chosen"],
            "recoveries": trace["recoveries"],
        }
        return self.result(
            method,
            record,
            out["answer"],
            verdict,
            _usage(trace["calls"]),
            detail,
            seconds=critical_path(replies),
            hit_limit=_hit(replies, out["answer"]),
        )

    async def sample(self, model: str, record: QuestionRecord, stage: str) -> tuple[str, list[Any]]:
        """One answer of `model` to the record's prompt, as a referencer would be asked (its
        family's token limit and recovery), and its calls (a recovery follow-up is one)."""
        member = self.pool[model]
        outcome = await acall_model(
            answer_call(
                stage,
                member,
                0,
                [HumanMessage(prompt_for(record))],
                self.config,
                self.config.referencer_timeout_s,
                None,
            )
        )
        if outcome.failure is not None or outcome.message is None:
            error = outcome.failure["error"] if outcome.failure else "no message"
            raise MethodFailed(f"{model}: {error}")
        return message_text(outcome.message), outcome.records

    # ---- methods that call models

    async def single(self, job: QuestionJob, model: str) -> MethodResult:
        with call_scope(f"single:{model}:{job.record.id}") as scope:
            text, calls = await self.sample(model, job.record, "single")
        verdict = await self.grade(job.record, text)
        limits = {key: calls[0].get(key) for key in ("hit_limit", "recovered")}
        replies = chains(scope.log)
        hit = limits["hit_limit"]
        return self.result(
            f"single:{model}",
            job.record,
            text,
            verdict,
            _usage(calls),
            {"model": model, **limits},
            seconds=critical_path(replies),
            hit_limit=hit if isinstance(hit, bool) else _hit(replies, text),
        )

    async def smcs(self, job: QuestionJob) -> MethodResult:
        graph = self.graph("smcs", self.pool, self.bank)
        return await self.run_graph("smcs", job.record, graph, self.config)

    async def smcs_adaptive(self, job: QuestionJob, threshold: float | None = None) -> MethodResult:
        graph = self.graph("smcs", self.pool, self.bank)
        config = self.adaptive_config
        method = "smcs-adaptive"
        if threshold is not None:
            config = config.replace(prior_gate_threshold=threshold)
            method = adaptive_row(threshold)
        return await self.run_graph(method, job.record, graph, config)

    async def smcs_subpool(self, job: QuestionJob, size: int) -> MethodResult:
        subpool = Pool([self.pool[name] for name in self.pool.names[:size]])
        graph = self.graph(f"smcs@{size}", subpool, self.bank)
        return await self.run_graph(f"smcs@{size}", job.record, graph, self.config)

    async def no_prior_drop(self, job: QuestionJob) -> MethodResult:
        graph = self.graph("smcs", self.pool, self.bank)
        config = self.config.replace(k_drop=0)
        return await self.run_graph("no-prior-drop", job.record, graph, config)

    async def random_k(self, job: QuestionJob) -> MethodResult:
        names = self.pool.names
        k = min(self.config.k, len(names))
        seed = self.config.seed if self.config.seed is not None else 0
        drawn = random.Random(f"{seed}:{job.record.id}").sample(names, k)
        aggregator = self.config.aggregator
        # With no bank evidence every prior is 0: the drawn order picks referencers and the
        # (unset) aggregator; a configured aggregator joins last, so it is not a referencer.
        members = drawn + ([aggregator] if aggregator and aggregator not in drawn else [])
        subpool = Pool([self.pool[name] for name in members])
        graph = build_graph(
            subpool, self.empty_bank, self.embedder, self.config, runs=False
        ).compile()
        return await self.run_graph("random-k", job.record, graph, self.config.replace(k=k))

    async def moa(self, job: QuestionJob) -> MethodResult:
        graph = self.graph("moa", self.pool, self.empty_bank)
        config = self.config.replace(
            k=len(self.pool),
            n_aggregations=1,
            k_drop=0,
            aggregator=self.config.aggregator or self.standings.best,
        )
        return await self.run_graph("moa", job.record, graph, config)

    async def self_moa(self, job: QuestionJob) -> MethodResult:
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

    async def majority(self, job: QuestionJob) -> MethodResult:
        best = self.standings.best
        with call_scope(f"majority:{job.record.id}") as scope:
            samples = await asyncio.gather(
                *(self.sample(best, job.record, "sample") for _ in range(self.samples))
            )
        texts = [text for text, _ in samples]
        calls = [call for _, made in samples for call in made]
        hits = [made[0].get("hit_limit") for _, made in samples]
        seconds = critical_path(chains(scope.log))
        return await self.vote(
            "majority", job, texts, calls, [best] * len(texts), hits=hits, seconds=seconds
        )

    async def vote(
        self,
        method: str,
        job: QuestionJob,
        texts: Sequence[str],
        calls: Sequence[Mapping[str, Any]],
        models: Sequence[str],
        *,
        hits: Sequence[bool | None] = (),
        seconds: float | None = None,
    ) -> MethodResult:
        """The majority answer among `texts` (`hits`: whether each reply hit its limit)."""
        record = job.record
        verdicts = list(await asyncio.gather(*(self.grade(record, t) for t in texts)))
        detail: dict[str, Any] = {
            "models": list(models),
            "votes": [v.extracted for v in verdicts],
        }
        if record.family not in EXTRACTABLE:
            detail["why"] = f"family {record.family!r} has no extractable answer to vote on"
            return self.result(
                method, record, "", None, _usage(calls), detail, correct=None, seconds=seconds
            )
        winner = await asyncio.to_thread(majority_vote, record.family, verdicts)
        chosen = 0 if winner is None else winner
        detail["winner"] = winner
        return self.result(
            method,
            record,
            texts[chosen],
            verdicts[chosen],
            _usage(calls),
            detail,
            seconds=seconds,
            hit_limit=hits[chosen] if chosen < len(hits) else None,
        )

    # ---- methods derived from other results (no model call)

    async def best_single(self, job: QuestionJob) -> MethodResult:
        base = await job.get(f"single:{self.standings.best}")
        return dataclasses.replace(base, method="best-single")

    async def router(self, job: QuestionJob) -> MethodResult:
        model, group = self.standings.route(job.record)
        base = await job.get(f"single:{model}")
        return dataclasses.replace(base, method="router", detail={"model": model, "group": group})

    async def vote_all(self, job: QuestionJob) -> MethodResult:
        order = self.standings.order + self.standings.unmeasured
        singles = await asyncio.gather(*(job.get(f"single:{name}") for name in order))
        calls = [
            {k: getattr(s, k) for k in ("input_tokens", "output_tokens", "cost")} for s in singles
        ]
        result = await self.vote(
            "vote-all",
            job,
            [s.answer for s in singles],
            calls,
            order,
            hits=[s.hit_limit for s in singles],
            seconds=_parallel(singles),
        )
        return dataclasses.replace(result, calls=sum(s.calls for s in singles))

    async def oracle(self, job: QuestionJob) -> MethodResult:
        order = self.standings.order + self.standings.unmeasured
        singles = await asyncio.gather(*(job.get(f"single:{name}") for name in order))
        right = [s for s in singles if s.correct]
        shown = right[0] if right else singles[0]
        return dataclasses.replace(
            shown,
            method="oracle",
            correct=bool(right),
            input_tokens=sum(s.input_tokens for s in singles),
            output_tokens=sum(s.output_tokens for s in singles),
            cost=round(sum(s.cost for s in singles), 10),
            calls=sum(s.calls for s in singles),
            seconds=_parallel(singles),
            detail={"right": [s.detail.get("model") for s in right], "models": order},
        )

    async def rescored(self, job: QuestionJob, method: str) -> MethodResult:
        base = await job.get("smcs")
        candidates = base.detail["candidates"]
        chosen = rescore(candidates, without=method.removeprefix("no-"))
        if chosen is None:
            detail = {"why": "the aggregator returned no logprobs: no perplexity to score by"}
            return dataclasses.replace(
                base,
                method=method,
                correct=None,
                answer="",
                extracted=None,
                detail=detail,
                hit_limit=None,
                no_final_answer=None,
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
            hit_limit=candidates[chosen].get("hit_limit"),
            no_final_answer=no_final_answer(job.record.family, text),
        )

    def recipe(self, row: str) -> Callable[[QuestionJob], Awaitable[MethodResult]]:
        if row.startswith("single:"):
            return functools.partial(self.single, model=row.partition(":")[2])
        if row.startswith("smcs@"):
            return functools.partial(self.smcs_subpool, size=int(row.partition("@")[2]))
        if row.startswith("smcs-adaptive@"):
            threshold = float(row.partition("@")[2])
            return functools.partial(self.smcs_adaptive, threshold=threshold)
        if row in ("no-similarity", "no-perplexity"):
            return functools.partial(self.rescored, method=row)
        recipes: dict[str, Callable[[QuestionJob], Awaitable[MethodResult]]] = {
            "smcs": self.smcs,
            "smcs-adaptive": self.smcs_adaptive,
            "oracle": self.oracle,
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


class QuestionJob:
    """All methods on one question: each result computed once, from the store when it can."""

    def __init__(self, evaluation: MethodRunner, record: QuestionRecord) -> None:
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

"""Tables of an `smcs eval` run: accuracy per family and overall; calls, tokens and median wall
time per question; truncation per family; cost per method.

`summarize` turns the stored results into one `MethodSummary` per result row; `render_text`
(terminal), `render_markdown` and `report_json` show them; `write_report` writes the Markdown,
the JSON and the plots into the evaluation folder.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smcs_graph.offline.evaluation.generation import METHODS, EvalRun
from smcs_graph.offline.evaluation.results import MethodResult

__all__ = [
    "MethodSummary",
    "ScalingPoint",
    "pareto_front",
    "render_markdown",
    "render_text",
    "report_json",
    "scaling_curve",
    "summarize",
    "write_report",
]

_LABELS = {
    "smcs": "SMCS",
    "best-single": "best single",
    "router": "per-category router",
    "random-k": "random K (no RPS)",
    "moa": "MoA",
    "self-moa": "Self-MoA",
    "majority": "majority vote, best model",
    "vote-all": "majority vote (all models)",
    "no-similarity": "SMCS without similarity",
    "no-perplexity": "SMCS without perplexity",
    "no-prior-drop": "SMCS without prior drop",
    "smcs-adaptive": "SMCS adaptive",
    "oracle": "oracle (any model right)",
}

_WALL_TIME = (
    "Wall time per question: the method's model calls as they took when they were made (a "
    "cached answer keeps its original call's seconds), stages in sequence and the calls of a "
    "stage in parallel: for SMCS the slowest referencer plus the slowest fusion, for one model "
    "its call, a recovery follow-up added to the call it finishes; queueing behind the "
    "evaluation's own concurrency limits, embedding and scoring are not counted. The median "
    "is over the questions whose calls all have recorded seconds."
)


def label(row: str, run: EvalRun) -> str:
    """A readable name for a result row."""
    if row.startswith("single:"):
        return f"single {row.partition(':')[2]}"
    if row.startswith("smcs@"):
        return f"SMCS, first {row.partition('@')[2]} models"
    if row.startswith("smcs-adaptive@"):
        return f"SMCS adaptive, P(correct) >= {row.partition('@')[2]}"
    if row == "best-single":
        return f"best single ({run.standings.best})"
    if row in ("self-moa", "majority"):
        return f"{_LABELS[row]} (K={run.samples})"
    return _LABELS.get(row, row)


@dataclass(frozen=True)
class MethodSummary:
    """One row of the table: a method's results over the test questions."""

    row: str
    label: str
    n: int
    """Questions graded (excludes failures and questions the method does not apply to)."""
    correct: int
    by_family: dict[str, tuple[int, int]]
    """family -> (correct, graded)."""
    not_applicable: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost: float
    calls: int
    results: int = 0
    """Stored results (graded or not applicable): the divisor of the per-question figures."""
    median_seconds: float | None = None
    """Median wall time per question (`callpath.critical_path`; None: none recorded)."""
    timed: int = 0
    """Results with a recorded wall time."""
    truncation: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    """family -> results, hit_limit (of hit_known known), no_final_answer (of final_known
    known); families whose answers have a contract only."""

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    def per_question(self, total: float) -> float | None:
        """`total` (calls, tokens, cost) averaged over the method's results."""
        return total / self.results if self.results else None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["accuracy"] = self.accuracy
        data["per_question"] = {
            name: self.per_question(getattr(self, name))
            for name in ("calls", "input_tokens", "output_tokens", "cost")
        }
        data["by_family"] = {
            family: {"correct": c, "n": n, "accuracy": c / n if n else None}
            for family, (c, n) in self.by_family.items()
        }
        return data


def _families(run: EvalRun) -> list[str]:
    return sorted({record.family for record in run.records})


def summarize(run: EvalRun) -> list[MethodSummary]:
    """One summary per result row that was asked for, in table order."""
    by_row: dict[str, list[MethodResult]] = defaultdict(list)
    for result in run.results:
        by_row[result.method].append(result)
    failed = Counter(method for method, _ in run.failures)
    summaries = []
    for row in run.rows:
        results = by_row.get(row, [])
        graded = [r for r in results if r.correct is not None]
        by_family = {
            family: (
                sum(1 for r in graded if r.family == family and r.correct),
                sum(1 for r in graded if r.family == family),
            )
            for family in _families(run)
        }
        summaries.append(
            MethodSummary(
                row=row,
                label=label(row, run),
                n=len(graded),
                correct=sum(1 for r in graded if r.correct),
                by_family=by_family,
                not_applicable=len(results) - len(graded),
                failed=failed.get(row, 0),
                input_tokens=sum(r.input_tokens for r in results),
                output_tokens=sum(r.output_tokens for r in results),
                cost=sum(r.cost for r in results),
                calls=sum(r.calls for r in results),
                results=len(results),
                median_seconds=_median([r.seconds for r in results]),
                timed=sum(1 for r in results if r.seconds is not None),
                truncation=_truncation(results),
            )
        )
    return summaries


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 4) if known else None


def _truncation(results: Sequence[MethodResult]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in results:
        if r.no_final_answer is None and r.hit_limit is None:
            continue
        cell = out.setdefault(
            r.family,
            {"results": 0, "hit_limit": 0, "hit_known": 0, "no_final_answer": 0, "final_known": 0},
        )
        cell["results"] += 1
        if r.hit_limit is not None:
            cell["hit_known"] += 1
            cell["hit_limit"] += int(r.hit_limit)
        if r.no_final_answer is not None:
            cell["final_known"] += 1
            cell["no_final_answer"] += int(r.no_final_answer)
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (calls, accuracy) points on the front: no other point is as accurate
    with fewer calls, or more accurate with as many; in order of calls."""
    front = [
        i
        for i, (x, y) in enumerate(points)
        if not any(
            (x2 <= x and y2 > y) or (x2 < x and y2 >= y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
    ]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


@dataclass(frozen=True)
class ScalingPoint:
    """Accuracy with the first `size` pool models (None: not measured)."""

    size: int
    models: list[str]
    smcs: float | None
    best_single: float | None
    """The bank's best model among these (its single answers)."""
    oracle: float | None
    """Share of questions that at least one of these models answered right alone."""


def scaling_curve(run: EvalRun) -> list[ScalingPoint]:
    """Accuracy against pool size on nested sub-pools (the first r models of the pool).

    SMCS needs a run per size (`smcs@r`, the full pool is `smcs`); the best single model and the
    oracle are computed from the single-model answers, at no cost, where all of them are stored.
    """
    answers: dict[str, dict[str, MethodResult]] = defaultdict(dict)
    for result in run.results:
        answers[result.method][result.question_id] = result
    ids = [record.id for record in run.records]

    def accuracy(row: str) -> float | None:
        stored = answers.get(row, {})
        graded = [stored[i].correct for i in ids if i in stored]
        if len(graded) < len(ids) or any(c is None for c in graded):
            return None
        return sum(1 for c in graded if c) / len(ids)

    points = []
    for size in range(1, len(run.pool) + 1):
        models = run.pool[:size]
        singles = [answers.get(f"single:{m}", {}) for m in models]
        complete = all(all(i in single for i in ids) for single in singles)
        ranked = [m for m in run.standings.order if m in models]
        points.append(
            ScalingPoint(
                size=size,
                models=models,
                smcs=accuracy("smcs" if size == len(run.pool) else f"smcs@{size}"),
                best_single=accuracy(f"single:{ranked[0]}") if ranked else None,
                oracle=(
                    sum(1 for i in ids if any(s[i].correct for s in singles)) / len(ids)
                    if complete
                    else None
                ),
            )
        )
    return points


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(run: EvalRun) -> tuple[list[str], list[list[str]]]:
    families = _families(run)
    header = [
        "method",
        "n",
        "accuracy %",
        *families,
        "failed",
        "calls/q",
        "in tok/q",
        "out tok/q",
        "median s/q",
        "cost",
    ]
    rows = []
    for s in summarize(run):
        family_cells = [
            _percent(c / n) if n else "-" for c, n in (s.by_family[f] for f in families)
        ]
        rows.append(
            [
                s.label,
                str(s.n),
                _percent(s.accuracy),
                *family_cells,
                str(s.failed),
                _number(s.per_question(s.calls), 2),
                _number(s.per_question(s.input_tokens), 0),
                _number(s.per_question(s.output_tokens), 0),
                _number(s.median_seconds, 2),
                f"{s.cost:.6f}",
            ]
        )
    return header, rows


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(part: int, whole: int) -> str:
    return "-" if not whole else f"{100 * part / whole:.1f}"


def _truncation_table(run: EvalRun) -> tuple[list[str], list[list[str]]]:
    """Per method and family: % of answers whose reply hit the token limit / % still without
    a final answer after recovery (families with an answer contract; "-": unknown)."""
    summaries = summarize(run)
    families = sorted({f for s in summaries for f in s.truncation})
    rows = []
    for s in summaries:
        if not s.truncation:
            continue
        cells = []
        for family in families:
            t = s.truncation.get(family)
            cells.append(
                "-"
                if t is None
                else f"{_share(t['hit_limit'], t['hit_known'])} / "
                f"{_share(t['no_final_answer'], t['final_known'])}"
            )
        rows.append([s.label, *cells])
    return ["method", *families], rows


def _preamble(run: EvalRun) -> list[str]:
    counts = Counter(record.family for record in run.records)
    lines = [
        f"{len(run.records)} test question(s) ("
        + ", ".join(f"{family}: {n}" for family, n in sorted(counts.items()))
        + f"); pool of {len(run.pool)}: {', '.join(run.pool)}.",
        f"Best single model on the bank: {run.standings.best} ("
        + ", ".join(f"{m} {100 * run.standings.accuracy[m]:.1f}%" for m in run.standings.order)
        + f"). K = {min(run.config.k, len(run.pool))} referencers, "
        f"n = {run.config.n_aggregations} aggregations, {run.samples} samples for "
        "Self-MoA and majority vote.",
        "Accuracy over graded questions; calls, tokens and cost are what each method needs, "
        "per question on average (cached responses count as if made: calls shared between "
        "methods count for each; the oracle's are all the single answers it looks at).",
        _WALL_TIME,
    ]
    return lines + [f"Note: {note}" for note in run.notes]


_TRUNCATION = (
    "Truncation: per method and family, % of answers whose reply reached its token limit / "
    "% still without a final answer its family's contract extracts, after recovery (the reply "
    "that became the answer: for SMCS the chosen fusion's, or the reference a gate chose)."
)


def _fixed_width(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render_text(run: EvalRun) -> str:
    """A fixed-width table for the terminal, then the run's figures."""
    out = [*_preamble(run), "", *_fixed_width(*_table(run)), ""]
    header, rows = _truncation_table(run)
    if rows:
        out += [_TRUNCATION, "", *_fixed_width(header, rows), ""]
    out.append(
        f"{run.calls_made} model call(s) made, {run.cache_hits} answered from the cache, "
        f"{run.seconds:.1f}s."
    )
    if run.failures:
        out.append(f"{len(run.failures)} result(s) failed (rerun to retry), e.g.:")
        out.extend(
            f"  {method} on {qid}: {error}"
            for (method, qid), error in sorted(run.failures.items())[:5]
        )
    return "\n".join(out)


def render_markdown(run: EvalRun) -> str:
    """The table as Markdown, with the figures and the methods' definitions."""
    out = ["# smcs eval", "", *_preamble(run), "", *_markdown_table(*_table(run))]
    header, rows = _truncation_table(run)
    if rows:
        out += ["", "## Truncation (hit limit / no final answer, %)", "", _TRUNCATION, ""]
        out += _markdown_table(header, rows)
    out += ["", "Methods:", ""]
    out.extend(f"- `{name}`: {text}" for name, text in METHODS.items())
    return "\n".join(out) + "\n"


def report_json(run: EvalRun) -> dict[str, Any]:
    """Everything of the run as JSON data: summaries, scaling, bank standings, failures."""
    return {
        "questions": len(run.records),
        "families": dict(sorted(Counter(r.family for r in run.records).items())),
        "pool": run.pool,
        "config": dataclasses.asdict(run.config),
        "samples": run.samples,
        "bank": {
            "best_single": run.standings.best,
            "accuracy": run.standings.accuracy,
            "router": {
                group: max(scores, key=lambda m: scores[m])
                for group, scores in sorted(run.standings.by_group.items())
            },
        },
        "methods": [s.to_json() for s in summarize(run)],
        "scaling": [dataclasses.asdict(p) for p in scaling_curve(run)],
        "failures": [
            {"method": method, "question_id": qid, "error": error}
            for (method, qid), error in sorted(run.failures.items())
        ],
        "run": {
            "seconds": round(run.seconds, 3),
            "calls_made": run.calls_made,
            "cache_hits": run.cache_hits,
        },
        "notes": run.notes,
    }


def write_report(run: EvalRun, out: str | Path) -> dict[str, Path]:
    """Write report.md, report.json and the PNG plots into `out`; returns their paths."""
    from smcs_graph.offline.evaluation import plots

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": folder / "report.md",
        "json": folder / "report.json",
        "accuracy": folder / "accuracy_by_method.png",
        "scaling": folder / "scaling.png",
        "cost": folder / "accuracy_vs_cost.png",
        "calls": folder / "accuracy_vs_calls.png",
    }
    summaries = summarize(run)
    paths["markdown"].write_text(render_markdown(run), encoding="utf-8")
    paths["json"].write_text(json.dumps(report_json(run), indent=2) + "\n", encoding="utf-8")
    plots.accuracy_by_method(summaries, paths["accuracy"])
    plots.scaling(scaling_curve(run), paths["scaling"])
    plots.accuracy_vs_cost(summaries, len(run.records), paths["cost"])
    plots.accuracy_vs_calls(summaries, paths["calls"])
    return paths

"""Tables of an `smcs eval` run: accuracy per family and overall, tokens and cost per method.

`summarize` turns the stored results into one `MethodSummary` per result row; `render_text`
(terminal), `render_markdown` and `report_json` show them; `write_report` writes the Markdown,
the JSON and the plots into the evaluation folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smcs_graph.offline.evaluation.generation import METHODS, EvalRun
from smcs_graph.offline.evaluation.results import MethodResult

__all__ = [
    "MethodSummary",
    "ScalingPoint",
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
}


def label(row: str, run: EvalRun) -> str:
    """A readable name for a result row."""
    if row.startswith("single:"):
        return f"single {row.partition(':')[2]}"
    if row.startswith("smcs@"):
        return f"SMCS, first {row.partition('@')[2]} models"
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

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["accuracy"] = self.accuracy
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
            )
        )
    return summaries


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
        "input tok",
        "output tok",
        "cost",
        "calls",
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
                str(s.input_tokens),
                str(s.output_tokens),
                f"{s.cost:.6f}",
                str(s.calls),
            ]
        )
    return header, rows


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
        "Accuracy over graded questions; tokens and cost are what each method needs (cached "
        "responses count as if made: calls shared between methods count for each).",
    ]
    return lines + [f"Note: {note}" for note in run.notes]


def render_text(run: EvalRun) -> str:
    """A fixed-width table for the terminal, then the run's figures."""
    header, rows = _table(run)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    out = [*_preamble(run), "", line(header), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    out.append("")
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
    header, rows = _table(run)
    out = ["# smcs eval", "", *_preamble(run), ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    out.extend("| " + " | ".join(row) + " |" for row in rows)
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
    }
    summaries = summarize(run)
    paths["markdown"].write_text(render_markdown(run), encoding="utf-8")
    paths["json"].write_text(json.dumps(report_json(run), indent=2) + "\n", encoding="utf-8")
    plots.accuracy_by_method(summaries, paths["accuracy"])
    plots.scaling(scaling_curve(run), paths["scaling"])
    plots.accuracy_vs_cost(summaries, len(run.records), paths["cost"])
    return paths

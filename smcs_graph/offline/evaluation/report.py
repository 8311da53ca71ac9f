"""Tables of a replay report: plain text for the terminal, Markdown, JSON.

Besides the scores: each method's expected calibration error (ECE, of its Platt-calibrated
P(correct)), paired comparisons of every RPS rule against the told-category router and the
paper's RPS (mean difference, ddof=1 std of the per-split differences, wins/ties/losses), and
in Markdown each method's reliability table pooled over the splits.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from smcs_graph.offline.evaluation.comparison import paired
from smcs_graph.offline.evaluation.replay import METHODS, ReplayReport

__all__ = ["render_json", "render_markdown", "render_text"]

_LABELS = {
    "rps": "RPS (paper rule)",
    "rps-shrunk": "RPS, shrunk (new rule)",
    "rps-hier": "RPS, hier (inferred-category shrinkage)",
    "rps-learned": "RPS, learned (logistic on embeddings + hier)",
    "best-single": "best single model",
    "per-category": "per-category router (told the category)",
    "random": "random selection (expected)",
    "oracle": "oracle",
}


def _cell(stats: dict[str, float], percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    return (
        f"{scale * stats['mean']:.2f} ± {scale * stats['std']:.2f} "
        f"({scale * stats['min']:.2f}-{scale * stats['max']:.2f})"
    )


def _columns(report: ReplayReport) -> list[tuple[str, str]]:
    ks = report.settings.coverage_k
    coverage = [(f"top{k}_coverage", f"top-{k} cov.") for k in (3, 5) if k in ks]
    return [("top1", "top-1"), *coverage, ("pairwise", "pairwise ranking (eq. 8)")]


def _ece(report: ReplayReport, method: str) -> str:
    values = report.ece.get(method)
    if not values:
        return "-"
    return f"{sum(values) / len(values):.4f} (max {max(values):.4f})"


def _rows(report: ReplayReport) -> list[list[str]]:
    rows = []
    for method in METHODS:
        if method not in report.results:
            continue
        summary = report.summary(method)
        cells = [_cell(summary[key]) for key, _ in _columns(report)]
        rows.append([_LABELS[method], *cells, _ece(report, method)])
    return rows


def _header(report: ReplayReport) -> list[str]:
    return ["method", *(label for _, label in _columns(report)), "ECE of P(correct)"]


_RULES = ("rps", "rps-shrunk", "rps-hier", "rps-learned")


def _paired_lines(report: ReplayReport) -> list[str]:
    """One line per (rule, baseline): paired gains in points, ddof=1 std, wins/ties/losses."""
    lines = []
    baselines = [b for b in ("per-category", "rps") if b in report.results]
    for method in _RULES:
        if method not in report.results:
            continue
        for baseline in baselines:
            if baseline == method:
                continue
            parts = []
            for metric in ("top1", "pairwise"):
                p = paired(report.results, method, baseline, metric)
                parts.append(
                    f"{metric} {100 * p.mean:+.2f} (std {100 * p.std:.2f}; "
                    f"{p.wins}/{p.ties}/{p.losses})"
                )
            lines.append(f"{_LABELS[method]} vs {_LABELS[baseline]}: " + ", ".join(parts))
    return lines


def _reliability_lines(report: ReplayReport) -> list[str]:
    """Markdown: per method, mean P(correct) vs observed accuracy per bin, pooled over splits."""
    out: list[str] = []
    for method in METHODS:
        tables = report.reliability.get(method)
        if not tables:
            continue
        pooled: dict[tuple[float, float], list[float]] = {}
        for table in tables:
            for b in table:
                acc = pooled.setdefault((b.low, b.high), [0.0, 0.0, 0.0])
                acc[0] += b.count
                acc[1] += b.count * b.predicted
                acc[2] += b.count * b.observed
        cells = [
            f"{lo:.1f}-{hi:.1f}: {p / n:.3f} vs {o / n:.3f} (n={n:.0f})"
            for (lo, hi), (n, p, o) in sorted(pooled.items())
        ]
        out.append(f"- {_LABELS[method]}: " + "; ".join(cells))
    return out


def _counts(report: ReplayReport) -> list[str]:
    s = report.settings
    splits = report.splits
    evaluated = [x.evaluated for x in splits]
    skipped = sum(x.skipped for x in splits)
    unmeasured = [x.with_unmeasured for x in splits]
    best = Counter(x.best_single for x in splits).most_common()
    choices = Counter(
        (x.shrunk.n_sup_base, x.shrunk.temperature, x.shrunk.strength)
        for x in splits
        if x.shrunk is not None
    ).most_common()
    lines = [
        f"{report.questions} questions, {report.categories} categories, "
        f"{len(report.models)} models; {len(splits)} seeded splits holding out "
        f"{100 * s.test_fraction:g}% of each category; paper rule N_sup_base={s.n_sup_base}, "
        f"gamma={s.gamma}, support rule {s.support_rule!r}.",
        f"Test questions evaluated per split: {min(evaluated)}-{max(evaluated)}; "
        f"skipped (fewer than two models with a record): {skipped} in all; with at least one "
        f"model without a record (ranked among the measured models only): "
        f"{min(unmeasured)}-{max(unmeasured)} per split.",
        "Best single model on the bank split: "
        + ", ".join(f"{name} ({count}x)" for name, count in best)
        + ".",
    ]
    if choices:
        lines.append(
            "Shrunk rule settings chosen on the bank by leave-one-out (N_sup_base, "
            "temperature, strength): "
            + ", ".join(f"({n}, {t}, {a:g}) {count}x" for (n, t, a), count in choices)
            + "."
        )
    hier = Counter(
        (x.hier.temperature, x.hier.strength) for x in splits if x.hier is not None
    ).most_common()
    if hier:
        fixed = next(x.hier for x in splits if x.hier is not None)
        lines.append(
            "Hier rule settings chosen on the bank by leave-one-out (temperature, strength): "
            + ", ".join(f"({t:g}, {a:g}) {count}x" for (t, a), count in hier)
            + f"; category temperature {fixed.category_temperature:g}, category strength "
            f"{fixed.category_strength:g}."
        )
    learned = Counter(
        (x.learned.rank, x.learned.penalty) for x in splits if x.learned is not None
    ).most_common()
    if learned:
        edges = sum(1 for x in splits if x.learned is not None and x.learned.at_edge)
        lines.append(
            "Learned rule settings chosen on the bank by cross-validation (rank, penalty): "
            + ", ".join(f"({k}, {a:g}) {count}x" for (k, a), count in learned)
            + f"; at a grid's edge in {edges} of {len(splits)} splits."
        )
    lines.append(
        "Per-category router: ties in category accuracy broken by bank-wide accuracy, then "
        "pool order."
    )
    return lines


def render_text(report: ReplayReport) -> str:
    """A fixed-width table for the terminal (percent: mean ± std (min-max) over seeds)."""
    header = _header(report)
    rows = _rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    paired_lines = _paired_lines(report)
    if paired_lines:
        paired_lines = [
            "",
            "Paired over the splits, percentage points (std of the differences, ddof=1; "
            "wins/ties/losses):",
            *paired_lines,
        ]
    return "\n".join([*lines, "", *_counts(report), *paired_lines])


def render_markdown(report: ReplayReport, command: str | None = None) -> str:
    """The results table, the N_sup_base x gamma sweep of the paper rule, and the counts."""
    header = _header(report)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in _rows(report)]
    out.append("")
    out.append(
        "Percent, mean ± std (population, ddof=0) (min-max) over the splits; ECE: mean (max) "
        "over the splits, 10 equal-width bins, measured test entries."
    )
    out += ["", *_counts(report)]
    paired_lines = _paired_lines(report)
    if paired_lines:
        out += [
            "",
            "Paired over the splits, percentage points (std of the per-split differences, "
            "ddof=1; wins/ties/losses):",
            "",
            *(f"- {line}" for line in paired_lines),
        ]
    reliability = _reliability_lines(report)
    if reliability:
        out += [
            "",
            "Reliability (bin: mean P(correct) vs observed accuracy, pooled over splits):",
            "",
            *reliability,
        ]
    if report.sweep:
        gammas = sorted({g for _, g in report.sweep})
        out += [
            "",
            "Paper rule swept (top-1 / pairwise ranking score, mean over splits; a sweep on "
            "the test splits, for reference only: the shrunk rule is tuned on the bank):",
            "",
            "| N_sup_base | " + " | ".join(f"gamma={g:g}" for g in gammas) + " |",
            "|---|" + "---|" * len(gammas),
        ]
        sweep = report.sweep_summary()
        for n_sup in sorted({n for n, _ in report.sweep}):
            cells = [
                f"{100 * sweep[(n_sup, g)]['top1']['mean']:.2f} / "
                f"{100 * sweep[(n_sup, g)]['pairwise']['mean']:.2f}"
                for g in gammas
            ]
            out.append(f"| {n_sup} | " + " | ".join(cells) + " |")
    if command:
        out += ["", "Made with:", "", "```", command, "```"]
    return "\n".join(out) + "\n"


def render_json(report: ReplayReport, extra: dict[str, Any] | None = None) -> str:
    payload = report.as_dict()
    if extra:
        payload.update(extra)
    return json.dumps(payload, indent=2, sort_keys=False)

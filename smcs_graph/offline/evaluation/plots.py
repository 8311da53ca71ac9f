"""PNG plots of an `smcs eval` run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smcs_graph.offline.evaluation.generation_report import MethodSummary, ScalingPoint

__all__ = ["accuracy_by_method", "accuracy_vs_calls", "accuracy_vs_cost", "scaling"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)


def accuracy_by_method(summaries: Sequence[MethodSummary], path: str | Path) -> None:
    """Bar chart: overall accuracy of each method (SMCS highlighted), n on each bar."""
    plt = _pyplot()
    shown = [s for s in summaries if s.accuracy is not None]
    figure, axes = plt.subplots(figsize=(max(6.0, 0.6 * len(shown) + 2), 4.5))
    values = [100 * (s.accuracy or 0.0) for s in shown]
    colors = ["tab:red" if s.row == "smcs" else "tab:blue" for s in shown]
    bars = axes.bar(range(len(shown)), values, color=colors)
    for bar, summary in zip(bars, shown, strict=True):
        axes.annotate(
            f"n={summary.n}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    axes.set_xticks(range(len(shown)), [s.label for s in shown], rotation=45, ha="right")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Accuracy by method")
    _save(figure, Path(path))


def scaling(points: Sequence[ScalingPoint], path: str | Path) -> None:
    """Line plot: accuracy against the number of pool models (nested sub-pools)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.0, 4.5))
    series = (
        ("SMCS", "smcs", "o-"),
        ("best single model", "best_single", "s--"),
        ("oracle (any model right)", "oracle", "^:"),
    )
    drawn = False
    for name, attribute, style in series:
        xs = [p.size for p in points if getattr(p, attribute) is not None]
        ys = [100 * getattr(p, attribute) for p in points if getattr(p, attribute) is not None]
        if xs:
            axes.plot(xs, ys, style, label=name)
            drawn = True
    if drawn:
        axes.legend()
    else:
        axes.text(0.5, 0.5, "no measurement", ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([p.size for p in points])
    axes.set_xlabel("models in the pool (first r of the pool file)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Scaling with the pool size")
    _save(figure, Path(path))


def accuracy_vs_cost(summaries: Sequence[MethodSummary], questions: int, path: str | Path) -> None:
    """Scatter: accuracy against cost per question (tokens per question when all is free)."""
    plt = _pyplot()
    shown = [s for s in summaries if s.accuracy is not None]
    priced = any(s.cost > 0 for s in shown)
    per = max(questions, 1)
    xs = [(s.cost if priced else s.input_tokens + s.output_tokens) / per for s in shown]
    ys = [100 * (s.accuracy or 0.0) for s in shown]
    # Points carry numbers and the names are listed beside the plot: the names of methods that
    # cost about the same (best single, router, ablations) would print over each other.
    near = 0.03 * (max(xs, default=0.0) - min(xs, default=0.0)) or 1e-9
    numbers: dict[tuple[float, float], list[str]] = {}
    for number, (x, y) in enumerate(zip(xs, ys, strict=True), start=1):
        anchor = next((a for a in numbers if a[1] == y and abs(a[0] - x) <= near), (x, y))
        numbers.setdefault(anchor, []).append(str(number))
    figure, axes = plt.subplots(figsize=(9.5, 5.0))
    axes.scatter(xs, ys, color="tab:blue")
    for (x, y), names in numbers.items():
        axes.annotate(
            ",".join(names), (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points"
        )
    key = "\n".join(f"{i}  {s.label}" for i, s in enumerate(shown, start=1))
    axes.text(1.03, 1.0, key, transform=axes.transAxes, fontsize=8, va="top", ha="left")
    axes.set_xlabel("cost per question" if priced else "tokens per question (input + output)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Accuracy against cost")
    _save(figure, Path(path))


def accuracy_vs_calls(summaries: Sequence[MethodSummary], path: str | Path) -> None:
    """Scatter: accuracy against model calls per question, each point labelled; the Pareto
    front (the best accuracy for at most that many calls) as a step line, the adaptive SMCS
    thresholds as a curve, the oracle (an upper bound, not a method) as a dashed line."""
    from smcs_graph.offline.evaluation.generation_report import pareto_front

    plt = _pyplot()
    shown = [
        s for s in summaries if s.accuracy is not None and s.results and s.row not in ("oracle",)
    ]
    xs = [s.per_question(s.calls) or 0.0 for s in shown]
    ys = [100 * (s.accuracy or 0.0) for s in shown]
    figure, axes = plt.subplots(figsize=(9.5, 5.5))
    front = pareto_front(list(zip(xs, ys, strict=True)))
    on_front = set(front)
    axes.scatter(
        xs,
        ys,
        c=["tab:red" if i in on_front else "tab:blue" for i in range(len(shown))],
        zorder=3,
    )
    if front:
        axes.step(
            [xs[i] for i in front],
            [ys[i] for i in front],
            where="post",
            color="tab:red",
            alpha=0.6,
            label="Pareto front (best accuracy for at most that many calls)",
        )
    curve = sorted(
        (x, y) for s, x, y in zip(shown, xs, ys, strict=True) if s.row.startswith("smcs-adaptive")
    )
    if len(curve) > 1:
        axes.plot(*zip(*curve, strict=True), "--", color="tab:green", label="SMCS adaptive")
    for s, x, y in zip(shown, xs, ys, strict=True):
        axes.annotate(
            s.label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points", zorder=4
        )
    oracle = next((s for s in summaries if s.row == "oracle" and s.accuracy is not None), None)
    if oracle is not None:
        axes.axhline(
            100 * (oracle.accuracy or 0.0), color="gray", linestyle=":", label=oracle.label
        )
    if front or oracle is not None:
        axes.legend(fontsize=8, loc="lower right")
    if not shown:
        axes.text(0.5, 0.5, "no measurement", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("model calls per question")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Accuracy against calls")
    _save(figure, Path(path))

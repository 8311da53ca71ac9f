"""The stream replay's results (`StreamReport`): summaries over seeds, the table (text,
Markdown), JSON and plot (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from smcs_graph.offline.evaluation.calibration import HierChoice, ShrunkChoice

if TYPE_CHECKING:
    from smcs_graph.offline.evaluation.stream import StreamSettings

__all__ = [
    "StreamReport",
    "StreamRun",
    "StreamSeed",
    "render_stream_json",
    "render_stream_markdown",
    "render_stream_text",
    "stream_plot",
]


@dataclass(frozen=True, eq=False)
class StreamRun:
    """One mode on one seed: the top-1 hit of every streamed question, in arrival order."""

    hits: NDArray[np.bool_]
    labels: int
    """Cells revealed to the bank along the stream."""
    held_out: float | None
    """Top-1 of the final bank on the held-out set (None without one)."""


@dataclass(frozen=True)
class StreamSeed:
    """Counts and choices of one seed."""

    seed: int
    initial: int
    streamed: int
    held_out: int
    skipped: int
    """Questions left out of the stream and the held-out set: fewer than two recorded models."""
    explore_c: float | None
    shrunk: ShrunkChoice | None = None
    hier: HierChoice | None = None


@dataclass
class StreamReport:
    """Every mode's runs over the seeds, with the per-seed counts and the wall time."""

    models: list[str]
    questions: int
    settings: StreamSettings
    runs: dict[str, list[StreamRun]] = field(default_factory=dict)
    seeds: list[StreamSeed] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def streamed(self) -> int:
        """Stream length shared by all seeds (the shortest, if they differ)."""
        return min(s.streamed for s in self.seeds)

    def hits(self, mode: str) -> NDArray[np.float64]:
        """(seeds, streamed) top-1 hits of `mode`."""
        t = self.streamed
        return np.stack([run.hits[:t].astype(np.float64) for run in self.runs[mode]])

    def windows(self) -> list[tuple[int, int]]:
        """[start, end) of each window along the stream (the last may be shorter)."""
        t, w = self.streamed, self.settings.window
        return [(a, min(a + w, t)) for a in range(0, t, w)]

    def summary(self, mode: str) -> dict[str, Any]:
        """Means and standard deviations over seeds (ddof=1): cumulative top-1 over the whole
        stream, each window's, the held-out top-1, labels per question, and the paired wins,
        ties and losses of the whole-stream top-1 against static (when static ran)."""
        hits = self.hits(mode)
        out: dict[str, Any] = {
            "top1": _spread(hits.mean(axis=1)),
            "windows": [_spread(hits[:, a:b].mean(axis=1)) for a, b in self.windows()],
            "labels_per_question": float(
                np.mean([r.labels / max(len(r.hits), 1) for r in self.runs[mode]])
            ),
        }
        held = [r.held_out for r in self.runs[mode] if r.held_out is not None]
        out["held_out"] = _spread(np.array(held)) if held else None
        if "static" in self.runs:
            diff = hits.mean(axis=1) - self.hits("static").mean(axis=1)
            out["vs_static"] = {
                "mean": float(diff.mean()),
                "std": _std(diff),
                "wins": int((diff > 0).sum()),
                "ties": int((diff == 0).sum()),
                "losses": int((diff < 0).sum()),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: settings, per-seed counts, summaries and per-seed window accuracies."""
        return {
            "models": self.models,
            "questions": self.questions,
            "settings": asdict(self.settings),
            "seconds": self.seconds,
            "std": "sample standard deviation over seeds (ddof=1)",
            "windows": self.windows(),
            "seeds": [asdict(s) for s in self.seeds],
            "modes": {
                mode: {
                    "summary": self.summary(mode),
                    "per_seed": [
                        {
                            "top1": float(r.hits.mean()) if len(r.hits) else None,
                            "windows": [float(r.hits[a:b].mean()) for a, b in self.windows()],
                            "labels": r.labels,
                            "held_out": r.held_out,
                        }
                        for r in runs
                    ],
                }
                for mode, runs in self.runs.items()
            },
        }


def _std(values: NDArray[np.float64]) -> float:
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def _spread(values: NDArray[np.float64]) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": _std(values),
        "min": float(values.min()),
        "max": float(values.max()),
    }


_LABELS = {
    "static": "static bank",
    "chosen": "chosen model's label",
    "top-k": "top-K labels",
    "full": "all labels",
    "explore": "chosen + UCB bonus",
    "explore-top-k": "top-K + UCB bonus",
}


def _pct(spread: dict[str, float] | None) -> str:
    return "-" if spread is None else f"{100 * spread['mean']:.2f} ± {100 * spread['std']:.2f}"


def _rows(report: StreamReport) -> tuple[list[str], list[list[str]]]:
    windows = report.windows()
    header = ["mode", "labels/q", "top-1 (stream)"]
    header += [f"q {a + 1}-{b}" for a, b in windows]
    header += ["held-out top-1", "vs static (W/T/L)"]
    rows = []
    for mode in report.runs:
        s = report.summary(mode)
        vs = s.get("vs_static")
        paired = (
            "-" if vs is None or mode == "static" else f"{vs['wins']}/{vs['ties']}/{vs['losses']}"
        )
        rows.append(
            [
                f"{mode} ({_LABELS[mode]})".replace("top-K", f"top-{report.settings.k}"),
                f"{s['labels_per_question']:.1f}",
                _pct(s["top1"]),
                *(_pct(w) for w in s["windows"]),
                _pct(s["held_out"]),
                paired,
            ]
        )
    return header, rows


def _caption(report: StreamReport) -> list[str]:
    cfg, seeds = report.settings, report.seeds
    first = seeds[0]
    cs = sorted({s.explore_c for s in seeds if s.explore_c is not None})
    lines = [
        f"Stream replay: {report.questions} questions, {len(report.models)} models, rule "
        f"{cfg.rule!r}, {len(seeds)} seeds; per seed {first.initial} initial bank questions "
        f"({cfg.initial_fraction:g} of each category), {report.streamed} streamed, "
        f"{first.held_out} held out; K = {cfg.k}.",
        "Top-1 accuracy (%) of the routed model on each arriving question, mean ± sample std "
        "over seeds (ddof=1); windows of the stream in arrival order; held-out: the final "
        "bank's top-1 on the held-out set; W/T/L: seeds where the mode's stream top-1 beats, "
        "ties or trails the static bank's (paired, same arrival order).",
    ]
    if cs:
        how = "fixed" if cfg.explore_c is not None else "chosen on each initial bank"
        lines.append(f"UCB weight c ({how}): {', '.join(f'{c:g}' for c in cs)}.")
    lines.append(f"Runtime: {report.seconds:.0f} s.")
    return lines


def render_stream_text(report: StreamReport) -> str:
    """The table in plain text, with its caption."""
    header, rows = _rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [*_caption(report), ""]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def render_stream_markdown(report: StreamReport, command: str | None = None) -> str:
    """The table in Markdown, with its caption and the command that produced it."""
    header, rows = _rows(report)
    lines = ["# Stream replay", ""]
    if command:
        lines += [f"`{command}`", ""]
    lines += [" ".join(_caption(report)), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_stream_json(report: StreamReport, extra: dict[str, Any] | None = None) -> str:
    return json.dumps({**report.as_dict(), **(extra or {})}, indent=2, default=str)


def stream_plot(report: StreamReport, path: str | Path) -> None:
    """Two panels: cumulative and windowed top-1 along the stream, per mode (mean over seeds,
    band and bars: one sample std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12.0, 4.5), sharey=True)
    steps = np.arange(1, report.streamed + 1)
    ddof = 1 if len(report.seeds) > 1 else 0
    windows = report.windows()
    mids = [(a + b) / 2 for a, b in windows]
    for mode in report.runs:
        hits = report.hits(mode)
        cumulative = np.cumsum(hits, axis=1) / steps
        mean, std = cumulative.mean(axis=0), cumulative.std(axis=0, ddof=ddof)
        label = _LABELS[mode].replace("top-K", f"top-{report.settings.k}")
        (line,) = left.plot(steps, 100 * mean, label=label)
        color = line.get_color()
        left.fill_between(steps, 100 * (mean - std), 100 * (mean + std), alpha=0.15, color=color)
        per = np.stack([hits[:, a:b].mean(axis=1) for a, b in windows], axis=1)
        right.errorbar(
            mids,
            100 * per.mean(axis=0),
            yerr=100 * per.std(axis=0, ddof=ddof),
            marker="o",
            capsize=3,
            label=label,
            color=color,
        )
    skip = min(200, report.streamed // 10)
    left.set_xlim(skip, report.streamed)
    # The modes differ by a point or two: zoom on the window means, not the first questions.
    spans = [report.hits(m)[:, a:b].mean(axis=1) for m in report.runs for a, b in windows]
    low, high = 100 * min(v.min() for v in spans), 100 * max(v.max() for v in spans)
    left.set_ylim(low - 1.0, high + 1.0)
    left.set_xlabel(f"questions streamed (from {skip})")
    left.set_ylabel("top-1 accuracy (%)")
    left.set_title("Cumulative top-1 along the stream")
    right.set_xlabel(f"stream window ({report.settings.window} questions)")
    right.set_title("Top-1 per window")
    right.legend(fontsize=8)
    figure.suptitle(
        f"Learning from partial feedback ({report.settings.rule} rule, {len(report.seeds)} "
        "seeds; band/bars: one sample std over seeds)",
        fontsize=10,
    )
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120)
    plt.close(figure)

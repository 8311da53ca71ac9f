"""What `smcs calibrate` prints, plots and writes: the report, the curve's PNG, and the chosen
settings in a pool file's `smcs:` section.

Writing edits the `smcs:` section line by line, so the file's other keys and its comments stay
as they were (a key already set gets its new value, its trailing comment kept; a missing one is
appended to the section). JSON pool files are rewritten whole. A file inside the installed
package (the embedded default's) is never written: `--out FILE` names a copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smcs_graph.errors import ConfigError
from smcs_graph.offline.calibrate.agreement import CV_FOLDS, MIN_AGREE, AgreementCalibration
from smcs_graph.offline.calibrate.thresholds import GateCalibration

__all__ = [
    "agreement_settings",
    "gate_settings",
    "plot_curve",
    "render_agreement",
    "render_report",
    "write_settings",
]

_PACKAGE = Path(__file__).resolve().parents[2]


def gate_settings(result: GateCalibration) -> dict[str, Any]:
    """The settings the calibration chose (the expected gain never decides: 0)."""
    return {
        "collaboration": "adaptive",
        "gate_rule": result.held.rule,
        "prior_gate_threshold": result.threshold,
        "min_collaboration_gain": 0.0,
    }


def agreement_settings(result: AgreementCalibration) -> dict[str, Any]:
    """The agreement settings the calibration chose: the gate on when recommended, and the
    similarity threshold when some question was decided by similarity."""
    values: dict[str, Any] = {"agreement_gate": result.recommend}
    if result.threshold is not None:
        values["agreement_similarity"] = result.threshold
    return values


def _pct(value: float) -> str:
    return f"{100 * value:5.1f}"


def _maybe(value: float | None) -> str:
    return "    -" if value is None else _pct(value)


SWEEP_GRID = tuple(round(0.3 + 0.05 * i, 2) for i in range(14))
"""Similarity thresholds of the printed sweep (the chosen one is added)."""


def render_agreement(
    result: AgreementCalibration,
    *,
    source: str,
    held_questions: int,
    held_out: tuple[int, int, float | None] | None = None,
) -> str:
    """The agreement gate's report: coverage, each family's agreement, the similarity sweep,
    the choice, the calls it expects, the recommendation (`held_out`: `cross_validated`)."""
    ev = result.evidence
    missing = ", ".join(f"{family} {count}" for family, count in ev.missing.items())
    tol = f"{100 * result.tolerance:g}"
    lines = [
        f"Agreement gate, from the profiled replies in {source}: the replies of every top-K "
        f"model for {len(ev.question_ids)} of {held_questions} held-out bank questions"
        + (f" (none for {missing})" if missing else ""),
        "(agree: the same extracted final answer where the nearest bank question's family has "
        "an extractor, else every pair of replies at embedding cosine >= agreement_similarity; "
        "gain: what collaborating could still add, P(some top-K right) - P(top right), the "
        "oracle's)",
        "  family (nearest)  agree by     questions   agree   top right if agree / not  "
        "gain if agree",
    ]
    for row in result.families:
        share = row.agree / row.questions if row.questions else 0.0
        lines.append(
            f"  {row.family:<17s} {row.method:<10s} {row.questions:11d}  {_pct(share)} %"
            f"   {_maybe(row.top_agree)} % / {_maybe(row.top_rest)} %  "
            f"{_maybe(row.gain_agree)} pts"
        )
    if result.threshold is None:
        lines.append(
            f"agreement_similarity: not calibrated ({result.why_not}); the figures use the "
            f"run's {result.current:g}"
        )
    else:
        similar = ~ev.extractor
        lowest = ev.min_similarity[similar]
        top, any_ = ev.top_right[similar], ev.any_right[similar]
        lines += [
            "",
            "agreement_similarity on the questions decided by similarity",
            "  threshold   agree   gain if agree",
        ]
        for t in sorted({*SWEEP_GRID, result.threshold}):
            agree = lowest >= t
            gain = float(any_[agree].mean() - top[agree].mean()) if agree.any() else None
            mark = "  <- chosen" if t == result.threshold else ""
            lines.append(f"  {t:9.4f}  {_pct(float(agree.mean()))} %  {_maybe(gain)} pts{mark}")
        why = (
            f"the smallest at which at least {MIN_AGREE} questions agree and collaborating "
            f"could add at most {tol} points on them"
            if result.qualified
            else f"no threshold keeps the gain within {tol} points: only identical replies agree"
        )
        lines.append(f"Chosen: agreement_similarity = {result.threshold:g} ({why}; in-sample)")
        if held_out is not None:
            count, agree_count, gain = held_out
            lines.append(
                f"  held out (the threshold chosen on the other folds, {CV_FOLDS} folds): "
                f"{agree_count} of {count} agree, gain if agree {_maybe(gain).strip()} pts"
            )
    k, n = ev.k, ev.n
    lines += [
        f"Calls per question on these questions: prior gate at {result.prior_threshold:g} "
        f"alone {result.calls_prior:.2f}, with the agreement gate {result.calls_both:.2f}; "
        f"always collaborating {k + n}, with the agreement gate "
        f"{result.calls_always_agreement:.2f}",
        f"Recommendation: agreement_gate {'on' if result.recommend else 'off'}: {result.reason}",
    ]
    return "\n".join(lines)


def render_report(result: GateCalibration, *, bank: str, pool: str) -> str:
    """The report: what was held out, the reliability table, the curve, the choice."""
    held = result.held
    measured = int(held.top_measured.sum())
    without = "it" if held.scheme == "leave-one-out" else "its fold"
    fallback = held.fits - held.platt_fits
    lines = [
        f"Calibrating the prior gate on bank {bank} (pool {pool}, gate rule {held.rule}): "
        f"{held.scheme} over {len(held.question_ids)} bank questions",
        f"(each question's top model and P(correct) are the prior gate's on the bank without "
        f"{without}: the rule and its Platt calibration refitted on the rest, {held.fits} fits"
        + (
            f", {fallback} of them on the shrunk estimate (too few held-out outcomes for Platt)"
            if fallback
            else ""
        )
        + "; no test question is read)",
        f"K = {held.k} referencers, n = {held.n} fusions: an escalated question takes "
        f"{held.escalated_calls} calls, one answered alone takes 1"
        + (
            f"; plus follow-ups: {held.followup_rate:.3f} per answer in the profiled replies "
            f"(alone {float(held.costs()[0].mean()):.2f}, escalated "
            f"{float(held.costs()[1].mean()):.2f} calls on average)"
            if held.followup_rate is not None
            else " (follow-ups not counted: no profiled replies)"
        ),
        "",
        "Reliability of the gate's P(correct) of the top model on the held-out bank questions",
        "  P(correct) bin   questions  predicted  observed",
    ]
    for b in result.reliability:
        close = "]" if b.high >= 1 else ")"
        lines.append(
            f"  [{b.low:.1f}, {b.high:.1f}{close}      {b.count:9d}    {_pct(b.predicted)} %  "
            f"{_pct(b.observed)} %"
        )
    lines.append(f"  ECE {result.ece:.3f} over {measured} questions with a recorded top answer")
    lines += [
        "",
        "Expected accuracy vs calls (a band: the bank has no SMCS outcome for an escalated",
        "question; lower = the top model's recorded correctness, upper = any of the top-K",
        "right, the oracle)",
        "  threshold  escalated  calls/question  accuracy low-high",
    ]
    for p in _distinct_rows(result):
        mark = "  <- chosen" if p.threshold == result.threshold else ""
        lines.append(
            f"  {p.threshold:9.4f}  {_pct(p.escalation_rate)} %  {p.calls:14.2f}  "
            f"{_pct(p.accuracy_low)} - {_pct(p.accuracy_high)} %{mark}"
        )
    c = result.chosen
    lines += [
        "",
        f"Target: {result.target}",
        f"Chosen: prior_gate_threshold = {result.threshold:g}: {_pct(c.escalation_rate).strip()} % "
        f"escalated, {c.calls:.2f} calls per question"
        + (
            f" (upper {100 * result.confidence:g} % bound {c.calls_bound:.2f} calls, "
            f"{_pct(c.rate_bound).strip()} % escalated)"
            if result.confidence > 0.5
            else ""
        )
        + ", expected accuracy "
        f"{_pct(c.accuracy_low).strip()}-{_pct(c.accuracy_high).strip()} % "
        f"(always collaborating: {held.escalated_calls} calls, "
        f"{_pct(result.curve[-1].accuracy_low).strip()}-"
        f"{_pct(result.curve[-1].accuracy_high).strip()} %)",
    ]
    return "\n".join(lines)


def _distinct_rows(result: GateCalibration) -> list[Any]:
    """The curve's points, each escalation rate once (its highest threshold), and the choice."""
    rows: list[Any] = []
    for p in result.curve:
        if (
            rows
            and rows[-1].escalation_rate == p.escalation_rate
            and (rows[-1].threshold != result.threshold)
        ):
            rows[-1] = p
        else:
            rows.append(p)
    return rows


def plot_curve(result: GateCalibration, path: str | Path) -> None:
    """PNG: the expected accuracy band against calls per question, the choice marked."""
    from smcs_graph.offline.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    points = sorted(result.curve, key=lambda p: (p.calls, p.threshold))
    calls = [p.calls for p in points]
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    axes.fill_between(
        calls,
        [100 * p.accuracy_low for p in points],
        [100 * p.accuracy_high for p in points],
        alpha=0.25,
        label="expected accuracy (top model alone .. oracle of the top-K)",
    )
    axes.plot(calls, [100 * p.accuracy_high for p in points], color="tab:blue")
    axes.plot(calls, [100 * p.accuracy_low for p in points], color="tab:blue", linestyle="--")
    c = result.chosen
    axes.plot(
        [c.calls, c.calls],
        [100 * c.accuracy_low, 100 * c.accuracy_high],
        color="tab:red",
        linewidth=3,
        label=f"chosen: threshold {result.threshold:g}",
    )
    axes.set_xlabel("model calls per question (expected)")
    axes.set_ylabel("accuracy on held-out bank questions (%)")
    axes.set_title(f"Prior gate ({result.held.rule}): accuracy vs calls ({result.held.scheme})")
    axes.legend(loc="lower right", fontsize=8)
    _save(figure, Path(path))


def packaged(path: Path) -> bool:
    """Whether `path` lies inside the installed smcs_graph package."""
    try:
        path.resolve().relative_to(_PACKAGE)
    except ValueError:
        return False
    return True


def write_settings(pool_file: Path, values: Mapping[str, Any], out: Path | None = None) -> Path:
    """Write `values` into the `smcs:` section of `out` (created as a copy of `pool_file` when
    missing), else of `pool_file` itself; returns the file written."""
    target = out if out is not None else pool_file
    if packaged(target):
        raise ConfigError(
            f"{target} ships inside the smcs_graph package (the embedded default): it is not "
            "edited; write the settings elsewhere with --out FILE (a copy of the pool file with "
            "the calibrated settings)"
        )
    source = target if target.exists() else pool_file
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if source.suffix == ".json":
        data = json.loads(text)
        data.setdefault("smcs", {}).update(values)
        updated = json.dumps(data, indent=2) + "\n"
    else:
        updated = _edit_yaml(text, values)
    try:
        target.write_text(updated, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


_TOP_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


def _edit_yaml(text: str, values: Mapping[str, Any]) -> str:
    """`text` with `values` set in its top-level `smcs:` block (see the module)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^smcs\s*:", line)), None)
    rendered = {key: json.dumps(value) for key, value in values.items()}
    if start is None:
        block = ["smcs:", *(f"  {key}: {value}" for key, value in rendered.items())]
        return "\n".join([*lines, "", *block]) + "\n"
    if lines[start].split(":", 1)[1].split("#", 1)[0].strip():
        raise ConfigError(
            "the pool file's 'smcs:' section is written inline (smcs: {...}); write it as a "
            "block (one 'key: value' per line) or use --out FILE"
        )
    end = next(
        (i for i in range(start + 1, len(lines)) if _TOP_KEY.match(lines[i])),
        len(lines),
    )
    indent = "  "
    for line in lines[start + 1 : end]:
        match = re.match(r"^(\s+)[A-Za-z_]\w*\s*:", line)
        if match:
            indent = match.group(1)
            break
    pending = dict(rendered)
    for i in range(start + 1, end):
        match = re.match(rf"^{indent}([A-Za-z_]\w*)(\s*:\s*)([^#]*?)(\s*#.*)?$", lines[i])
        if match and match.group(1) in pending:
            key = match.group(1)
            comment = match.group(4) or ""
            lines[i] = f"{indent}{key}: {pending.pop(key)}{comment}"
    last = end
    while last > start + 1 and not lines[last - 1].strip():
        last -= 1
    added = [f"{indent}{key}: {value}" for key, value in pending.items()]
    return "\n".join([*lines[:last], *added, *lines[last:]]) + "\n"

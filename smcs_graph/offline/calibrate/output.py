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
from smcs_graph.offline.calibrate.thresholds import GateCalibration

__all__ = ["gate_settings", "plot_curve", "render_report", "write_settings"]

_PACKAGE = Path(__file__).resolve().parents[2]


def gate_settings(result: GateCalibration) -> dict[str, Any]:
    """The settings the calibration chose (the expected gain never decides: 0)."""
    return {
        "collaboration": "adaptive",
        "prior_gate_threshold": result.threshold,
        "min_collaboration_gain": 0.0,
    }


def _pct(value: float) -> str:
    return f"{100 * value:5.1f}"


def render_report(result: GateCalibration, *, bank: str, pool: str) -> str:
    """The report: what was held out, the reliability table, the curve, the choice."""
    held = result.held
    measured = int(held.top_measured.sum())
    without = "it" if held.scheme == "leave-one-out" else "its fold"
    fallback = held.fits - held.platt_fits
    lines = [
        f"Calibrating the prior gate on bank {bank} (pool {pool}, prior_rule {held.rule}): "
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
        f"{held.escalated_calls} calls, one answered alone takes 1",
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
        f"escalated, {c.calls:.2f} calls per question, expected accuracy "
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

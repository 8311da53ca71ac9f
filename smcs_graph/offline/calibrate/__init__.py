"""`smcs calibrate`: the adaptive gates' thresholds, chosen on the bank alone.

`heldout`: per bank question, the prior gate's top model and calibrated P(correct) with the
question out of the bank (leave-one-out, or cross-fitted folds), the run's prior rule and its
Platt map refitted without it. `thresholds`: the threshold for a target (calls per question or
escalation rate), the reliability table and the accuracy-vs-calls curve. `output`: the printed
report, the curve's PNG, and the settings written into a pool file.
"""

from __future__ import annotations

from collections.abc import Sequence

from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.offline.calibrate.heldout import bank_arrays, held_out
from smcs_graph.offline.calibrate.output import (
    gate_settings,
    plot_curve,
    render_report,
    write_settings,
)
from smcs_graph.offline.calibrate.thresholds import (
    CurvePoint,
    GateCalibration,
    HeldOut,
    choose_threshold,
    curve,
)

__all__ = [
    "CurvePoint",
    "GateCalibration",
    "HeldOut",
    "bank_arrays",
    "bank_held_out",
    "choose_threshold",
    "curve",
    "gate_settings",
    "held_out",
    "plot_curve",
    "render_report",
    "write_settings",
]


def bank_held_out(
    bank: QuestionBank,
    models: Sequence[str],
    settings: SMCSConfig,
    *,
    folds: int | None = None,
    seed: int = 0,
) -> HeldOut:
    """`held_out` on a bank's current snapshot (what the graph fits its rule on) for the pool
    `models` (pool order)."""
    from smcs_graph.errors import ConfigError

    if len(bank) == 0:
        raise ConfigError(f"bank {bank.name!r} is empty: build it and record results first")
    arrays, ids = bank_arrays(bank._snap())  # the snapshot `selection.fitted_rule` fits on
    return held_out(arrays, ids, models, settings, folds=folds, seed=seed)

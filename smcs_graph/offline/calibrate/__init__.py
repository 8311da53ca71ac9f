"""`smcs calibrate`: the adaptive gates' thresholds, chosen on the bank alone.

`heldout`: per bank question, the prior gate's top model and calibrated P(correct) with the
question out of the bank (leave-one-out, or cross-fitted folds), the run's prior rule and its
Platt map refitted without it. `thresholds`: the threshold for a target (calls per question or
escalation rate), the reliability table and the accuracy-vs-calls curve. `agreement`: the
agreement gate's statistics and `agreement_similarity`, from the replies `smcs profile` cached.
`output`: the printed report, the curve's PNG, and the settings written into a pool file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smcs_graph.bank import QuestionBank
from smcs_graph.config import SMCSConfig
from smcs_graph.offline.calibrate.agreement import (
    AgreementCalibration,
    AgreementEvidence,
    agreement_evidence,
    choose_similarity,
    cross_validated,
    profiled_replies,
)
from smcs_graph.offline.calibrate.heldout import bank_arrays, held_out
from smcs_graph.offline.calibrate.output import (
    agreement_settings,
    gate_settings,
    plot_curve,
    render_agreement,
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
    "AgreementCalibration",
    "AgreementEvidence",
    "CurvePoint",
    "GateCalibration",
    "HeldOut",
    "agreement_evidence",
    "agreement_settings",
    "bank_agreement_evidence",
    "bank_arrays",
    "bank_held_out",
    "choose_similarity",
    "choose_threshold",
    "cross_validated",
    "curve",
    "gate_settings",
    "held_out",
    "plot_curve",
    "profiled_replies",
    "render_agreement",
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


def bank_agreement_evidence(
    bank: QuestionBank,
    held: HeldOut,
    entries: Sequence[Mapping[str, Any]],
    settings: SMCSConfig,
    cache_path: Path,
) -> AgreementEvidence:
    """`agreement_evidence` for `bank_held_out`'s questions: the top-K models' replies cached
    at `cache_path` by `smcs profile` (`entries`: the pool file's model entries), embedded
    with the bank's embedder where the gate compares embeddings."""
    snap = bank._snap()
    families = dict(zip(snap.ids, snap.families, strict=True))
    wanted = dict(zip(held.question_ids, held.referencers, strict=True))
    replies = profiled_replies(cache_path, bank.get(list(wanted)), entries, settings, wanted)
    return agreement_evidence(held, replies, families, bank.embedder)

"""Seeded, stratified bank/test splits of a question set, stable across runs and platforms."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from smcs_graph.questions.records import QuestionRecord, category_of

__all__ = ["split_bank_test"]


def split_bank_test(
    records: Sequence[QuestionRecord],
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify_by: str | None = "category",
) -> tuple[list[QuestionRecord], list[QuestionRecord]]:
    """(bank, test): a seeded split, stratified by a record field, in the records' order.

    `stratify_by="category"` (the default) stratifies by `category_of` (the category if set,
    else the family), the rule every grouping of questions follows; another field name
    stratifies by that field as it is; None does not stratify.

    Each stratum gives its share of the `round(len * test_fraction)` test questions (largest
    remainders first); which ones is decided by a SHA-256 of the seed and id, so the split is
    the same on every run, platform and Python version.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (got {test_fraction})")
    if stratify_by is not None and stratify_by not in QuestionRecord.__dataclass_fields__:
        raise ValueError(
            f"cannot stratify by {stratify_by!r}: not a question field "
            f"({', '.join(QuestionRecord.__dataclass_fields__)})"
        )
    ids = [record.id for record in records]
    if len(set(ids)) != len(ids):
        raise ValueError("question ids must be unique to split a set of questions")
    strata: dict[str, list[QuestionRecord]] = {}
    for record in records:
        if stratify_by == "category":
            key = category_of(record)
        else:
            key = str(getattr(record, stratify_by)) if stratify_by else ""
        strata.setdefault(key, []).append(record)
    total = round(len(records) * test_fraction)
    quotas = {key: len(members) * test_fraction for key, members in strata.items()}
    counts = {key: int(quota) for key, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda key: (-(quotas[key] - counts[key]), key))
    for key in by_remainder[: max(0, total - sum(counts.values()))]:
        counts[key] += 1
    test_ids: set[str] = set()
    for key, members in strata.items():
        ranked = sorted(members, key=lambda record: _rank(seed, record.id))
        test_ids.update(record.id for record in ranked[: counts[key]])
    bank = [record for record in records if record.id not in test_ids]
    test = [record for record in records if record.id in test_ids]
    return bank, test


def _rank(seed: int, identifier: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{identifier}".encode()).digest()

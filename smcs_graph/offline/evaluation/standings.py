"""What the bank split says of each pool model (`BankStandings`): who is the best single model,
and the best per category or family (the router)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smcs_graph.bank.store import QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.questions import QuestionRecord

__all__ = ["BankStandings", "bank_standings"]


@dataclass(frozen=True)
class BankStandings:
    """What the bank split says of each pool model: accuracy overall and per category/family."""

    order: list[str]
    """Pool models with bank results, best first (ties: pool order)."""
    accuracy: dict[str, float]
    by_group: dict[str, dict[str, float]]
    """'category:X' or 'family:Y' -> model -> accuracy on those bank questions."""
    unmeasured: list[str]
    """Pool models without any bank result (never chosen by best-single or the router)."""

    @property
    def best(self) -> str:
        return self.order[0]

    def route(self, record: QuestionRecord) -> tuple[str, str]:
        """(model, group): the best model of the record's category, else family, else overall."""
        groups = [f"category:{record.category}"] if record.category else []
        groups.append(f"family:{record.family}")
        rank = {name: i for i, name in enumerate(self.order)}
        for group in groups:
            scores = self.by_group.get(group)
            if scores:
                return min(scores, key=lambda m: (-scores[m], rank[m])), group
        return self.best, "overall"


def bank_standings(bank: QuestionBank, models: Sequence[str]) -> BankStandings:
    """Accuracy of each model over its measured bank questions, overall and per group."""
    import numpy as np

    ids = bank.question_ids()
    capability, measured = bank.capability(list(models))
    questions = bank.get(ids) if ids else []
    groups: dict[str, list[int]] = {}
    for column, question in enumerate(questions):
        if question.category:
            groups.setdefault(f"category:{question.category}", []).append(column)
        groups.setdefault(f"family:{question.family}", []).append(column)

    def accuracies(columns: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        for row, name in enumerate(models):
            mask = measured[row, columns]
            if mask.any():
                out[name] = float(capability[row, columns][mask].mean())
        return out

    accuracy = accuracies(np.arange(len(ids)))
    if not accuracy:
        raise ConfigError(
            f"the bank has no recorded result for any pool model ({', '.join(models)}): "
            "profile the pool on the bank first (`smcs profile --pool FILE --bank PATH`)"
        )
    pool_rank = {name: i for i, name in enumerate(models)}
    order = sorted(accuracy, key=lambda m: (-accuracy[m], pool_rank[m]))
    by_group = {group: accuracies(np.asarray(cols)) for group, cols in groups.items()}
    return BankStandings(
        order=order,
        accuracy=accuracy,
        by_group={g: scores for g, scores in by_group.items() if scores},
        unmeasured=[m for m in models if m not in accuracy],
    )

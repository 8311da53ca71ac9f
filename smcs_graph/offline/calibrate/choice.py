"""What a gate calibration counts beyond the threshold: the follow-up calls the profiled replies
needed, and which prior rule the gate reads (`--rules`).

Follow-ups (`with_followups`): a reply that ends without its final answer gets one more call
(answer recovery), so a question answered alone costs 1 + f calls and an escalated one the K
references' and the n fusions' follow-ups too. f is read per question and model from the
replies `smcs profile` cached (`profiled_replies`): the requests the referencers send are the
profiled ones, so a reply finished by a follow-up there is one here. A profiled reply holds the
follow-up's text after its family's recovery prefix; a model that writes that very prefix
itself counts as one too, so f errs high, the safe side of a budget. A fusion's follow-up is
taken as its aggregator's own reply's on the question; a reply not in the cache, as the model's
mean.

Rule choice (`choose_rule`): each candidate rule's gate is held out on the bank; its measured
accuracy is that of the model it answers alone with (the lower end of the expected band, the
one figure the bank measures). Rules within one paired standard error of the best are tied,
and of those the gate takes the best calibrated (lowest ECE): the calls a threshold spends on
new questions follow the calibration of P(correct).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from smcs_graph.answers import CONTRACTS
from smcs_graph.errors import ConfigError
from smcs_graph.offline.calibrate.thresholds import GateCalibration, HeldOut

__all__ = ["RuleChoice", "choose_rule", "followup_flags", "rule_table", "with_followups"]


def followup_flags(
    replies: Mapping[tuple[str, str], str], families: Mapping[str, str]
) -> dict[tuple[str, str], bool]:
    """{(question id, model): whether the profiled reply was finished by a follow-up}: its
    family's contract recovers answers and the reply holds the recovery prefix."""
    out: dict[tuple[str, str], bool] = {}
    for (qid, model), text in replies.items():
        contract = CONTRACTS.get(families.get(qid, ""))
        prefix = contract.recovery_prefix if contract is not None else None
        out[(qid, model)] = prefix is not None and prefix != "" and prefix in text
    return out


def with_followups(
    held: HeldOut,
    flags: Mapping[tuple[str, str], bool],
    families: Mapping[str, str],
    aggregator: str | None,
) -> HeldOut:
    """`held` with each question's calls alone and escalated counting the follow-ups `flags`
    says its replies needed (`families`: each bank question's answer family, by id; a family
    without answer recovery needs none; a reply not in `flags`: its model's rate on the family;
    `aggregator`: the pool file's, None: the top referencer)."""
    if not flags:
        return held
    seen: dict[tuple[str, str], list[bool]] = {}
    for (qid, model), due in flags.items():
        seen.setdefault((families.get(qid, ""), model), []).append(due)
    rates = {key: float(np.mean(v)) for key, v in seen.items()}

    def extra(qid: str, model: str) -> float:
        family = families.get(qid, "")
        contract = CONTRACTS.get(family)
        if contract is None or not contract.recovery_prefix:
            return 0.0
        found = flags.get((qid, model))
        return float(found) if found is not None else rates.get((family, model), 0.0)

    alone: list[float] = []
    full: list[float] = []
    answers: list[float] = []
    for qid, top, refs in zip(held.question_ids, held.top, held.referencers, strict=True):
        fuser = aggregator or refs[0]
        alone.append(1.0 + extra(qid, top))
        full.append(sum(1.0 + extra(qid, m) for m in refs) + held.n * (1.0 + extra(qid, fuser)))
        answers.extend(extra(qid, m) for m in refs)
    return dataclasses.replace(
        held,
        alone_cost=np.array(alone),
        escalated_cost=np.array(full),
        followup_rate=float(np.mean(answers)) if answers else 0.0,
    )


@dataclass(frozen=True)
class RuleChoice:
    """The gate rule chosen among candidates, and each candidate's figures."""

    rule: str
    results: dict[str, GateCalibration]
    """Each candidate's calibration at the same target, in the order given."""
    standard_error: dict[str, float]
    """Each candidate's paired standard error of its accuracy against the best's."""
    tied: list[str]
    """The candidates within one standard error of the best measured accuracy."""

    @property
    def chosen(self) -> GateCalibration:
        return self.results[self.rule]


def choose_rule(results: Mapping[str, GateCalibration]) -> RuleChoice:
    """Of the candidates (each rule's gate held out on the same bank questions), the best
    calibrated among those within one paired standard error of the best measured accuracy
    (ties: the order given)."""
    if not results:
        raise ConfigError("no prior rule to choose from: give --rules with at least one rule")
    names = list(results)
    right = {name: r.held.top_right.astype(np.float64) for name, r in results.items()}
    sizes = {v.shape[0] for v in right.values()}
    if len(sizes) != 1:
        raise ConfigError("the rules were held out on different bank questions")
    accuracy = {name: float(v.mean()) for name, v in right.items()}
    best = max(names, key=lambda name: accuracy[name])  # first of equals
    errors: dict[str, float] = {}
    for name in names:
        diff = right[best] - right[name]
        errors[name] = (
            float(diff.std(ddof=1) / math.sqrt(diff.shape[0])) if diff.shape[0] > 1 else 0.0
        )
    tied = [n for n in names if accuracy[best] - accuracy[n] <= errors[n] + 1e-12]
    rule = min(tied, key=lambda name: results[name].ece)
    return RuleChoice(rule=rule, results=dict(results), standard_error=errors, tied=tied)


def rule_table(choice: RuleChoice) -> str:
    """The candidates side by side, the chosen one marked."""
    lines = [
        "Prior rule of the gate (held out on the bank; accuracy: the model it answers alone",
        "with; tied: within one paired standard error of the best; of those, the lowest ECE)",
        "  rule      accuracy  s.e.   ECE    threshold  escalated  calls/question",
    ]
    for name, result in choice.results.items():
        c = result.chosen
        mark = "  <- chosen" if name == choice.rule else ("  (tied)" if name in choice.tied else "")
        lines.append(
            f"  {name:<8}  {100 * c.accuracy_low:6.1f} %  "
            f"{100 * choice.standard_error[name]:4.1f}  {result.ece:5.3f}  "
            f"{result.threshold:9.4f}  {100 * c.escalation_rate:7.1f} %  "
            f"{c.calls:14.2f}{mark}"
        )
    return "\n".join(lines)

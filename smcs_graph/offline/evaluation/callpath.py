"""What a method's calls on one question took: its wall time, and whether its answer was cut off.

The evaluation's cached models log every call of a method on a question (`CallLog`, kept by the
question's `CallScope`): its stage, model, text, whether it hit its token limit, and the seconds
the call took *when it was made* (a cached answer keeps its original seconds; None: unknown, a
cache entry stored before they were recorded). `chains` joins each cut-off reply with the
recovery follow-up that finished it; `critical_path` is the method's wall time as if its calls
ran unqueued (stages in sequence, the calls of a stage in parallel): for SMCS the slowest
referencer plus the slowest fusion, for one model its call. Time spent waiting for a slot of the
evaluation's own concurrency limits, embedding and scoring is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smcs_graph import answers

__all__ = ["CallLog", "Chain", "answer_chain", "chains", "critical_path", "no_final_answer"]


@dataclass(frozen=True)
class CallLog:
    """One model call of a method on a question, as the evaluation's cache answered it."""

    stage: str
    model: str
    seconds: float | None
    """Seconds of the call when it was made (None: unknown)."""
    text: str
    hit_limit: bool
    prefilled: str | None = None
    """The unfinished reply it continued, forced prefix included (None: not a follow-up)."""


@dataclass
class Chain:
    """A reply and, when it was cut off and recovered, its follow-up: one answer's calls."""

    stage: str
    model: str
    text: str
    """The reply's text (joined with the follow-up's continuation when there is one)."""
    seconds: float | None
    hit_limit: bool
    recovered: bool = False


def chains(log: Sequence[CallLog]) -> list[Chain]:
    """The log's replies, each follow-up joined to the reply it continues (same model, its
    prefilled turn starting with that reply's text); in log order."""
    out: list[Chain] = []
    for call in log:
        if call.prefilled is not None:
            base = next(
                (
                    c
                    for c in reversed(out)
                    if c.model == call.model
                    and not c.recovered
                    and call.prefilled.startswith(c.text)
                ),
                None,
            )
            if base is not None:
                continuation = call.text
                if continuation.startswith(call.prefilled):  # a server that echoes the turn
                    continuation = continuation[len(call.prefilled) :]
                base.text = call.prefilled + continuation
                base.seconds = (
                    None
                    if base.seconds is None or call.seconds is None
                    else base.seconds + call.seconds
                )
                base.recovered = True
                continue
        out.append(Chain(call.stage, call.model, call.text, call.seconds, call.hit_limit))
    return out


def critical_path(replies: Sequence[Chain]) -> float | None:
    """Wall time of the calls: stages in order of first call, each as long as its slowest
    reply (None: no call, or a call's seconds unknown)."""
    if not replies or any(r.seconds is None for r in replies):
        return None
    slowest: dict[str, float] = {}
    for reply in replies:
        slowest[reply.stage] = max(slowest.get(reply.stage, 0.0), reply.seconds or 0.0)
    return round(sum(slowest.values()), 4)


def answer_chain(replies: Sequence[Chain], answer: str) -> Chain | None:
    """The reply that is `answer` (surrounding whitespace ignored; the last of equal ones)."""
    wanted = answer.strip()
    return next((r for r in reversed(replies) if r.text.strip() == wanted), None)


def no_final_answer(family: str, answer: str) -> bool | None:
    """Whether `answer` states no final answer its family's contract extracts (None: a
    family whose cut-off replies are not recovered: no contract, or code)."""
    contract = answers.CONTRACTS.get(family)
    if contract is None or contract.recovery_prefix is None:
        return None
    return contract.extract(answer) is None

"""Votes and re-scoring of `smcs eval`: what a vote counts, who wins it, and which candidate the
hybrid score picks with one of its terms switched off (the ablations)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from smcs_graph.grading import Verdict

__all__ = ["EXTRACTABLE", "answer_key", "majority_vote", "rescore"]

EXTRACTABLE = ("multiple_choice", "numeric", "math")
"""Families whose graders extract a final answer that votes can count."""


def answer_key(family: str, extracted: str | None) -> str | None:
    """What a vote counts for an extracted answer: a normalized form; None abstains."""
    if extracted is None or not extracted.strip() or family not in EXTRACTABLE:
        return None
    if family == "multiple_choice":
        return extracted.strip().upper()
    if family == "numeric":
        from smcs_graph.grading.numeric import parse_number

        value = parse_number(extracted)
        return None if value is None else repr(value)
    text = extracted.strip().rstrip(".").strip("$ ")
    for noise in (" ", "\\left", "\\right", "\\!", "\\,", "\\displaystyle"):
        text = text.replace(noise, "")
    return text or None


def _math_equivalent(a: str, b: str) -> bool:
    """math-verify in the grader's killable worker, under its hard limit: a hostile answer
    cannot stall the vote."""
    from smcs_graph.grading.math_answer import math_equivalent

    return math_equivalent(a, b)


def majority_vote(family: str, verdicts: Sequence[Verdict]) -> int | None:
    """Index of the answer that wins the vote: the first sample of the largest group of equal
    answers (ties: the group that appears first); None when no sample has an answer to count.

    Math answers are grouped by math-verify equivalence, the others by their `answer_key`.
    """
    groups: list[tuple[str, list[int]]] = []
    for index, verdict in enumerate(verdicts):
        key = answer_key(family, verdict.extracted)
        if key is None:
            continue
        for representative, members in groups:
            same = key == representative or (
                family == "math" and _math_equivalent(representative, key)
            )
            if same:
                members.append(index)
                break
        else:
            groups.append((key, [index]))
    if not groups:
        return None
    largest = max(len(members) for _, members in groups)
    return next(members[0] for _, members in groups if len(members) == largest)


def rescore(candidates: Sequence[Mapping[str, Any]], *, without: str) -> int | None:
    """Position of the candidate the hybrid score (eq. 7) picks with one term switched off.

    `candidates` are a trace's (`similarity`, `perplexity`; a null perplexity is infinite).
    without="similarity": S = 1 - PPL (None when no candidate has a perplexity);
    without="perplexity": S = S_sim (lambda = 0). Ties: the first, as in the graph.
    """
    if without == "similarity":
        if all(c["perplexity"] is None for c in candidates):
            return None
        scores = [
            -math.inf if c["perplexity"] is None else 1.0 - float(c["perplexity"])
            for c in candidates
        ]
    elif without == "perplexity":
        scores = [float(c["similarity"]) for c in candidates]
    else:
        raise ValueError(f"without must be 'similarity' or 'perplexity', got {without!r}")
    best = max(scores)
    return scores.index(best)

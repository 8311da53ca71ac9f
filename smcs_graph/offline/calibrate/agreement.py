"""The agreement gate on the bank: its statistics and `agreement_similarity`, from the replies
`smcs profile` cached.

For each held-out bank question (`HeldOut`: its top-K by the prior rule with the question out
of the bank, and its nearest bank question), the top-K models' replies are read from the
response cache under the keys profiling stored them with (`profiling.question_key` with the
pool file's settings, greedy, seed 0, as `smcs profile` asks by default). They agree as the
gate decides at run time (`nodes.gates.agreement`, on the family of the nearest bank question,
the run's first support example): the same extracted final answer where that family has an
extractor, else the lowest pairwise cosine of their embeddings (the bank's embedder) at least
`agreement_similarity`.

`agreement_similarity` serves the families without an extractor. The chosen one is the
smallest threshold t at which at least `MIN_AGREE` questions agree and, among them, what
collaborating could still add, P(some top-K model right) - P(top model right) (the oracle's
gain; the bank holds no SMCS outcome), is at most a tolerance; with fewer than `MIN_AGREE`
questions decided by similarity it is not calibrated (the run's value stays). `cross_validated`
checks that rule on questions it did not see. The gate is recommended only when it saves calls
at the chosen prior threshold and the oracle's gain on the escalated questions that agree is
within the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from smcs_graph.embedder import Embedder
from smcs_graph.offline.calibrate.thresholds import HeldOut

if TYPE_CHECKING:
    from smcs_graph.bank.records import BankQuestion
    from smcs_graph.config import SMCSConfig

__all__ = [
    "AgreementCalibration",
    "AgreementEvidence",
    "FamilyAgreement",
    "agreement_evidence",
    "check_tolerance",
    "choose_similarity",
    "cross_validated",
    "has_extractor",
    "profiled_replies",
]

THRESHOLD_DIGITS = 4
"""Decimals of a chosen `agreement_similarity` (rounded down: the questions it was chosen on
still agree)."""
CV_FOLDS = 5
"""Folds of `cross_validated`."""
MIN_AGREE = 20
"""Questions that must agree at a threshold for its gain to count (fewer: too noisy; a
tolerance of 0.02 is one question in 50)."""
_EMBED_BATCH = 256


def has_extractor(family: str | None) -> bool:
    """Whether the agreement gate compares `family`'s extracted final answers (else the
    replies' embedding similarity)."""
    from smcs_graph.nodes.gates import _EXTRACTORS  # the gate's own table

    return (family or "") in _EXTRACTORS


@dataclass(frozen=True)
class AgreementEvidence:
    """Per held-out question with a reply of each of its top-K models, what the gate sees."""

    question_ids: list[str]
    families: list[str]
    """The family the gate decides by: the nearest bank question's."""
    extractor: NDArray[np.bool_]
    """Whether that family has an extractor (agreement = the same final answer)."""
    same_answer: NDArray[np.bool_]
    """Extractor families: the replies state the same final answer (else False)."""
    min_similarity: NDArray[np.float64]
    """Other families: the lowest pairwise cosine of the replies (extractor families: NaN)."""
    top_right: NDArray[np.bool_]
    any_right: NDArray[np.bool_]
    p_top: NDArray[np.float64]
    """The prior gate's P(correct) of the top model (which questions escalate)."""
    k: int
    n: int
    missing: dict[str, int]
    """Per question family, held-out questions lacking a cached reply of some top-K model."""

    def agree(self, threshold: float) -> NDArray[np.bool_]:
        """Which questions the gate finds in agreement at `agreement_similarity=threshold`."""
        with np.errstate(invalid="ignore"):
            similar = self.min_similarity >= threshold
        return np.where(self.extractor, self.same_answer, similar)


@dataclass(frozen=True)
class FamilyAgreement:
    """One family's agreement at the chosen threshold."""

    family: str
    method: str
    """'answer' (the same extracted final answer) or 'similarity'."""
    questions: int
    agree: int
    top_agree: float | None
    """The top model's accuracy on the questions that agree (None: none)."""
    top_rest: float | None
    """Its accuracy on the others (None: none)."""
    gain_agree: float | None
    """P(some top-K right) - P(top right) on the questions that agree (None: none)."""


@dataclass(frozen=True)
class AgreementCalibration:
    """The chosen `agreement_similarity`, what it expects, and the recommendation."""

    evidence: AgreementEvidence
    tolerance: float
    threshold: float | None
    """The chosen agreement_similarity; None: not calibrated (`why_not`)."""
    qualified: bool
    """Whether some threshold met the tolerance (else `threshold` is 1.0: never by similarity)."""
    current: float
    """The run's agreement_similarity (what the figures use when `threshold` is None)."""
    why_not: str | None
    """Why `threshold` is None."""
    families: list[FamilyAgreement]
    sweep: list[tuple[float, int, float]]
    """Similarity questions: (threshold, questions that agree, their oracle gain)."""
    prior_threshold: float
    calls_prior: float
    """Expected calls per question (the questions with replies) with the prior gate alone."""
    calls_both: float
    """... with the agreement gate on too (an escalated question that agrees: K calls)."""
    calls_always_agreement: float
    """... collaborating always, with the agreement gate (K + n without it)."""
    escalated_agree: int
    """Escalated questions that agree (where the gate saves n calls each)."""
    gain_escalated: float | None
    """The oracle's gain on those (None: none)."""
    recommend: bool
    reason: str


@dataclass(frozen=True)
class _Prompts:
    """What `models.prompts.prompt_digest` reads of a pool entry (no chat model is built)."""

    name: str
    system_prompt: str
    templates: Mapping[str, str]


def _entry_prompts(entries: Sequence[Mapping[str, Any]]) -> dict[str, _Prompts]:
    from smcs_graph.models.prompts import check_prompts

    out: dict[str, _Prompts] = {}
    for entry in entries:
        name = str(entry["name"])
        system = entry.get("system_prompt") or ""
        out[name] = _Prompts(
            name, system, check_prompts(name, system, entry.get("templates") or {})
        )
    return out


def profiled_replies(
    cache_path: Path,
    questions: Sequence[BankQuestion],
    entries: Sequence[Mapping[str, Any]],
    settings: SMCSConfig,
    wanted: Mapping[str, Sequence[str]],
) -> dict[tuple[str, str], str]:
    """{(question id, model): reply text} of the replies cached at `cache_path` for `wanted`
    ({question id: models}), under the keys `smcs profile` stores them with (`settings`: the
    run's SMCSConfig; `questions`: the bank's `BankQuestion`s; `entries`: the pool file's model
    entries). A reply cached before its contract also finished replies that ended without a
    final answer counts when it states one (no follow-up would be due: the same reply)."""
    from smcs_graph import answers
    from smcs_graph.models.prompts import prompt_digest
    from smcs_graph.offline.cache import ResponseCache
    from smcs_graph.offline.profiling.settings import GenerationSettings, question_key
    from smcs_graph.questions import QuestionFormatError, prompt_for

    prompts = _entry_prompts(entries)
    generation = GenerationSettings.from_settings(settings)
    current: dict[str, tuple[str, str]] = {}
    earlier: dict[str, tuple[tuple[str, str], str, int]] = {}
    for question in questions:
        models = wanted.get(question.id)
        if not models:
            continue
        try:
            record = question.to_record()
        except QuestionFormatError:
            continue
        narrowed = generation.for_family(record.family)
        prompt = prompt_for(record)
        for model in models:
            if model not in prompts:
                continue
            digest = prompt_digest(cast(Any, prompts[model]), record.family)
            parts = (model, record.id, record.question, prompt, narrowed, digest)
            current[question_key(*parts)] = (question.id, model)
            contract = narrowed.recovery
            if contract is not None and contract.recover_unfinished:
                old = question_key(*parts, unfinished=False)
                earlier[old] = ((question.id, model), record.family, narrowed.max_tokens)
    with ResponseCache(cache_path) as cache:
        found = cache.get_many(list(current))
        replies = {current[key]: response.text for key, response in found.items()}
        late = [key for key, pair in earlier.items() if pair[0] not in replies]
        for key, response in cache.get_many(late).items():
            pair, family, limit = earlier[key]
            if not answers.needs_recovery(family, response.to_message(), limit):
                replies[pair] = response.text
    return replies


def agreement_evidence(
    held: HeldOut,
    replies: Mapping[tuple[str, str], str],
    families: Mapping[str, str],
    embedder: Embedder,
) -> AgreementEvidence:
    """The gate's view of each held-out question whose top-K models all have a reply
    (`families`: every bank question's family, by id)."""
    from smcs_graph.nodes.gates import agreement

    kept: list[int] = []
    texts: list[list[str]] = []
    missing: dict[str, int] = {}
    for i, qid in enumerate(held.question_ids):
        got = [replies.get((qid, m)) for m in held.referencers[i]]
        if len(got) >= 2 and None not in got:
            kept.append(i)
            texts.append([t for t in got if t is not None])
        else:
            family = families.get(qid, "?")
            missing[family] = missing.get(family, 0) + 1
    gate_family = [families.get(held.nearest[i], "?") for i in kept]
    extractor = np.array([has_extractor(f) for f in gate_family], dtype=bool)
    same = np.zeros(len(kept), dtype=bool)
    lowest = np.full(len(kept), np.nan)
    for j, family in enumerate(gate_family):
        if extractor[j]:
            same[j] = bool(agreement(texts[j], family, embedder, 1.0)["agree"])
    similar = [j for j in range(len(kept)) if not extractor[j]]
    vectors = _embedded([t for j in similar for t in texts[j]], embedder)
    start = 0
    for j in similar:
        block = vectors[start : start + len(texts[j])]
        start += len(texts[j])
        cosines = block @ block.T
        lowest[j] = float(cosines[np.triu_indices(len(block), 1)].min())
    index = np.array(kept, dtype=np.intp)
    return AgreementEvidence(
        question_ids=[held.question_ids[i] for i in kept],
        families=gate_family,
        extractor=extractor,
        same_answer=same,
        min_similarity=lowest,
        top_right=held.top_right[index],
        any_right=held.any_right[index],
        p_top=held.p_top[index],
        k=held.k,
        n=held.n,
        missing=dict(sorted(missing.items())),
    )


def _embedded(texts: Sequence[str], embedder: Embedder) -> NDArray[np.float64]:
    """Unit vectors of `texts` (each distinct text embedded once), as the gate normalizes."""
    distinct = list(dict.fromkeys(texts))
    if not distinct:
        return np.zeros((0, 1))
    parts = [
        np.asarray(embedder.embed(distinct[i : i + _EMBED_BATCH]), dtype=np.float64)
        for i in range(0, len(distinct), _EMBED_BATCH)
    ]
    vectors = np.concatenate(parts)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    row = {text: i for i, text in enumerate(distinct)}
    return vectors[[row[t] for t in texts]]


def check_tolerance(tolerance: float) -> None:
    """ConfigError unless `tolerance` is a fraction in [0, 1]."""
    from smcs_graph.errors import ConfigError

    if not (math.isfinite(tolerance) and 0.0 <= tolerance <= 1.0):
        raise ConfigError(
            f"--agreement-tolerance {tolerance:g} is impossible: give a fraction in [0, 1] "
            "(e.g. 0.02: collaborating may add at most 2 points on the questions that agree)"
        )


def _gain(ev: AgreementEvidence, chosen: NDArray[np.bool_]) -> float | None:
    if not chosen.any():
        return None
    return float(ev.any_right[chosen].mean() - ev.top_right[chosen].mean())


def _floor(value: float) -> float:
    scale = 10**THRESHOLD_DIGITS
    return math.floor(value * scale) / scale


def _smallest_within(
    lowest: NDArray[np.float64], top: NDArray[np.bool_], any_: NDArray[np.bool_], tolerance: float
) -> tuple[float, bool, list[tuple[float, int, float]]]:
    """The smallest threshold at which at least `MIN_AGREE` questions agree and their oracle
    gain is within `tolerance` (1.0 and False when none is), and the sweep over every
    candidate threshold."""
    sweep: list[tuple[float, int, float]] = []
    for t in sorted({_floor(float(v)) for v in lowest}):
        agree = lowest >= t
        sweep.append((t, int(agree.sum()), float(any_[agree].mean() - top[agree].mean())))
    for t, count, gain in sweep:
        if count >= MIN_AGREE and gain <= tolerance + 1e-12:
            return t, True, sweep
    return 1.0, False, sweep


def choose_similarity(
    ev: AgreementEvidence, *, tolerance: float, prior_threshold: float, current: float
) -> AgreementCalibration:
    """`agreement_similarity` for the families without an extractor, each family's agreement
    at it (at `current`, the run's, when it is not calibrated), the expected calls with the
    prior gate at `prior_threshold`, and whether to turn the gate on (see the module
    docstring)."""
    check_tolerance(tolerance)
    similar = ~ev.extractor
    count = int(similar.sum())
    threshold: float | None = None
    qualified, why_not = False, None
    sweep: list[tuple[float, int, float]] = []
    if count == 0:
        why_not = "no question with replies is decided by similarity"
    elif count < MIN_AGREE:
        why_not = f"only {count} questions with replies are decided by similarity (< {MIN_AGREE})"
    else:
        threshold, qualified, sweep = _smallest_within(
            ev.min_similarity[similar], ev.top_right[similar], ev.any_right[similar], tolerance
        )
    agree = ev.agree(threshold if threshold is not None else current)
    rows = []
    for family in sorted(set(ev.families)):
        mine = np.array([f == family for f in ev.families], dtype=bool)
        yes, no = mine & agree, mine & ~agree
        rows.append(
            FamilyAgreement(
                family=family,
                method="answer" if has_extractor(family) else "similarity",
                questions=int(mine.sum()),
                agree=int(yes.sum()),
                top_agree=float(ev.top_right[yes].mean()) if yes.any() else None,
                top_rest=float(ev.top_right[no].mean()) if no.any() else None,
                gain_agree=_gain(ev, yes),
            )
        )
    full = ev.k + ev.n
    escalated = ev.p_top < prior_threshold
    saved = escalated & agree
    size = max(len(ev.question_ids), 1)
    calls_prior = float((1 + escalated * (full - 1)).sum()) / size
    calls_both = calls_prior - ev.n * float(saved.sum()) / size
    gain = _gain(ev, saved)
    if ev.k < 2 or ev.n == 0:
        recommend, reason = False, "K < 2 or n = 0: there is no fusion for the gate to skip"
    elif not saved.any():
        recommend = False
        reason = "no escalated bank question agrees: the gate would save no call"
    elif gain is not None and gain > tolerance + 1e-12:
        recommend = False
        reason = (
            f"on the escalated questions that agree, collaborating could still add "
            f"{100 * gain:.1f} points (> the tolerance {100 * tolerance:g})"
        )
    else:
        recommend = True
        reason = (
            f"{int(saved.sum())} escalated questions agree; on them collaborating could add "
            f"{100 * (gain or 0.0):.1f} points (tolerance {100 * tolerance:g}): "
            f"{calls_prior:.2f} -> {calls_both:.2f} calls per question"
        )
    return AgreementCalibration(
        evidence=ev,
        tolerance=tolerance,
        threshold=threshold,
        qualified=qualified,
        current=current,
        why_not=why_not,
        families=rows,
        sweep=sweep,
        prior_threshold=prior_threshold,
        calls_prior=calls_prior,
        calls_both=calls_both,
        calls_always_agreement=full - ev.n * float(agree.mean()) if len(agree) else float(full),
        escalated_agree=int(saved.sum()),
        gain_escalated=gain,
        recommend=recommend,
        reason=reason,
    )


def cross_validated(
    ev: AgreementEvidence, *, tolerance: float, folds: int = CV_FOLDS, seed: int = 0
) -> tuple[int, int, float | None] | None:
    """The similarity rule on questions it did not see: the threshold chosen on the other
    folds, applied to each fold; (questions decided by similarity, those that agree, their
    oracle gain). None: too few questions decided by similarity (`MIN_AGREE`)."""
    similar = np.flatnonzero(~ev.extractor)
    if similar.size < max(folds, MIN_AGREE):
        return None
    from smcs_graph.offline.calibrate.heldout import fold_of

    assignment = fold_of(int(similar.size), folds, seed)
    lowest, top, any_ = (
        ev.min_similarity[similar],
        ev.top_right[similar],
        ev.any_right[similar],
    )
    agree = np.zeros(similar.size, dtype=bool)
    for fold in range(folds):
        train, test = assignment != fold, assignment == fold
        t, _, _ = _smallest_within(lowest[train], top[train], any_[train], tolerance)
        agree[test] = lowest[test] >= t
    gain = float(any_[agree].mean() - top[agree].mean()) if agree.any() else None
    return int(similar.size), int(agree.sum()), gain

"""How profiling asks each bank question (`GenerationSettings`), the cache key of one answer,
what a matrix records about how its cells were measured, and where the response cache lies."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smcs_graph.answers import CONTRACTS, PROMPT_VERSION, AnswerContract
from smcs_graph.bank.store import QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.offline.cache import request_key

if TYPE_CHECKING:
    from smcs_graph.config import SMCSConfig

__all__ = [
    "COMPARED",
    "DEFAULT_CONCURRENCY",
    "GenerationSettings",
    "default_cache_path",
    "prompt_digest",
    "question_key",
    "settings_changes",
]

DEFAULT_CONCURRENCY = 4
"""Calls in flight per model when neither the caller nor the pool entry sets a limit."""


@dataclass(frozen=True)
class GenerationSettings:
    """How each bank question is asked; part of every cache key."""

    max_tokens: int = 1024
    temperature: float = 0.0
    seed: int | None = 0
    family_max_tokens: tuple[tuple[str, int], ...] = ()
    """Per-family answer limits that replace `max_tokens`, e.g. (("multiple_choice", 64),):
    a letter needs few tokens, a program many."""
    answer_recovery: bool = False
    """Finish a reply cut off at its limit before its final answer with one follow-up call
    (`smcs_graph.answers`), for the families whose contract has a recovery prefix."""
    prompt_version: int = PROMPT_VERSION
    """`answers.PROMPT_VERSION` of the prompts (recorded with a matrix; not part of the key:
    the prompt text is)."""
    family: str | None = None
    """The family these settings were narrowed to (`for_family`); None: not narrowed."""

    @classmethod
    def from_settings(
        cls, settings: SMCSConfig, *, temperature: float = 0.0, seed: int | None = 0
    ) -> GenerationSettings:
        """Profiling settings from the runtime's: its per-family limits
        (`settings.tokens_for`), its `answer_recovery` and the current prompt version, with
        profiling's own `temperature` and `seed` (greedy by default)."""
        return cls(
            max_tokens=settings.max_tokens,
            temperature=temperature,
            seed=seed,
            family_max_tokens=tuple((f, settings.tokens_for(f)) for f in sorted(CONTRACTS)),
            answer_recovery=settings.answer_recovery,
            prompt_version=PROMPT_VERSION,
        )

    def __post_init__(self) -> None:
        for label, value in (("max_tokens", self.max_tokens), *self.family_max_tokens):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"max_tokens for {label} must be an integer >= 1, got {value!r}")
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature!r}")

    def for_family(self, family: str) -> GenerationSettings:
        """The settings one question of `family` is asked with (its cache key uses these):
        its limit, and recovery only where its contract has a recovery prefix."""
        limit = dict(self.family_max_tokens).get(family, self.max_tokens)
        recovers = self.answer_recovery and _recoverable(family) is not None
        return replace(
            self, max_tokens=limit, family_max_tokens=(), answer_recovery=recovers, family=family
        )

    @property
    def recovery(self) -> AnswerContract | None:
        """The contract whose recovery these (narrowed) settings apply; None: no recovery."""
        return _recoverable(self.family) if self.answer_recovery else None

    def record(self, family: str) -> dict[str, Any]:
        """What a matrix records about how its `family` cells were measured (JSON-safe);
        `settings_changes` compares two records on `COMPARED`."""
        narrowed = self.for_family(family)
        contract = narrowed.recovery
        return {
            "prompt_version": self.prompt_version,
            "prompt_sha256": prompt_digest(family),
            "max_tokens": narrowed.max_tokens,
            "recovery": None
            if contract is None
            else {
                "prefix": contract.recovery_prefix,
                "tokens": contract.recovery_tokens,
                "unfinished": contract.recover_unfinished,
            },
            "temperature": float(self.temperature),
            "seed": self.seed,
        }

    def call_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return kwargs


def question_key(
    model: str,
    question_id: str,
    question: str,
    prompt: str,
    settings: GenerationSettings,
    model_prompt: str = "",
    *,
    unfinished: bool | None = None,
) -> str:
    """The cache key of one answer: model, question id and text, prompt and settings, with
    recovery on (`settings.recovery`) the recovery prefix and its token limit, and with a
    model prompt of the pool entry's own (`model_prompt`: `models.prompts.prompt_digest`)
    that digest.

    Without recovery and model prompt, the same key as version 1 of the cache, so its
    responses are still hits. A contract that also finishes replies that ended without an
    answer (`recover_unfinished`) adds that to the key; `unfinished=False` gives the key the
    same answer had when recovery finished only cut-off replies (what the run reuses, adding
    only the follow-ups that are now due). The prompt version is not in the key: the prompt
    text is, so new wording re-asks exactly the families whose prompts changed.
    """
    generation: dict[str, Any] = {
        "max_tokens": settings.max_tokens,
        "temperature": settings.temperature,
        "seed": settings.seed,
    }
    contract = settings.recovery
    if contract is not None:
        generation["recovery"] = [contract.recovery_prefix, contract.recovery_tokens]
        if contract.recover_unfinished if unfinished is None else unfinished:
            generation["recovery"].append("unfinished")
    request: dict[str, Any] = {
        "question_id": question_id,
        "question_sha256": hashlib.sha256(question.encode("utf-8")).hexdigest(),
        "prompt": prompt,
        "settings": generation,
    }
    if model_prompt:
        request["model_prompt"] = model_prompt
    return request_key(model, request)


COMPARED = ("prompt_sha256", "max_tokens", "recovery", "temperature", "seed")
"""The parts of a family's record that decide its answers (the prompt version is a label)."""


def settings_changes(
    recorded: Mapping[str, Mapping[str, Any]],
    settings: GenerationSettings,
    families: Iterable[str],
) -> dict[str, list[str]]:
    """Per family, the `COMPARED` settings whose `recorded` value differs from `settings`
    (a family without a record: every one); families that match are left out."""
    changes: dict[str, list[str]] = {}
    for family in families:
        now, then = settings.record(family), recorded.get(family)
        differ = [k for k in COMPARED if then is None or then.get(k) != now[k]]
        if differ:
            changes[family] = differ
    return changes


def prompt_digest(family: str) -> str:
    """A digest of how `questions.prompt_for` lays out a `family` question (instruction and
    layout, from fixed sample records): it changes when the family's prompts change."""
    from smcs_graph.questions import QuestionRecord, prompt_for

    choices = ("ONE", "TWO") if family == "multiple_choice" else ()
    sample = QuestionRecord(id="q", family=family, question="QUESTION", choices=choices, tests="T")
    samples = [sample, replace(sample, entry_point="f")] if family == "code" else [sample]
    text = "\x00".join(prompt_for(one) for one in samples)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _recoverable(family: str | None) -> AnswerContract | None:
    contract = CONTRACTS.get(family or "")
    return contract if contract is not None and contract.recovery_prefix else None


def default_cache_path(bank: QuestionBank) -> Path | None:
    """`<bank folder>.responses.sqlite` beside an on-disk bank; None for other banks.

    Beside the bank, not inside it, so that rebuilding the bank keeps the paid responses.
    """
    where = Path(bank.where)
    if bank.where == "memory" or "://" in bank.where or not where.is_dir():
        return None
    return where.with_name(f"{where.name}.responses.sqlite")

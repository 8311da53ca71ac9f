"""How profiling asks each bank question (`GenerationSettings`), the cache key of one answer,
and where the response cache lies by default."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from smcs_graph.bank.store import QuestionBank
from smcs_graph.errors import ConfigError
from smcs_graph.offline.cache import request_key

__all__ = ["DEFAULT_CONCURRENCY", "GenerationSettings", "default_cache_path", "question_key"]

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

    def __post_init__(self) -> None:
        for label, value in (("max_tokens", self.max_tokens), *self.family_max_tokens):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"max_tokens for {label} must be an integer >= 1, got {value!r}")
        if not isinstance(self.temperature, int | float) or self.temperature < 0:
            raise ConfigError(f"temperature must be a number >= 0, got {self.temperature!r}")

    def for_family(self, family: str) -> GenerationSettings:
        """The settings one question of `family` is asked with (its cache key uses these)."""
        if not self.family_max_tokens:
            return self
        limit = dict(self.family_max_tokens).get(family, self.max_tokens)
        return replace(self, max_tokens=limit, family_max_tokens=())

    def call_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        return kwargs


def question_key(
    model: str, question_id: str, question: str, prompt: str, settings: GenerationSettings
) -> str:
    """The cache key of one answer: model, question id and text, prompt and settings.

    The same key as version 1 of the cache, so its responses are still hits.
    """
    return request_key(
        model,
        {
            "question_id": question_id,
            "question_sha256": hashlib.sha256(question.encode("utf-8")).hexdigest(),
            "prompt": prompt,
            "settings": {
                "max_tokens": settings.max_tokens,
                "temperature": settings.temperature,
                "seed": settings.seed,
            },
        },
    )


def default_cache_path(bank: QuestionBank) -> Path | None:
    """`<bank folder>.responses.sqlite` beside an on-disk bank; None for other banks.

    Beside the bank, not inside it, so that rebuilding the bank keeps the paid responses.
    """
    where = Path(bank.where)
    if bank.where == "memory" or "://" in bank.where or not where.is_dir():
        return None
    return where.with_name(f"{where.name}.responses.sqlite")

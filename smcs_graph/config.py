"""The one typed configuration of an SMCS run, with the paper's defaults (section A.3).

`SMCSConfig` is the graph's context schema: LangGraph passes it to every node as
`runtime.context`, and LangGraph Studio shows each field's description.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from smcs_graph.errors import ConfigError

DropMode = Literal["paper", "authors"]
SimilarityMode = Literal["paper", "authors"]
SupportRule = Literal["paper", "authors"]
PriorRule = Literal["paper", "shrunk", "hier"]


def _describe(text: str) -> dict[str, str]:
    return {"description": text}


@dataclass(kw_only=True)
class SMCSConfig:
    """Settings of one SMCS run. Defaults are the paper's (remote pools of 20B-72B models)."""

    k: int = field(
        default=7,
        metadata=_describe(
            "Number of referencers (top-K models by prior). Capped at the pool size; the trace "
            "notes when the cap applied."
        ),
    )
    n_sup_base: int = field(
        default=400,
        metadata=_describe(
            "N_sup_base: the rank whose similarity, times gamma, is the support-set threshold."
        ),
    )
    gamma: float = field(
        default=0.95,
        metadata=_describe("Support-set slack in (0, 1]: keep questions with S >= gamma * S_(N)."),
    )
    weighted_prior: bool = field(
        default=True,
        metadata=_describe(
            "Prior = similarity-weighted count of correct answers on the support set (eq. 4). "
            "False counts correct answers unweighted."
        ),
    )
    prior_rule: PriorRule = field(
        default="paper",
        metadata=_describe(
            "'paper': eq. 4, the similarity-weighted count of correct support answers. "
            "'shrunk': each model's similarity-weighted support accuracy shrunk toward its "
            "bank-wide accuracy (better top-1 and ranking in the MMLU-Pro replay). "
            "'hier': support accuracy shrunk toward the accuracy on the query's inferred "
            "category (from its bank neighbours' categories), itself shrunk toward the "
            "bank-wide accuracy (the best top-1 and ranking in the MMLU-Pro replay)."
        ),
    )
    shrink_strength: float = field(
        default=10.0,
        metadata=_describe("'shrunk' rule: pseudo-count pulling local accuracy to the global one."),
    )
    shrink_temperature: float | None = field(
        default=0.1,
        metadata=_describe(
            "'shrunk' rule: support weights exp((S - max S) / T); unset: weights max(S, 0)."
        ),
    )
    hier_strength: float = field(
        default=0.5,
        metadata=_describe(
            "'hier' rule: pseudo-count pulling local accuracy to the inferred-category one "
            "(in kernel units: a support question identical to the query weighs 1)."
        ),
    )
    hier_temperature: float = field(
        default=0.1,
        metadata=_describe("'hier' rule: support weights exp(-(1 - S) / T)."),
    )
    hier_category_temperature: float = field(
        default=0.05,
        metadata=_describe(
            "'hier' rule: the query's category shares are a vote of its support questions' "
            "categories with weights exp((S - max S) / T)."
        ),
    )
    hier_category_strength: float = field(
        default=10.0,
        metadata=_describe(
            "'hier' rule: pseudo-count (in questions) pulling each category's accuracy to the "
            "bank-wide one."
        ),
    )
    k_drop: int = field(
        default=1,
        metadata=_describe("References dropped from each aggregation subset (prior drop)."),
    )
    n_aggregations: int = field(
        default=8,
        metadata=_describe("n: number of prior-drop subsets, each fused by the aggregator."),
    )
    lam: float = field(
        default=1.0,
        metadata=_describe("lambda: weight of the perplexity term in the hybrid score (eq. 7)."),
    )
    temperature: float = field(
        default=0.7, metadata=_describe("Sampling temperature of referencers and aggregator.")
    )
    presence_penalty: float = field(
        default=1.05, metadata=_describe("Presence penalty sent with every generation request.")
    )
    max_tokens: int = field(
        default=8192, metadata=_describe("Maximum output tokens per generation.")
    )
    aggregator: str | None = field(
        default=None,
        metadata=_describe(
            "Name of the pool model that fuses the references. Unset: the model with the "
            "highest prior on this question's support set."
        ),
    )
    min_referencers: int = field(
        default=1,
        metadata=_describe(
            "Quorum: referencers that must answer for the run to go on; failed ones are left "
            "out and named in the trace."
        ),
    )
    referencer_timeout_s: float | None = field(
        default=None,
        metadata=_describe("Per-call timeout for referencers in seconds (unset: none)."),
    )
    aggregation_timeout_s: float | None = field(
        default=None,
        metadata=_describe("Per-call timeout for aggregations in seconds (unset: none)."),
    )
    seed: int | None = field(
        default=None,
        metadata=_describe(
            "Seed of the prior-drop sampling and of generation requests (unset: random)."
        ),
    )
    drop_mode: DropMode = field(
        default="paper",
        metadata=_describe(
            "'paper': z-scored softmax over the selected priors. 'authors': the released code's "
            "exp((d - mean d)/D) distribution (nearly uniform at realistic prior sizes)."
        ),
    )
    similarity_mode: SimilarityMode = field(
        default="paper",
        metadata=_describe(
            "'paper': mean similarity to the other candidates. 'authors': includes the "
            "candidate itself and divides by n, as the released code does."
        ),
    )
    support_rule: SupportRule = field(
        default="paper",
        metadata=_describe(
            "'paper': S_i >= gamma * (N_sup_base-th largest). 'authors': strict '>' against the "
            "(N_sup_base+1)-th largest, as the released code does."
        ),
    )
    max_concurrency: int = field(
        default=64,
        metadata=_describe("Upper bound on model calls running at once within one run."),
    )

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError(
                "invalid SMCS configuration: " + "; ".join(problems) + ". Fix these values "
                "(see SMCSConfig's field descriptions for what each one means)."
            )

    def replace(self, **changes: Any) -> SMCSConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SMCSConfig:
        """Build from a mapping (e.g. a parsed YAML `smcs:` section); unknown keys are errors."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown SMCS setting(s): {', '.join(unknown)}. "
                f"Known settings: {', '.join(sorted(known))}."
            )
        try:
            return cls(**dict(values))
        except TypeError as exc:  # pragma: no cover - dataclass signature errors
            raise ConfigError(f"invalid SMCS configuration: {exc}") from exc


def context_schema(defaults: SMCSConfig) -> type[SMCSConfig]:
    """`SMCSConfig` itself for the paper's defaults, else a subclass whose field defaults are
    `defaults`: LangGraph fills a run's partial context (a mapping from its HTTP API or Studio)
    from the schema's defaults, so a graph built with local settings keeps them for every field
    a run does not set. Studio's settings form shows the same defaults."""
    if defaults == SMCSConfig():
        return SMCSConfig
    specs = [
        (
            f.name,
            f.type,
            dataclasses.field(default=getattr(defaults, f.name), metadata=f.metadata),
        )
        for f in dataclasses.fields(SMCSConfig)
    ]
    schema = dataclasses.make_dataclass("SMCSConfig", specs, bases=(SMCSConfig,), kw_only=True)
    schema.__module__ = __name__
    schema.__doc__ = SMCSConfig.__doc__
    schema.__qualname__ = "SMCSConfig"
    return schema


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problems(cfg: SMCSConfig) -> list[str]:
    out: list[str] = []
    for name in (
        "k",
        "n_sup_base",
        "n_aggregations",
        "max_tokens",
        "min_referencers",
        "max_concurrency",
    ):
        value = getattr(cfg, name)
        if not _is_int(value) or value < 1:
            out.append(f"{name} must be an integer >= 1 (got {value!r})")
    if not _is_int(cfg.k_drop) or cfg.k_drop < 0:
        out.append(f"k_drop must be an integer >= 0 (got {cfg.k_drop!r})")
    elif _is_int(cfg.k) and cfg.k_drop >= cfg.k and cfg.k > 1:
        out.append(f"k_drop ({cfg.k_drop}) must be smaller than k ({cfg.k})")
    if not _is_number(cfg.gamma) or not 0 < cfg.gamma <= 1:
        out.append(f"gamma must be a number in (0, 1] (got {cfg.gamma!r})")
    if not _is_number(cfg.lam) or cfg.lam < 0:
        out.append(f"lam must be a number >= 0 (got {cfg.lam!r})")
    if not _is_number(cfg.temperature) or cfg.temperature < 0:
        out.append(f"temperature must be a number >= 0 (got {cfg.temperature!r})")
    if not _is_number(cfg.presence_penalty):
        out.append(f"presence_penalty must be a number (got {cfg.presence_penalty!r})")
    for name in ("referencer_timeout_s", "aggregation_timeout_s"):
        value = getattr(cfg, name)
        if value is not None and (not _is_number(value) or value <= 0):
            out.append(f"{name} must be a positive number of seconds or unset (got {value!r})")
    if cfg.seed is not None and not _is_int(cfg.seed):
        out.append(f"seed must be an integer or unset (got {cfg.seed!r})")
    if cfg.aggregator is not None and (not isinstance(cfg.aggregator, str) or not cfg.aggregator):
        out.append(f"aggregator must be a model name or unset (got {cfg.aggregator!r})")
    if not _is_number(cfg.shrink_strength) or cfg.shrink_strength < 0:
        out.append(f"shrink_strength must be a number >= 0 (got {cfg.shrink_strength!r})")
    if cfg.shrink_temperature is not None and (
        not _is_number(cfg.shrink_temperature) or cfg.shrink_temperature <= 0
    ):
        out.append(
            f"shrink_temperature must be a number > 0 or unset (got {cfg.shrink_temperature!r})"
        )
    for name in ("hier_strength", "hier_category_strength"):
        value = getattr(cfg, name)
        if not _is_number(value) or value < 0:
            out.append(f"{name} must be a number >= 0 (got {value!r})")
    for name in ("hier_temperature", "hier_category_temperature"):
        value = getattr(cfg, name)
        if not _is_number(value) or value <= 0:
            out.append(f"{name} must be a number > 0 (got {value!r})")
    for name, allowed in (
        ("prior_rule", ("paper", "shrunk", "hier")),
        ("drop_mode", ("paper", "authors")),
        ("similarity_mode", ("paper", "authors")),
        ("support_rule", ("paper", "authors")),
    ):
        if getattr(cfg, name) not in allowed:
            out.append(f"{name} must be one of {allowed} (got {getattr(cfg, name)!r})")
    return out

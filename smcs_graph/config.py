"""The one typed configuration of an SMCS run, with the paper's defaults (section A.3).

`SMCSConfig` is the graph's context schema: LangGraph passes it to every node as
`runtime.context`, and LangGraph Studio shows each field's description.

Each setting's allowed values are declared here once: a `Literal` type for the named modes
(`choices(name)` lists them for the CLI) and bounds in the field's metadata (`ge`, `gt`,
`le`), from which `SMCSConfig` validates and phrases its errors. Settings that size a run's
work (calls, tokens, seconds) have upper bounds too, far above any real use, so that a typo
such as `n_aggregations=1000` is an error rather than a thousand model calls.

Names: an `SMCSConfig` value is called `settings` everywhere in the code; `config` means
LangGraph's `RunnableConfig` (callbacks, tags, `max_concurrency`) and nothing else. Public
keywords that predate this rule (`build_graph(config=...)`, `SMCSChatModel(config=...)`) keep
their names.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from smcs_graph.errors import ConfigError

T = TypeVar("T")

DropMode = Literal["paper", "authors"]
SimilarityMode = Literal["paper", "authors"]
SupportRule = Literal["paper", "authors"]
PriorRule = Literal["paper", "shrunk", "hier", "learned"]
Collaboration = Literal["always", "adaptive"]
"""Whether every question gets the full method ("always", the paper) or the gates decide."""
SubsetDraws = Literal["distinct", "independent"]
"""How the n prior-drop subsets are drawn: without repeating a subset, or i.i.d. (the paper)."""
"""How priors are formed: "paper" (eq. 4), "shrunk", "hier" or "learned" (beyond the paper)."""


def _describe(
    text: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    noun: str | None = None,
) -> dict[str, Any]:
    """Field metadata: the description Studio shows, and the bounds `SMCSConfig` enforces
    (`ge` >=, `gt` >, `le` <=; `noun` names the kind in errors)."""
    bounds = {"ge": ge, "gt": gt, "le": le, "noun": noun}
    return {"description": text, **{k: v for k, v in bounds.items() if v is not None}}


def _setting(default: T, text: str, **bounds: Any) -> T:
    """A setting's dataclass field: its default, and `_describe(text, **bounds)` as metadata."""
    return field(default=default, metadata=_describe(text, **bounds))


@dataclass(kw_only=True)
class SMCSConfig:
    """Settings of one SMCS run. Defaults are the paper's (remote pools of 20B-72B models)."""

    k: int = _setting(
        7,
        "Number of referencers (top-K models by prior), at most 256 (pools have tens of "
        "models). Capped at the pool size, less the models the circuit breaker passes "
        "over; the trace notes when the cap applied.",
        ge=1,
        le=256,
    )
    n_sup_base: int = _setting(
        400,
        "N_sup_base: the rank whose similarity, times gamma, is the support-set threshold; "
        "at most 10,000,000 (a bank larger than any built).",
        ge=1,
        le=10_000_000,
    )
    gamma: float = _setting(
        0.95, "Support-set slack in (0, 1]: keep questions with S >= gamma * S_(N).", gt=0, le=1
    )
    weighted_prior: bool = _setting(
        True,
        "Prior = similarity-weighted count of correct answers on the support set (eq. 4). "
        "False counts correct answers unweighted.",
    )
    prior_rule: PriorRule = _setting(
        "paper",
        "'paper': eq. 4, the similarity-weighted count of correct support answers. "
        "'shrunk': each model's similarity-weighted support accuracy shrunk toward its "
        "bank-wide accuracy (better top-1 and ranking in the MMLU-Pro replay). "
        "'hier': support accuracy shrunk toward the accuracy on the query's inferred "
        "category (from its bank neighbours' categories), itself shrunk toward the "
        "bank-wide accuracy. 'learned': a per-model logistic model on the bank "
        "embeddings' principal components, blended with the 'hier' estimate; a calibrated "
        "P(correct), fitted once per bank snapshot (see the README's Replay evaluation).",
    )
    shrink_strength: float = _setting(
        10.0, "'shrunk' rule: pseudo-count pulling local accuracy to the global one.", ge=0
    )
    shrink_temperature: float | None = _setting(
        0.1, "'shrunk' rule: support weights exp((S - max S) / T); unset: weights max(S, 0).", gt=0
    )
    hier_strength: float = _setting(
        0.5,
        "'hier' rule: pseudo-count pulling local accuracy to the inferred-category one "
        "(in kernel units: a support question identical to the query weighs 1).",
        ge=0,
    )
    hier_temperature: float = _setting(0.1, "'hier' rule: support weights exp(-(1 - S) / T).", gt=0)
    hier_category_temperature: float = _setting(
        0.05,
        "'hier' rule: the query's category shares are a vote of its support questions' "
        "categories with weights exp((S - max S) / T).",
        gt=0,
    )
    hier_category_strength: float = _setting(
        10.0,
        "'hier' rule: pseudo-count (in questions) pulling each category's accuracy to the "
        "bank-wide one.",
        ge=0,
    )
    k_drop: int = _setting(
        1, "References dropped from each aggregation subset (prior drop); below k.", ge=0, le=255
    )
    n_aggregations: int = _setting(
        8,
        "n: number of prior-drop subsets, each fused by the aggregator: a model call each, "
        "so at most 64 (the paper uses 8; past a few dozen the candidates repeat).",
        ge=1,
        le=64,
    )
    lam: float = _setting(
        1.0, "lambda: weight of the perplexity term in the hybrid score (eq. 7).", ge=0
    )
    temperature: float = _setting(0.7, "Sampling temperature of referencers and aggregator.", ge=0)
    presence_penalty: float = _setting(1.05, "Presence penalty sent with every generation request.")
    max_tokens: int = _setting(
        8192,
        "Maximum output tokens per generation, at most 1,000,000 (above the largest "
        "context windows' output limits).",
        ge=1,
        le=1_000_000,
    )
    max_tokens_multiple_choice: int | None = _setting(
        None,
        "Output-token limit of a multiple-choice answer (a prompt stating the contract "
        "'The answer is (X)'), at most 1,000,000. Unset: max_tokens.",
        ge=1,
        le=1_000_000,
    )
    max_tokens_math: int | None = _setting(
        None,
        "Output-token limit of a math answer (a prompt asking for \\boxed{}), at most "
        "1,000,000. Unset: max_tokens.",
        ge=1,
        le=1_000_000,
    )
    max_tokens_numeric: int | None = _setting(
        None,
        "Output-token limit of a numeric answer (a prompt stating 'The answer is N'), at most "
        "1,000,000. Unset: max_tokens.",
        ge=1,
        le=1_000_000,
    )
    max_tokens_code: int | None = _setting(
        None,
        "Output-token limit of a program (a prompt asking for a ```python code block), at "
        "most 1,000,000. Unset: max_tokens.",
        ge=1,
        le=1_000_000,
    )
    answer_recovery: bool = _setting(
        True,
        "True: a reply that reaches its token limit before stating its family's final answer "
        "(a letter, a boxed expression, a stated number), or a multiple-choice or math reply "
        "that ends without one, gets one short follow-up call that continues it from a "
        "forced answer prefix ('The answer is (', '\\boxed{'); the trace marks it and it "
        "counts in calls, tokens and cost. Applies to referencers and fusions, and to `smcs "
        "profile` and `smcs eval`. False: replies stay as they are.",
    )
    aggregator: str | None = _setting(
        None,
        "Name of the pool model that fuses the references; a fixed aggregator is never "
        "replaced by another model. Unset: the model with the highest prior on this "
        "question's support set, and if its aggregations all fail, the next referencer by "
        "prior (skipping any that failed in this run).",
        noun="a model name",
    )
    min_referencers: int = _setting(
        1,
        "Quorum: referencers that must answer for the run to go on; failed ones are left "
        "out and named in the trace (at most 256, as k).",
        ge=1,
        le=256,
    )
    referencer_timeout_s: float | None = _setting(
        None,
        "Deadline of each referencer call in seconds, every retry included, at most 86,400 "
        "(a day). Unset: the pool entry's timeout_s (600 s by default) alone; set, the "
        "shorter of the two.",
        gt=0,
        le=86_400,
    )
    aggregation_timeout_s: float | None = _setting(
        None,
        "Deadline of each aggregation call in seconds, as referencer_timeout_s.",
        gt=0,
        le=86_400,
    )
    require_fusion: bool = _setting(
        False,
        "True: a run whose aggregations all fail (every aggregator candidate tried) fails, "
        "naming every failure. False: it answers with the top-prior reference and says so "
        "in the trace ('fallback').",
    )
    breaker_cooldown_s: float = _setting(
        60.0,
        "Circuit breaker: seconds for which a pool model whose last calls failed is passed "
        "over when referencers and the aggregator are chosen; the trace names it and why "
        "('skipped'). Per pool model, shared by the runs of this process. 0: never pass "
        "over. At most 86,400 (a day).",
        ge=0,
        le=86_400,
    )
    breaker_failures: int = _setting(
        1,
        "Circuit breaker: consecutive failed calls of a model that open it (at most 1000).",
        ge=1,
        le=1000,
    )
    seed: int | None = _setting(
        None, "Seed of the prior-drop sampling and of generation requests (unset: random)."
    )
    drop_mode: DropMode = _setting(
        "paper",
        "'paper': z-scored softmax over the selected priors. 'authors': the released code's "
        "exp((d - mean d)/D) distribution (nearly uniform at realistic prior sizes).",
    )
    similarity_mode: SimilarityMode = _setting(
        "paper",
        "'paper': mean similarity to the other candidates. 'authors': includes the "
        "candidate itself and divides by n, as the released code does.",
    )
    support_rule: SupportRule = _setting(
        "paper",
        "'paper': S_i >= gamma * (N_sup_base-th largest). 'authors': strict '>' against the "
        "(N_sup_base+1)-th largest, as the released code does.",
    )
    collaboration: Collaboration = _setting(
        "always",
        "'always': the full method on every question (the paper). 'adaptive': the prior "
        "gate answers with the top model alone (one call) when its estimated P(correct) is "
        "at least prior_gate_threshold, or when the expected gain of collaborating is below "
        "min_collaboration_gain. P(correct): the 'learned' rule's probability; under the "
        "other rules, each model's similarity-weighted support accuracy shrunk toward its "
        "bank-wide accuracy (the 'shrunk' estimate). Gain: P(some top-K referencer is "
        "right) - P(the top model is right), the models taken as independent.",
    )
    gate_rule: PriorRule | None = _setting(
        None,
        "Prior gate: the prior rule whose calibrated P(correct) the gate reads and whose most "
        "probable referencer answers alone (any of prior_rule's values). None: prior_rule. "
        "Selection (which K models, their prior-drop weights) always follows prior_rule, so "
        "the paper's method stays the paper's while the gate uses a better-calibrated rule; "
        "`smcs calibrate --rules` chooses it on the bank.",
    )
    prior_gate_threshold: float = _setting(
        0.8, "Prior gate: the top model's P(correct) at which it answers alone.", ge=0, le=1
    )
    min_collaboration_gain: float = _setting(
        0.0,
        "Prior gate: the top model answers alone when the expected gain of collaborating "
        "is below this (0: the gain never decides).",
        ge=0,
        le=1,
    )
    agreement_gate: bool = _setting(
        False,
        "True: when the references agree, the top-prior reference is the answer and no "
        "fusion runs. Agreement: the same extracted final answer (letter, number or boxed "
        "expression) when the support set's nearest family has an extractor, else every "
        "pair of references at embedding cosine >= agreement_similarity.",
    )
    agreement_similarity: float = _setting(
        0.9,
        "Agreement gate: the cosine similarity every pair of references must reach when "
        "no extractor applies.",
        ge=-1,
        le=1,
    )
    deadline_s: float | None = _setting(
        None,
        "Seconds from the start of a run to its answer, at most 86,400 (a day): every model "
        "call is cut at the deadline, and the run answers with what arrived (the best "
        "fusion scored, else the top-prior reference); the trace says what was cut. Unset: "
        "no deadline beyond the stage timeouts.",
        gt=0,
        le=86_400,
    )
    references_as_candidates: bool = _setting(
        False,
        "True: the references join the fusions as candidates of the hybrid score, so a "
        "fusion worse than its inputs can lose to them (referencers are then asked for "
        "logprobs where the pool entry has them). Only when some fusion came back.",
    )
    max_calls: int | None = _setting(
        None,
        "Model calls planned per question (K + n), at most 4096: n shrinks first, then K, "
        "never below one referencer (1: the top model alone). Unset: no cap. An aggregator "
        "failover, and a recovery follow-up (answer_recovery), add calls beyond the plan.",
        ge=1,
        le=4096,
    )
    max_cost: float | None = _setting(
        None,
        "Planned spend per question in the pool's cost units (its per-Mtok prices), at most "
        "1e9: before the fan-out each planned call's cost is estimated (prompt tokens as "
        "characters / 4, output tokens at the largest max_tokens limit) and n shrinks "
        "first, then K, never "
        "below one call. Models without prices cost 0. Unset: no cap.",
        ge=0,
        le=1e9,
    )
    subset_draws: SubsetDraws = _setting(
        "distinct",
        "'distinct': the n fusions get n different prior-drop subsets while enough exist "
        "(a repeat is drawn again, then the most probable unused subset is taken). "
        "'independent': the paper's i.i.d. draws, which may repeat a subset.",
    )
    max_concurrency: int = _setting(
        64,
        "Upper bound on model calls running at once within one run: LangGraph's "
        "`max_concurrency` for every run that SMCSChatModel, the consult tool, `smcs ask` "
        "and `smcs serve` start. A run started with `graph.invoke` takes it from that "
        'call\'s RunnableConfig instead (`graph.invoke(inp, {"max_concurrency": 64})`). '
        "At most 4096.",
        ge=1,
        le=4096,
    )

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError(
                "invalid SMCS configuration: " + "; ".join(problems) + ". Fix these values "
                "(see SMCSConfig's field descriptions for what each one means)."
            )

    def tokens_for(self, family: str | None) -> int:
        """The output-token limit of an answer of `family` (None or a family without its own
        limit: `max_tokens`)."""
        limit = getattr(self, f"max_tokens_{family}", None) if family else None
        return limit if isinstance(limit, int) else self.max_tokens

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


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of a named-mode setting (e.g. `choices("prior_rule")`), for CLIs."""
    kind = _kinds().get(name)
    if kind is None or kind[0] != "choice":
        raise KeyError(f"{name!r} is not an SMCSConfig setting with named values")
    return kind[1]


@functools.cache
def _kinds() -> dict[str, tuple[str, tuple[Any, ...], bool]]:
    """Each field's kind from its annotation: ("choice", allowed values, optional) or
    (type name, (), optional) with type name one of "int", "float", "bool", "str"."""
    out: dict[str, tuple[str, tuple[Any, ...], bool]] = {}
    for name, hint in typing.get_type_hints(SMCSConfig).items():
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and (
            type(None) in args
        )
        if optional:
            (hint,) = [a for a in args if a is not type(None)]
        if typing.get_origin(hint) is Literal:
            out[name] = ("choice", typing.get_args(hint), optional)
        else:
            out[name] = (hint.__name__, (), optional)
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _problem(name: str, value: Any, metadata: Mapping[str, Any]) -> str | None:
    """What is wrong with one setting's value, from its declared kind and bounds (None: fine)."""
    kind, allowed, optional = _kinds()[name]
    if value is None and optional:
        return None
    unset = " or unset" if optional else ""
    if kind == "choice":
        if value in allowed:
            return None
        return f"{name} must be one of {allowed}{unset} (got {value!r})"
    if kind == "bool":
        return None if isinstance(value, bool) else f"{name} must be true or false (got {value!r})"
    if kind == "str":
        if isinstance(value, str) and value:
            return None
        return f"{name} must be {metadata.get('noun', 'a non-empty string')}{unset} (got {value!r})"
    noun = "an integer" if kind == "int" else "a number"
    low, gt, high = metadata.get("ge"), metadata.get("gt"), metadata.get("le")
    if gt is not None and high is not None:
        wanted = f" in ({_fmt(gt)}, {_fmt(high)}]"
    elif low is not None and high is not None:  # lower bound first: it is the usual mistake
        wanted = f" >= {_fmt(low)} and <= {_fmt(high)}"
    elif gt is not None:
        wanted = f" > {_fmt(gt)}"
    elif low is not None:
        wanted = f" >= {_fmt(low)}"
    else:
        wanted = ""
    ok = (_is_int(value) if kind == "int" else _is_number(value)) and not (
        (low is not None and value < low)
        or (gt is not None and value <= gt)
        or (high is not None and value > high)
    )
    return None if ok else f"{name} must be {noun}{wanted}{unset} (got {value!r})"


def _problems(settings: SMCSConfig) -> list[str]:
    out = [
        problem
        for f in dataclasses.fields(SMCSConfig)
        if (problem := _problem(f.name, getattr(settings, f.name), f.metadata)) is not None
    ]
    k, k_drop = settings.k, settings.k_drop
    if _is_int(k) and _is_int(k_drop) and k_drop >= k > 1:
        out.append(f"k_drop ({k_drop}) must be smaller than k ({k})")
    return out

"""The pool: named chat models, their prices, logprob support and per-endpoint concurrency.

A pool is built from a pool file (YAML or JSON) of OpenAI-compatible endpoints (vLLM,
llama.cpp's server, hosted APIs) through `langchain-openai`, of any LangChain chat model class
named by import path (`class: "langchain_anthropic:ChatAnthropic"` with `kwargs: {...}`), or from
chat models given directly. See `examples/remote_pool.yaml` for the file format.

A pool file has two top-level keys: `models` (the pool) and, optionally, `smcs` (the
`SMCSConfig` settings that fit the pool). `read_pool_file` is the one parser of both; every
caller (the CLI, the embedded default, `Pool.from_file`) goes through it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages.ai import UsageMetadata

from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError
from smcs_graph.models.prompts import check_prompts

_MODEL_KEYS = {
    "name",
    "model",
    "base_url",
    "api_key",
    "api_key_env",
    "logprobs",
    "max_concurrency",
    "timeout_s",
    "cost",
    "extra_body",
    "local",
    "threads",
    "parallel",
    "replicas",
    "class",
    "kwargs",
    "sampling_kwargs",
    "system_prompt",
    "templates",
}
_COST_KEYS = {"input_per_mtok", "output_per_mtok"}

MAX_TIMEOUT_S = 86_400.0
"""The longest `timeout_s`: a day (the settings' timeouts have the same bound)."""
DEFAULT_TIMEOUT_S = 600.0
"""Deadline of one model call (every retry included) when a pool entry sets no `timeout_s`:
the paper's 8,192 output tokens from a 70B model on a loaded vLLM server (about 15 tokens/s)
take about 550 s. Local models state theirs in `data/local_pool.yaml`."""


class ModelHealth:
    """A pool model's circuit breaker: its recent failed calls, so that runs pass over a model
    that just failed. One per pool model, shared (like its slots) by every run over the pool in
    this process; thread-safe. The cool-down and threshold come from each run's settings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        self._failed_at = 0.0
        self._error = ""

    def record(self, error: str | None) -> None:
        """Record a call's outcome: `error` for a failed call, None for an answer."""
        with self._lock:
            if error is None:
                self._failures = 0
            else:
                self._failures += 1
                self._failed_at = time.monotonic()
                self._error = error

    def open_reason(self, failures: int, cooldown_s: float) -> str | None:
        """Why to pass over the model now (its last `failures` calls failed, the last one less
        than `cooldown_s` ago), or None. After the cool-down it is tried again."""
        with self._lock:
            age = time.monotonic() - self._failed_at
            if cooldown_s <= 0 or self._failures < failures or age >= cooldown_s:
                return None
            return (
                f"failed {age:.0f} s ago ({self._error}); passed over for "
                f"{cooldown_s - age:.0f} s more of its {cooldown_s:g} s cool-down"
            )


@dataclass
class PoolModel:
    """One pool member: a chat model under a stable name (the name the bank records)."""

    name: str
    chat_model: BaseChatModel
    logprobs: bool = True
    """Whether the endpoint returns token logprobs (needed for the perplexity term)."""
    input_cost_per_mtok: float = 0.0
    output_cost_per_mtok: float = 0.0
    max_concurrency: int | None = None
    """Calls to this endpoint allowed at once across all runs in this process (unset: no cap)."""
    sampling_kwargs: bool = True
    """Send temperature, presence penalty, max tokens and seed with each call. OpenAI-compatible
    clients accept them; turn off for chat models whose `invoke` rejects unknown keywords."""
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    """Deadline of one call in seconds, covering every retry of the client (None: none; a
    run's `referencer_timeout_s` / `aggregation_timeout_s` can only shorten it)."""
    system_prompt: str = ""
    """Sent first in every call of this model (merged into a leading system message)."""
    templates: Mapping[str, str] = field(default_factory=dict)
    """Per family, the text around the user's prompt (`{question}`); see `models.prompts`."""
    health: ModelHealth = field(default_factory=ModelHealth, init=False, repr=False, compare=False)
    """The model's circuit breaker (see `ModelHealth`)."""
    _slots: threading.BoundedSemaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"every pool model needs a non-empty name (got {self.name!r})")
        if not isinstance(self.chat_model, BaseChatModel):
            raise ConfigError(
                f"pool model {self.name!r}: chat_model must be a LangChain BaseChatModel "
                f"(got {type(self.chat_model).__name__})"
            )
        self.templates = check_prompts(self.name, self.system_prompt, self.templates)
        if self.max_concurrency is not None:
            if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
                raise ConfigError(
                    f"pool model {self.name!r}: max_concurrency must be an integer >= 1 or "
                    f"unset (got {self.max_concurrency!r})"
                )
            self._slots = threading.BoundedSemaphore(self.max_concurrency)
        if self.timeout_s is not None and (
            not isinstance(self.timeout_s, int | float)
            or isinstance(self.timeout_s, bool)
            or not 0 < self.timeout_s <= MAX_TIMEOUT_S
        ):
            raise ConfigError(
                f"pool model {self.name!r}: timeout_s must be a number of seconds in "
                f"(0, {MAX_TIMEOUT_S:g}] or unset (got {self.timeout_s!r})"
            )
        for label, value in (
            ("input_per_mtok", self.input_cost_per_mtok),
            ("output_per_mtok", self.output_cost_per_mtok),
        ):
            if not isinstance(value, int | float) or value < 0:
                raise ConfigError(
                    f"pool model {self.name!r}: cost {label} must be a number >= 0 (got {value!r})"
                )

    @property
    def slots(self) -> threading.BoundedSemaphore | None:
        """The endpoint's concurrency limiter, shared by every run in this process."""
        return self._slots

    def cost(self, usage: UsageMetadata | Mapping[str, Any] | None) -> float:
        """Price of one call in the pool's currency, from its token usage."""
        if not usage:
            return 0.0
        return (
            usage.get("input_tokens", 0) * self.input_cost_per_mtok
            + usage.get("output_tokens", 0) * self.output_cost_per_mtok
        ) / 1e6

    def call_kwargs(
        self, config: SMCSConfig, *, seed_offset: int = 0, max_tokens: int | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for one generation call under `config` (`max_tokens`: this call's
        output-token limit, e.g. `config.tokens_for(family)`; None: `config.max_tokens`)."""
        if not self.sampling_kwargs:
            return {}
        kwargs: dict[str, Any] = {
            "temperature": config.temperature,
            "presence_penalty": config.presence_penalty,
            "max_tokens": config.max_tokens if max_tokens is None else max_tokens,
        }
        if config.seed is not None:
            kwargs["seed"] = config.seed + seed_offset
        return kwargs


class Pool:
    """An ordered set of named chat models. Order is the tie-break order of prior selection."""

    def __init__(self, models: Sequence[PoolModel]) -> None:
        if not models:
            raise ConfigError("a pool needs at least one model; the configuration lists none")
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"pool model names must be unique; repeated: {duplicates}")
        self._models = {m.name: m for m in models}

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def __getitem__(self, name: str) -> PoolModel:
        try:
            return self._models[name]
        except KeyError:
            raise ConfigError(
                f"model {name!r} is not in the pool; pool models: {', '.join(self._models)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[PoolModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return f"Pool({self.names})"

    @classmethod
    def from_chat_models(cls, models: Mapping[str, BaseChatModel], **common: Any) -> Pool:
        """A pool from `{name: chat_model}`; `common` sets PoolModel fields for all of them."""
        return cls(
            [PoolModel(name=name, chat_model=model, **common) for name, model in models.items()]
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, source: str = "pool config") -> Pool:
        """A pool from a parsed config: `{"models": [{name, base_url, ...}, ...]}`."""
        entries = _model_entries(config, source)
        try:
            return cls([_model_from_entry(entry, i, source) for i, entry in enumerate(entries)])
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> Pool:
        """The pool of a pool file (see `read_pool_file`; its `smcs:` section is checked too)."""
        return read_pool_file(path).pool()


# --------------------------------------------------------------------------- pool files


@dataclass(frozen=True)
class PoolFile:
    """A parsed pool file: its model entries, not built yet (building may start local model
    servers), and the settings of its `smcs:` section."""

    path: Path
    data: Mapping[str, Any]
    """The parsed file: `{"models": [...], "smcs": {...}}`."""
    settings: SMCSConfig
    """The `smcs:` section (defaults where it is absent), with the overrides applied."""

    @property
    def model_names(self) -> list[str]:
        """The models' names in pool order, without building any chat model."""
        source = str(self.path)
        entries = _model_entries(self.data, source)
        return [_entry_name(entry, i, source) for i, entry in enumerate(entries)]

    def pool(self) -> Pool:
        """Build the pool: its chat models' clients, starting the embedded local models it
        names (nothing else is contacted)."""
        return Pool.from_config(self.data, source=str(self.path))


def read_pool_file(path: str | Path, overrides: Mapping[str, Any] | None = None) -> PoolFile:
    """Parse and check a pool file: its `models` list and its `smcs:` settings, with
    `overrides` (e.g. from `--set`) applied over the file's settings. Builds no chat model."""
    p = Path(path)
    data = load_config_file(p)
    unknown = sorted(set(data) - {"models", "smcs"})
    if unknown:
        raise ConfigError(
            f"{p}: unknown top-level key(s) {unknown}; a pool file has 'models' (the pool) and "
            "optionally 'smcs' (SMCS settings)"
        )
    _model_entries(data, str(p))
    section = data.get("smcs") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"{p}: 'smcs' must be a mapping of SMCS settings (e.g. 'smcs: {{k: 3}}'), "
            f"got {type(section).__name__}"
        )
    overrides = dict(overrides or {})
    try:
        settings = SMCSConfig.from_mapping({**section, **overrides})
    except ConfigError as exc:
        where = f"with overrides {', '.join(overrides)}" if overrides else "its 'smcs:' section"
        raise ConfigError(f"{p} ({where}): {exc}") from exc
    return PoolFile(path=p, data=data, settings=settings)


def load_pool_file(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[Pool, SMCSConfig]:
    """The pool of a pool file and its SMCS settings (see `read_pool_file`); builds the pool,
    starting the embedded local models it names."""
    parsed = read_pool_file(path, overrides)
    return parsed.pool(), parsed.settings


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON file (JSON when its name ends in `.json`) into a mapping, with errors
    that name the file and say what to do. Pool files: use `read_pool_file`."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder: pass the path of a YAML or JSON file.")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}. Pass the path of a YAML or JSON file.")
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the file ({exc.strerror or exc})") from exc
    kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
    try:
        if kind == "JSON":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ImportError as exc:
        raise ConfigError(f"{p}: reading YAML needs PyYAML ({exc}): pip install pyyaml") from exc
    except Exception as exc:  # ValueError from json; yaml.YAMLError; RecursionError
        raise ConfigError(
            f"{p}: cannot parse the file as {kind}: {exc}. Fix the syntax (the file is read as "
            "JSON when its name ends in .json, else as YAML)"
        ) from exc
    if data is None:
        raise ConfigError(f"{p}: the file is empty; expected a mapping such as 'models: [...]'")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping (got {type(data).__name__})")
    return data


def _model_entries(config: Mapping[str, Any], source: str) -> list[Any]:
    """The non-empty `models` list of a parsed pool config."""
    entries = config.get("models") if isinstance(config, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"{source}: expected a 'models' list with at least one entry, e.g.\n"
            "models:\n  - name: my-model\n    base_url: http://127.0.0.1:8000/v1"
        )
    return entries


def _entry_name(entry: Any, index: int, source: str) -> str:
    """The `name` of `models[index]`, which must be a mapping."""
    where = f"{source}: models[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: each model must be a mapping with at least a 'name'")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    return name


def _model_from_entry(entry: Any, index: int, source: str) -> PoolModel:
    name = _entry_name(entry, index, source)
    where = f"{source}: model {name!r}"
    unknown = sorted(set(entry) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(_MODEL_KEYS)}")
    cost = entry.get("cost") or {}
    if not isinstance(cost, Mapping) or set(cost) - _COST_KEYS:
        raise ConfigError(f"{where}: 'cost' must be a mapping with keys {sorted(_COST_KEYS)}")
    timeout = entry.get("timeout_s", DEFAULT_TIMEOUT_S)
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not 0 < timeout <= MAX_TIMEOUT_S
    ):
        raise ConfigError(
            f"{where}: timeout_s must be a number of seconds in (0, {MAX_TIMEOUT_S:g}] "
            f"(got {timeout!r}; default {DEFAULT_TIMEOUT_S:g})"
        )
    # Before any chat model is built (a local one starts a server).
    templates = check_prompts(name, entry.get("system_prompt") or "", entry.get("templates") or {})

    if "class" in entry:
        chat_model: BaseChatModel = _class_chat_model(entry, where)
    elif entry.get("local"):
        from smcs_graph.models.local import local_chat_model

        server: dict[str, int] = {}
        for key in ("threads", "parallel", "replicas"):
            value = entry.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}: {key!r} must be an integer >= 1 (got {value!r})")
            server[key] = value
        chat_model = local_chat_model(
            name,
            threads=server["threads"],
            parallel=server["parallel"],
            replicas=server["replicas"],
            timeout=timeout,
        )
    else:
        base_url = entry.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{where}: 'base_url' must be an http(s) URL of an OpenAI-compatible API "
                "(e.g. http://127.0.0.1:8000/v1), or set 'local: true' for an embedded model"
            )
        chat_model = _openai_chat_model(entry, name, base_url, timeout, where)
    return PoolModel(
        name=name,
        chat_model=chat_model,
        # OpenAI-compatible endpoints (vLLM, llama.cpp) return logprobs; an arbitrary `class:`
        # model is asked for them only when its entry says it has them.
        logprobs=bool(entry.get("logprobs", "class" not in entry)),
        input_cost_per_mtok=float(cost.get("input_per_mtok", 0.0)),
        output_cost_per_mtok=float(cost.get("output_per_mtok", 0.0)),
        max_concurrency=entry.get("max_concurrency"),
        sampling_kwargs=bool(entry.get("sampling_kwargs", True)),
        timeout_s=float(timeout),
        system_prompt=entry.get("system_prompt") or "",
        templates=templates,
    )


# Keys that configure the built-in OpenAI-compatible client; a `class:` entry takes `kwargs`.
_ENDPOINT_KEYS = (
    "base_url",
    "model",
    "api_key",
    "api_key_env",
    "extra_body",
    "local",
    "threads",
    "parallel",
    "replicas",
)


def _class_chat_model(entry: Mapping[str, Any], where: str) -> BaseChatModel:
    """Any LangChain chat model by import path: `class: "package.module:ClassName"`."""
    import importlib

    spec = entry["class"]
    clashing = [k for k in _ENDPOINT_KEYS if k in entry]
    if clashing:
        raise ConfigError(
            f"{where}: 'class' builds the chat model from 'kwargs'; {clashing} apply to the "
            "built-in OpenAI-compatible client only: move them into 'kwargs'"
        )
    module_name, sep, class_name = str(spec).partition(":")
    if not isinstance(spec, str) or not sep or not module_name or not class_name:
        raise ConfigError(
            f"{where}: 'class' must be 'package.module:ClassName' "
            f"(e.g. langchain_anthropic:ChatAnthropic), got {spec!r}"
        )
    kwargs = entry.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{where}: 'kwargs' must be a mapping of constructor arguments")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{where}: cannot import module {module_name!r} ({exc}); install the package that "
            "provides it, or fix the 'class' path"
        ) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, BaseChatModel):
        found = "nothing" if cls is None else repr(cls)
        raise ConfigError(
            f"{where}: {spec!r} must name a LangChain chat model class (a BaseChatModel "
            f"subclass); found {found}"
        )
    try:
        return cls(**dict(kwargs))
    except Exception as exc:  # pydantic ValidationError, TypeError: whatever the class raises
        raise ConfigError(f"{where}: {spec} rejected its kwargs: {exc}") from exc


def _openai_chat_model(
    entry: Mapping[str, Any], name: str, base_url: str, timeout: float, where: str
) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    api_key = entry.get("api_key")
    key_env = entry.get("api_key_env")
    if key_env is not None:
        api_key = os.environ.get(str(key_env))
        if not api_key:
            raise ConfigError(
                f"{where}: environment variable {key_env} (api_key_env) is not set; "
                "export it or remove api_key_env for an endpoint without auth"
            )
    extra_body = entry.get("extra_body")
    if extra_body is not None and not isinstance(extra_body, Mapping):
        raise ConfigError(f"{where}: extra_body must be a mapping")
    return ChatOpenAI(
        model=str(entry.get("model") or name),
        base_url=base_url,
        api_key=api_key or "not-needed",  # type: ignore[arg-type]
        # Per attempt; the call's deadline (`timeout_s`, in `nodes/_common.py`) covers the
        # attempts and the backoff between them together.
        timeout=timeout,
        max_retries=2,
        use_responses_api=False,
        extra_body=dict(extra_body) if extra_body else None,
    )

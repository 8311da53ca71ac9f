"""The pool: named chat models, their prices, logprob support and per-endpoint concurrency.

A pool is built from a config file (YAML or JSON) of OpenAI-compatible endpoints (vLLM,
llama.cpp's server, hosted APIs) through `langchain-openai`, of any LangChain chat model class
named by import path (`class: "langchain_anthropic:ChatAnthropic"` with `kwargs: {...}`), or from
chat models given directly. See `examples/pool.yaml` for the file format.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages.ai import UsageMetadata

from smcs_graph.config import SMCSConfig
from smcs_graph.errors import ConfigError

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
}
_COST_KEYS = {"input_per_mtok", "output_per_mtok"}


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
    _slots: threading.BoundedSemaphore | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"every pool model needs a non-empty name (got {self.name!r})")
        if not isinstance(self.chat_model, BaseChatModel):
            raise ConfigError(
                f"pool model {self.name!r}: chat_model must be a LangChain BaseChatModel "
                f"(got {type(self.chat_model).__name__})"
            )
        if self.max_concurrency is not None:
            if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
                raise ConfigError(
                    f"pool model {self.name!r}: max_concurrency must be an integer >= 1 or "
                    f"unset (got {self.max_concurrency!r})"
                )
            self._slots = threading.BoundedSemaphore(self.max_concurrency)
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

    def call_kwargs(self, config: SMCSConfig, *, seed_offset: int = 0) -> dict[str, Any]:
        """Keyword arguments for one generation call under `config`."""
        if not self.sampling_kwargs:
            return {}
        kwargs: dict[str, Any] = {
            "temperature": config.temperature,
            "presence_penalty": config.presence_penalty,
            "max_tokens": config.max_tokens,
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
        entries = config.get("models") if isinstance(config, Mapping) else None
        if not isinstance(entries, list) or not entries:
            raise ConfigError(
                f"{source}: expected a 'models' list with at least one entry, e.g.\n"
                "models:\n  - name: my-model\n    base_url: http://127.0.0.1:8000/v1"
            )
        try:
            return cls([_model_from_entry(entry, i, source) for i, entry in enumerate(entries)])
        except ConfigError as exc:
            if str(exc).startswith(source):
                raise
            raise ConfigError(f"{source}: {exc}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> Pool:
        """A pool from a YAML or JSON file (see `load_config_file`)."""
        return cls.from_config(load_config_file(path), source=str(path))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON config file into a mapping, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}. Pass the path of a YAML or JSON file.")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as exc:
        raise ConfigError(f"{p}: cannot parse the file: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError does not derive from ValueError
        raise ConfigError(f"{p}: cannot parse the file: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping (got {type(data).__name__})")
    return data


def _model_from_entry(entry: Any, index: int, source: str) -> PoolModel:
    where = f"{source}: models[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: each model must be a mapping with at least a 'name'")
    unknown = sorted(set(entry) - _MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(_MODEL_KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{source}: model {name!r}"
    cost = entry.get("cost") or {}
    if not isinstance(cost, Mapping) or set(cost) - _COST_KEYS:
        raise ConfigError(f"{where}: 'cost' must be a mapping with keys {sorted(_COST_KEYS)}")
    timeout = entry.get("timeout_s")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"{where}: timeout_s must be a positive number of seconds")

    if "class" in entry:
        chat_model: BaseChatModel = _class_chat_model(entry, where)
    elif entry.get("local"):
        from smcs_graph.local_models import local_chat_model

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
        logprobs=bool(entry.get("logprobs", True)),
        input_cost_per_mtok=float(cost.get("input_per_mtok", 0.0)),
        output_cost_per_mtok=float(cost.get("output_per_mtok", 0.0)),
        max_concurrency=entry.get("max_concurrency"),
        sampling_kwargs=bool(entry.get("sampling_kwargs", True)),
    )


# Keys that configure the built-in OpenAI-compatible client; a `class:` entry takes `kwargs`.
_ENDPOINT_KEYS = (
    "base_url",
    "model",
    "api_key",
    "api_key_env",
    "extra_body",
    "timeout_s",
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
    entry: Mapping[str, Any], name: str, base_url: str, timeout: float | None, where: str
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
        timeout=timeout,
        max_retries=2,
        use_responses_api=False,
        extra_body=dict(extra_body) if extra_body else None,
    )

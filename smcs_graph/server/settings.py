"""`ServerSettings`: how `smcs serve` admits and answers requests (validated on creation)."""

from __future__ import annotations

from dataclasses import dataclass

from smcs_graph.errors import ConfigError

__all__ = ["ServerSettings"]


@dataclass(frozen=True)
class ServerSettings:
    """How the server admits and answers requests."""

    model_name: str = "smcs"
    """The model id clients send and `/v1/models` lists."""
    api_key: str | None = None
    """Bearer key required on /v1 routes (None: no auth)."""
    max_concurrency: int = 8
    """SMCS runs at once; each run makes K + n model calls."""
    max_queue: int = 64
    """Requests that may wait for a run slot; more get 429."""
    max_body_bytes: int = 1_048_576
    keepalive_s: float = 15.0
    """Seconds between SSE keep-alive comments while a streamed run goes on."""
    run_timeout_s: float = 600.0
    """Seconds a run may take once it has a slot; past it the run is cancelled and the client
    gets 504. 600 s: the embedded CPU pool takes up to 53 s a run (README) and serves one call
    per model at a time, so 8 runs at once take about 8 x 53 s; a hung run still frees its slot."""
    max_calls_cap: int | None = None
    """The most model calls a request may plan (`smcs.max_calls`); None: no cap. A request
    above a cap gets 400; one without a value runs at the pool file's value, lowered to the
    cap."""
    max_cost_cap: float | None = None
    """The most a request may plan to spend (`smcs.max_cost`, the pool's cost units), as
    `max_calls_cap`."""
    deadline_s_cap: float | None = None
    """The longest deadline a request may ask for (`smcs.deadline_s`), as `max_calls_cap`."""

    def budget_caps(self) -> dict[str, float | int]:
        """The operator's caps by SMCSConfig field (those set)."""
        caps = {
            "max_calls": self.max_calls_cap,
            "max_cost": self.max_cost_cap,
            "deadline_s": self.deadline_s_cap,
        }
        return {name: cap for name, cap in caps.items() if cap is not None}

    def __post_init__(self) -> None:
        problems = []
        if not self.model_name.strip():
            problems.append("model_name must be non-empty")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("api_key must be non-empty or unset")
        for name in ("max_concurrency", "max_body_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_queue < 0:
            problems.append(f"max_queue must be >= 0 (got {self.max_queue})")
        for name in ("keepalive_s", "run_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0 (got {getattr(self, name)})")
        if self.max_calls_cap is not None and (
            isinstance(self.max_calls_cap, bool)
            or not isinstance(self.max_calls_cap, int)
            or self.max_calls_cap < 1
        ):
            problems.append(f"max_calls_cap must be an integer >= 1 (got {self.max_calls_cap!r})")
        for name in ("max_cost_cap", "deadline_s_cap"):
            value = getattr(self, name)
            low_ok = value is None or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and (value >= 0 if name == "max_cost_cap" else value > 0)
            )
            if not low_ok:
                wanted = ">= 0" if name == "max_cost_cap" else "> 0"
                problems.append(f"{name} must be a number {wanted} or unset (got {value!r})")
        if problems:
            raise ConfigError("invalid server settings: " + "; ".join(problems))

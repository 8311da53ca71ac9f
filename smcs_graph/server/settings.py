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
        if problems:
            raise ConfigError("invalid server settings: " + "; ".join(problems))

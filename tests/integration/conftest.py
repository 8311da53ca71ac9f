"""Shared fixtures for integration tests: the embedded local pool, started once per session.

The servers run in this process through the process-wide manager (``get_local_servers()``), so
any code under test that calls ``local_chat_model(name)`` reuses them instead of starting its
own; the manager stops them at interpreter exit.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from smcs_graph.models.local import (
    LocalModelError,
    default_cache_dir,
    get_local_servers,
    local_chat_model,
    locate_parts,
)

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

LOCAL_POOL = ("smollm2-135m", "qwen2.5-coder-0.5b")
THREADS = 1  # one thread per server: on 2 cores, more threads oversubscribe concurrent calls


def _skip_reason() -> str | None:
    """Why the local pool cannot run here (CI installs everything: only odd setups skip)."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (pip install xllamacpp)"
    for name in LOCAL_POOL:
        try:
            locate_parts(name)
        except LocalModelError as exc:
            return str(exc)
    return None


@pytest.fixture(scope="session")
def local_servers() -> Iterator[dict[str, str]]:
    """{name: base_url} of the local pool's servers (SmolLM2-135M and Qwen2.5-Coder-0.5B)."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(f"local model servers unavailable: {reason}")
    yield get_local_servers().ensure(LOCAL_POOL, threads=THREADS)


@pytest.fixture(scope="session")
def local_chat_models(local_servers: dict[str, str]) -> dict[str, ChatOpenAI]:
    """{name: ChatOpenAI} on the local pool's servers (logprobs on, no retries)."""
    return {name: local_chat_model(name, threads=THREADS) for name in local_servers}


@pytest.fixture(scope="session")
def smcs_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh SMCS cache for the session (set SMCS_CACHE_DIR to it in subprocesses) whose
    `models` folder is the machine's real one: the GGUF files are assembled and verified once
    per machine, not per test; banks built in it are shared by the session's tests."""
    root = tmp_path_factory.mktemp("smcs-cache")
    models = default_cache_dir()
    models.mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(models, target_is_directory=True)
    return root

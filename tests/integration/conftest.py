"""Shared fixtures for integration tests: the embedded local pool, started once per session.

The servers run in this process through the process-wide manager (``get_local_servers()``), so
any code under test that calls ``local_chat_model(name)`` reuses them instead of starting its
own; the manager stops them at interpreter exit.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from smcs_graph import BankQuestion, Pool, QuestionBank, SentenceTransformerEmbedder
from smcs_graph.embedder import default_embedder
from smcs_graph.models.local import (
    LocalModelError,
    default_cache_dir,
    get_local_servers,
    local_chat_model,
    locate_parts,
)

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

    from tests.integration.test_server import Server

LOCAL_POOL = ("smollm2-135m", "qwen2.5-coder-0.5b")
THREADS = 1  # one thread per server: on 2 cores, more threads oversubscribe concurrent calls
BANK_QUESTIONS = {
    "math-1": ("math", "What is 3 plus 4? Reply with the number only."),
    "math-2": ("math", "What is 6 times 7? Reply with the number only."),
    "math-3": ("math", "What is 10 minus 2? Reply with the number only."),
    "geo-1": ("geography", "What is the capital of Italy? Answer in one word."),
    "geo-2": ("geography", "What is the capital of Spain? Answer in one word."),
    "geo-3": ("geography", "What is the capital of Germany? Answer in one word."),
}
"""The questions of `disk_bank` (id: (category, question))."""


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


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread, in this process and in the processes tests start (unless
    OPENBLAS_NUM_THREADS is set): on two busy cores a second BLAS thread waits for a core on
    every small product (the learned rule's MMLU-Pro test: 107 s on two threads, 15 s on
    one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENBLAS_NUM_THREADS", os.environ.get("OPENBLAS_NUM_THREADS", "1"))
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # the environment variable still reaches the subprocesses
            yield
            return
        with threadpool_limits(limits=int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas"):
            yield


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The real MiniLM embedder (the process-wide one)."""
    return default_embedder()


@pytest.fixture(scope="session")
def disk_bank(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[QuestionBank]:
    """A Chroma bank on disk, built once per session, in which Qwen is right on math and
    SmolLM2 on geography (recorded by hand: what is under test is the graph over real models,
    not profiling). Tests read it and never write to it."""
    bank = QuestionBank.open(tmp_path_factory.mktemp("bank"), embedder)
    bank.add_questions(
        [BankQuestion(id=i, question=q, family=f) for i, (f, q) in BANK_QUESTIONS.items()]
    )
    math = {i: f == "math" for i, (f, _) in BANK_QUESTIONS.items()}
    bank.record_results("qwen2.5-coder-0.5b", math)
    bank.record_results("smollm2-135m", {i: not right for i, right in math.items()})
    yield bank
    bank.close()


@pytest.fixture
def pool(local_chat_models: dict[str, Any]) -> Pool:
    """The local pool's models as a `Pool`, fresh per test (its circuit breakers start closed;
    the servers and chat models behind it are the session's)."""
    return Pool.from_chat_models(local_chat_models)


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


@pytest.fixture(scope="session")
def fake_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Chroma bank on disk (real MiniLM) for the fake pool of `test_server.FAKE_POOL`."""
    from tests.integration.test_server import build_bank

    return build_bank(tmp_path_factory.mktemp("server-bank"), ["alpha", "beta", "toolsmith"])


@pytest.fixture(scope="session")
def keyed(tmp_path_factory: pytest.TempPathFactory, fake_bank: Path) -> Iterator[Server]:
    """`smcs serve` on the fake pool with a bearer key (`test_server.KEY`) and a 20 kB body
    limit, started once for the session: the server tests and the `openai_client.py` example
    share it (each start imports torch and loads MiniLM in a new process)."""
    from tests.integration.test_server import KEY, KEY_ENV, running_server, write_fake_pool

    folder = tmp_path_factory.mktemp("keyed")
    pool = write_fake_pool(folder / "pool.yaml")
    args = ("--api-key-env", KEY_ENV, "--max-body-bytes", "20000")
    with running_server(pool, fake_bank, folder / "server.log", *args, env={KEY_ENV: KEY}) as up:
        yield up

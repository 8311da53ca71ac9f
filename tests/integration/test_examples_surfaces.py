"""`openai_client.py` as a user runs it, against a real `smcs serve` process on a Chroma bank
built with the real MiniLM embedder (the `--fake` examples: tests/unit/test_examples_fake.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_server import build_bank, running_server, write_fake_pool
from tests.unit.test_examples_fake import run_example

pytestmark = pytest.mark.integration


def test_openai_client_example_against_smcs_serve(tmp_path: Path) -> None:
    bank = build_bank(tmp_path / "bank", ["alpha", "beta", "toolsmith"])
    pool = write_fake_pool(tmp_path / "pool.yaml")
    args = ("--api-key-env", "SMCS_EXAMPLE_KEY")
    env = {"SMCS_EXAMPLE_KEY": "example-key"}
    with running_server(pool, bank, tmp_path / "server.log", *args, env=env) as server:
        out = run_example(
            "openai_client.py",
            "What is 2 plus 2?",
            "--base-url",
            server.base_url,
            "--api-key",
            "example-key",
        )
    assert "models: ['smcs']" in out
    assert "answer: The answer is 4." in out or "answer: I believe it is 4." in out
    assert "referencers: ['alpha', 'beta'] aggregator: alpha" in out
    assert "streamed: " in out and "streamed usage: 0 tokens" not in out

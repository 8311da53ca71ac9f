"""`openai_client.py` as a user runs it, against a real `smcs serve` process on a Chroma bank
built with the real MiniLM embedder (the `--fake` examples: tests/unit/test_examples_fake.py)."""

from __future__ import annotations

import pytest

from tests.integration.test_server import KEY, Server
from tests.unit.test_examples_fake import run_example

pytestmark = pytest.mark.integration


def test_openai_client_example_against_smcs_serve(keyed: Server) -> None:
    """On the session's keyed server (conftest): the example sends its --api-key as a bearer."""
    out = run_example(
        "openai_client.py",
        "What is 2 plus 2?",
        "--base-url",
        keyed.base_url,
        "--api-key",
        KEY,
    )
    assert "models: ['smcs']" in out
    assert "answer: The answer is 4." in out or "answer: I believe it is 4." in out
    assert "referencers: ['alpha', 'beta'] aggregator: alpha" in out
    assert "streamed: " in out and "streamed usage: 0 tokens" not in out

"""Shared fixtures for unit tests: a hashing embedder, an in-memory bank, scripted models."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank
from smcs_graph.testing import FakeChatModel

MATH = [
    "What is 12 plus 30?",
    "Compute the sum of 7 and 8.",
    "What is 9 times 6?",
    "Solve for x: x plus 3 equals 10.",
    "What is the square root of 81?",
    "Add 100 and 250 together.",
]
HISTORY = [
    "In which year did the French Revolution begin?",
    "Who was the first emperor of Rome?",
    "Which empire built Machu Picchu?",
    "When did the Berlin Wall fall?",
    "Who wrote the Magna Carta era charter in England's history?",
    "Which dynasty built the Great Wall of China?",
]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unit tests reach nothing: any socket connection outside loopback fails loudly."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> object:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in {"127.0.0.1", "localhost", "::1"}:
            raise RuntimeError(f"unit tests must not use the network (tried {address!r})")
        return real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dimension=64)


@pytest.fixture
def bank(embedder: HashingEmbedder) -> QuestionBank:
    """Two families; 'mathy' is right on math, 'histo' on history, 'weak' on nothing."""
    bank = QuestionBank.in_memory(embedder)
    questions = [BankQuestion(id=f"m{i}", question=q, family="math") for i, q in enumerate(MATH)]
    questions += [
        BankQuestion(id=f"h{i}", question=q, family="history") for i, q in enumerate(HISTORY)
    ]
    bank.add_questions(questions)
    math_ids = [q.id for q in questions if q.family == "math"]
    history_ids = [q.id for q in questions if q.family == "history"]
    bank.record_results(
        "mathy", {**dict.fromkeys(math_ids, True), **dict.fromkeys(history_ids, False)}
    )
    bank.record_results(
        "histo", {**dict.fromkeys(math_ids, False), **dict.fromkeys(history_ids, True)}
    )
    bank.record_results("weak", dict.fromkeys(math_ids + history_ids, False))
    return bank


def make_pool(**models: FakeChatModel) -> Pool:
    return Pool.from_chat_models(models)


@pytest.fixture
def fakes() -> dict[str, FakeChatModel]:
    return {
        "mathy": FakeChatModel(model_name="mathy", responses=["The answer is 42."]),
        "histo": FakeChatModel(model_name="histo", responses=["It began in 1789."]),
        "weak": FakeChatModel(model_name="weak", responses=["I do not know."]),
    }


@pytest.fixture
def pool(fakes: dict[str, FakeChatModel]) -> Pool:
    return make_pool(**fakes)

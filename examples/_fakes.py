"""Shared by the examples' `--fake` mode: scripted models and a tiny in-memory bank.

Runs in about a second with no model files (hashing embeddings, FakeChatModel), so the examples
are exercised by the test suite; without `--fake` they run on the embedded local pool.
"""

from __future__ import annotations

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank, SMCSConfig
from smcs_graph.testing import FakeChatModel, Responder

QUESTIONS = {
    "math": ["What is 12 times 7?", "Compute 250 plus 17.", "What is 81 divided by 9?"],
    "geography": ["What is the capital of Peru?", "Which river flows through Cairo?"],
}


def fake_setup(
    solver: Responder | None = None,
) -> tuple[Pool, QuestionBank, SMCSConfig]:
    """A two-model pool ('solver' knows math, 'atlas' geography), a bank recording that, and
    settings for it. `solver` scripts the math model's replies (it aggregates math questions)."""
    embedder = HashingEmbedder(dimension=64)
    bank = QuestionBank.in_memory(embedder)
    questions = [
        BankQuestion(id=f"{family}-{i}", question=text, family=family)
        for family, texts in QUESTIONS.items()
        for i, text in enumerate(texts)
    ]
    bank.add_questions(questions)
    bank.record_results("solver", {q.id: q.family == "math" for q in questions})
    bank.record_results("atlas", {q.id: q.family == "geography" for q in questions})
    pool = Pool.from_chat_models(
        {
            "solver": FakeChatModel(model_name="solver", respond=solver)
            if solver
            else FakeChatModel(model_name="solver", responses=["The answer is 84."]),
            "atlas": FakeChatModel(model_name="atlas", responses=["Lima is the capital."]),
        }
    )
    return pool, bank, SMCSConfig(k=2, n_aggregations=2, n_sup_base=3, seed=0)

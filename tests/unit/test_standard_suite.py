"""`SMCSChatModel` against LangChain's standard unit suite for chat models (`langchain-tests`).

Every test of `ChatModelUnitTests` runs. Two skip by the suite's own rules, for reasons that
hold for SMCS:

- `test_init_from_env`: SMCS reads no environment variables (it has no API key of its own;
  pool members hold their keys), so `init_from_env_params` stays empty and the suite skips it.
- `test_serdes`: an `SMCSChatModel` holds live objects (a pool of chat models, a Chroma
  question bank) that LangChain's serializer cannot write, so `is_lc_serializable()` is False
  and the suite skips it.

The standard constructor parameters (`temperature=0, max_tokens=100, timeout, stop,
max_retries, api_key`) are accepted: SMCSConfig fields (`temperature`, `max_tokens`) go into
the model's config (checked below); the others have no SMCS meaning and are ignored, as
pydantic ignores unknown fields on every LangChain chat model.
"""

from __future__ import annotations

import functools
from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank, SMCSChatModel
from smcs_graph.testing import FakeChatModel


@functools.cache
def _pool_and_bank() -> tuple[Pool, QuestionBank, HashingEmbedder]:
    embedder = HashingEmbedder(dimension=32)
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions([BankQuestion(id="q1", question="What is 2 plus 2?", family="math")])
    bank.record_results("a", {"q1": True})
    pool = Pool.from_chat_models(
        {"a": FakeChatModel(responses=["4"]), "b": FakeChatModel(responses=["four"])}
    )
    return pool, bank, embedder


class TestSMCSChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[SMCSChatModel]:
        return SMCSChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        pool, bank, embedder = _pool_and_bank()
        return {"pool": pool, "bank": bank, "embedder": embedder, "k": 2, "n_aggregations": 2}


def test_standard_parameters_reach_the_config() -> None:
    params = TestSMCSChatModelStandard().chat_model_params
    model = SMCSChatModel(**params, temperature=0, max_tokens=100, timeout=60, max_retries=2)
    assert model.config.temperature == 0 and model.config.max_tokens == 100
    assert model.config.k == 2 and model.config.n_aggregations == 2
    assert model._get_ls_params(stop=["x"]) == {
        "ls_provider": "smcs",
        "ls_model_name": "smcs",
        "ls_model_type": "chat",
        "ls_temperature": 0,
        "ls_max_tokens": 100,
        "ls_stop": ["x"],
    }
    assert model.invoke("What is 2 plus 2?").content in {"4", "four"}

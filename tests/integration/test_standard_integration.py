"""`SMCSChatModel` against LangChain's standard integration suite, on the real local pool.

The pool is SmolLM2-135M and Qwen2.5-Coder-0.5B, served by xllamacpp on 127.0.0.1 (one thread
each), over a tiny in-memory bank embedded with MiniLM; each answer is a whole SMCS run (2
referencers, 2 aggregations, at most 16 tokens a call). The aggregator is fixed to SmolLM2-135M
(the `aggregator` setting the embedded default uses too): the suite checks the LangChain
contract, not answer quality, and the aggregation prompt (references, tool schemas) is read
about four times faster by the 135M model than by the 0.5B one. Tests the suite skips by its
own rules, and the expected failures below, are listed with their reasons in the README.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests

from smcs_graph import BankQuestion, Pool, QuestionBank, SMCSChatModel
from smcs_graph.embedder import default_embedder
from smcs_graph.models.local import local_chat_model
from tests.integration.conftest import LOCAL_POOL, THREADS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TINY_MODELS = (
    "the pool's models (135M and 0.5B parameters) do not call tools reliably: the chosen "
    "aggregation is plain text where the test requires a tool call"
)
STRUCTURED = (
    "structured output is a forced tool call, which the tiny models seldom make (the parsed "
    "result is None); and SMCS reports its K+n inner calls to the run's callbacks as child "
    "runs, where the test expects exactly one chat model start"
)
# Not run (run=False): each would spend 15-30 s of CI time on 2 cores to fail as expected.
_TOOLS = pytest.mark.xfail(reason=TINY_MODELS, run=False)
_STRUCTURED = pytest.mark.xfail(reason=STRUCTURED, run=False)
_SCHEMAS = pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])


@functools.cache
def _pool_and_bank() -> tuple[Pool, QuestionBank]:
    embedder = default_embedder()
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is 2 plus 2?", family="math"),
            BankQuestion(id="b", question="Say hello to the user.", family="chat"),
            BankQuestion(id="c", question="Name the capital of Peru.", family="geography"),
        ]
    )
    bank.record_results("qwen2.5-coder-0.5b", {"a": True, "b": True, "c": False})
    bank.record_results("smollm2-135m", {"a": False, "b": True, "c": True})
    pool = Pool.from_chat_models(
        {name: local_chat_model(name, threads=THREADS) for name in LOCAL_POOL}
    )
    return pool, bank


class TestSMCSChatModelIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _servers(self, local_servers: dict[str, str]) -> None:
        """Skips the class where the local pool cannot run (see conftest)."""

    @property
    def chat_model_class(self) -> type[SMCSChatModel]:
        return SMCSChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        pool, bank = _pool_and_bank()
        return {
            "pool": pool,
            "bank": bank,
            "embedder": bank.embedder,
            "k": 2,
            "n_aggregations": 2,
            "aggregator": "smollm2-135m",
            "n_sup_base": 3,
            "max_tokens": 16,
            "temperature": 0.0,
            "seed": 0,
        }

    @property
    def supports_model_override(self) -> bool:
        # The pool is the model: there is no provider model name to swap per call.
        return False

    @property
    def has_tool_choice(self) -> bool:
        # tool_choice reaches the aggregator; the tiny models ignore a forced choice.
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @_TOOLS
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @_TOOLS
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @_TOOLS
    def test_bind_runnables_as_tools(self, model: BaseChatModel) -> None:
        super().test_bind_runnables_as_tools(model)

    @_TOOLS
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @_TOOLS
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @_TOOLS
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice, force_tool_call)

    @_STRUCTURED
    @_SCHEMAS
    def test_structured_output(self, model: BaseChatModel, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @_STRUCTURED
    @_SCHEMAS
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: Any) -> None:
        await super().test_structured_output_async(model, schema_type)

    @_STRUCTURED
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @_STRUCTURED
    def test_structured_output_optional_param(self, model: BaseChatModel) -> None:
        super().test_structured_output_optional_param(model)

"""Per-model prompts and the feedback tool on the session's real local models (xllamacpp on
loopback, the real MiniLM embedder).

The pool file gives Qwen2.5-Coder-0.5B a system prompt holding a code word that no model can
know otherwise, and SmolLM2-135M a free-text template that adds text around the question: the
code word in Qwen's answer shows its prompt reached it (through the graph's referencer call and
through the router middleware's routed call), its absence from SmolLM2's that the prompt is
Qwen's alone, and SmolLM2's larger prompt token count that its template reached it. The
feedback tool records a gold answer for a real consultation on a bank on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from smcs_graph import (
    BankQuestion,
    Pool,
    QuestionBank,
    SentenceTransformerEmbedder,
    SMCSChatModel,
    SMCSConfig,
    build_graph,
)
from smcs_graph.agents import SMCSRouterMiddleware
from smcs_graph.grading import grade
from smcs_graph.graph import runnable_config
from smcs_graph.questions import QuestionRecord
from smcs_graph.testing import FakeChatModel
from smcs_graph.tools import make_consult_tool, make_feedback_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CODER, SMALL = "qwen2.5-coder-0.5b", "smollm2-135m"
WORD = "PINEAPPLE"
SYSTEM_PROMPT = f"The secret code word is {WORD}."
TEMPLATE = "{question}\n\n(The secret code word is MANGO.)"
ASK = "What is the secret code word? Reply with the code word only."
SETTINGS = SMCSConfig(k=2, n_aggregations=1, n_sup_base=2, max_tokens=16, temperature=0, seed=0)


def _prompted_pool(path: Path, servers: dict[str, str]) -> Pool:
    """The session's servers by URL, with Qwen's system prompt and SmolLM2's template."""
    path.write_text(
        "models:\n"
        f"  - name: {CODER}\n"
        f"    base_url: '{servers[CODER]}'\n"
        "    logprobs: true\n"
        "    timeout_s: 300\n"
        f"    system_prompt: '{SYSTEM_PROMPT}'\n"
        f"  - name: {SMALL}\n"
        f"    base_url: '{servers[SMALL]}'\n"
        "    logprobs: true\n"
        "    timeout_s: 300\n"
        "    templates:\n"
        f"      instruction: {json.dumps(TEMPLATE)}\n"
    )
    return Pool.from_file(path)


@pytest.fixture(scope="module")
def code_bank(embedder: SentenceTransformerEmbedder) -> QuestionBank:
    """A bank in memory in which Qwen is right on questions like `ASK` (so routing picks it)."""
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is the secret password? Reply with it only."),
            BankQuestion(id="b", question="What is the hidden code word? Answer in one word."),
        ]
    )
    bank.record_results(CODER, {"a": True, "b": True})
    bank.record_results(SMALL, {"a": False, "b": False})
    return bank


def _run(pool: Pool, bank: QuestionBank) -> dict[str, Any]:
    graph = build_graph(pool, bank, None, SETTINGS, runs=False).compile()
    out = graph.invoke({"messages": [HumanMessage(ASK)]}, runnable_config(SETTINGS))
    return dict(out["trace"])


def _by_model(trace: dict[str, Any]) -> tuple[dict[str, str], dict[str, int]]:
    """Each referencer's answer and its call's prompt tokens."""
    texts = {r["model"]: str(r["text"]) for r in trace["references"]}
    tokens = {c["model"]: c["input_tokens"] for c in trace["calls"] if c["stage"] == "referencer"}
    return texts, tokens


def test_each_model_gets_its_own_prompt_in_the_graphs_referencer_call(
    local_servers: dict[str, str], pool: Pool, code_bank: QuestionBank, tmp_path: Path
) -> None:
    plain_texts, plain_tokens = _by_model(_run(pool, code_bank))
    texts, tokens = _by_model(
        _run(_prompted_pool(tmp_path / "pool.yaml", local_servers), code_bank)
    )
    assert sorted(texts) == sorted(plain_texts) == sorted([CODER, SMALL])
    assert WORD not in plain_texts[CODER].upper()  # nothing else tells Qwen the word
    assert WORD in texts[CODER].upper(), texts
    assert WORD not in texts[SMALL].upper()  # the system prompt is Qwen's alone
    # SmolLM2's template adds "\n\n(The secret code word is MANGO.)": about 10 tokens
    assert tokens[SMALL] - plain_tokens[SMALL] >= 8, (tokens, plain_tokens)


def test_the_middlewares_routed_call_gets_the_models_prompt(
    local_servers: dict[str, str], code_bank: QuestionBank, tmp_path: Path
) -> None:
    """The router middleware routes to the real Qwen server (xllamacpp on loopback) over a bank
    embedded with the real MiniLM; the agent's own model is a fake that must never be called."""
    pool = _prompted_pool(tmp_path / "pool.yaml", local_servers)
    router = SMCSRouterMiddleware(pool, code_bank, settings=SETTINGS)
    never = FakeChatModel(model_name="agent", error=AssertionError("the agent model was called"))
    result = create_agent(never, middleware=[router]).invoke({"messages": [HumanMessage(ASK)]})
    (step,) = result["smcs_routing"]
    assert step["decision"] == "route" and step["model"] == CODER
    assert WORD in str(result["messages"][-1].content).upper(), result["messages"][-1]


FEEDBACK_Q = "What is 6 plus 3? Reply with the number only."


def _reporting_agent(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    """The agent's model (scripted): consult, report the gold answer under the shown id."""
    last = messages[-1]
    if isinstance(last, ToolMessage) and last.name == "consult_ensemble":
        run_id = str(last.content).rsplit("[run id: ", 1)[1].rstrip("]")
        args = {"run_id": run_id, "gold": "9", "family": "numeric"}
        return AIMessage("", tool_calls=[{"name": "smcs_feedback", "args": args, "id": "f"}])
    if isinstance(last, ToolMessage):
        return AIMessage("done")
    args = {"question": FEEDBACK_Q}
    return AIMessage("", tool_calls=[{"name": "consult_ensemble", "args": args, "id": "c"}])


def test_the_feedback_tool_records_a_real_runs_outcome_on_a_bank_on_disk(
    pool: Pool, embedder: SentenceTransformerEmbedder, tmp_path: Path
) -> None:
    """Real parts: the local models answer over HTTP, MiniLM embeds, the bank is Chroma on
    disk; only the agent's model is scripted (it consults, then reports the gold answer)."""
    bank = QuestionBank.open(tmp_path / "bank", embedder)
    bank.add_questions([BankQuestion(id="a", question="What is 2 plus 2?", family="numeric")])
    bank.record_results(CODER, {"a": True})
    bank.record_results(SMALL, {"a": False})
    model = SMCSChatModel(pool=pool, bank=bank, config=SETTINGS)
    tools = [make_consult_tool(model, include_run_id=True), make_feedback_tool(model)]
    agent = create_agent(FakeChatModel(respond=_reporting_agent), tools=tools)
    result = agent.invoke({"messages": [HumanMessage("Ask the ensemble what 6 + 3 is.")]})
    consulted, reported = (m for m in result["messages"] if isinstance(m, ToolMessage))
    assert reported.status == "success", reported.content
    outcome = reported.artifact
    assert outcome["status"] == "applied" and outcome["new_question"]
    # exactly the referencers' cells, each graded against the gold answer
    gold = QuestionRecord(id="g", family="numeric", question=FEEDBACK_Q, answer="9")
    expected = {
        r["model"]: bool(grade(gold, r["text"]).correct) for r in consulted.artifact["references"]
    }
    assert outcome["cells"] == expected and sorted(expected) == sorted([CODER, SMALL])
    assert (tmp_path / "bank.runs.sqlite").is_file()
    bank.close()
    reopened = QuestionBank.open(tmp_path / "bank", embedder, create=False)
    assert len(reopened) == 2
    cap, measured = reopened.capability([CODER, SMALL], [outcome["question_id"]])
    assert {m: bool(cap[i, 0]) for i, m in enumerate([CODER, SMALL]) if measured[i, 0]} == expected
    # a repeat changes nothing; an unknown run is a tool error the agent reads
    tool = make_feedback_tool(reopened)
    again = tool.invoke(
        {
            "name": "smcs_feedback",
            "id": "r",
            "type": "tool_call",
            "args": {"run_id": consulted.artifact["run_id"], "gold": "9", "family": "numeric"},
        }
    )
    assert again.artifact["status"] == "already applied" and len(reopened) == 2
    unknown = tool.invoke(
        {
            "name": "smcs_feedback",
            "id": "u",
            "type": "tool_call",
            "args": {"run_id": "0" * 32, "correct": True},
        }
    )
    assert unknown.status == "error" and "unknown run id" in unknown.content
    reopened.close()

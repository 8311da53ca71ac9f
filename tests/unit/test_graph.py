"""The SMCS graph on scripted models: selection, fan-outs, scoring, trace, faults."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver

from smcs_graph import (
    InvalidQuestionError,
    PerplexityUnavailableWarning,
    Pool,
    QuestionBank,
    SMCSConfig,
    SMCSError,
    build_graph,
)
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import make_pool

FAST = SMCSConfig(k=3, n_aggregations=4, n_sup_base=4, seed=7)
RUN = {"max_concurrency": 32}


def compile_graph(pool: Pool, bank: QuestionBank, embedder: HashingEmbedder, **changes: Any):
    return build_graph(pool, bank, embedder, FAST.replace(**changes)).compile()


def test_graph_has_the_five_nodes_and_draws_both_fan_outs(pool, bank, embedder) -> None:
    drawn = build_graph(pool, bank, embedder).compile().get_graph()
    assert set(drawn.nodes) == {
        "__start__",
        "select_priors",
        "referencer",
        "drop_subsets",
        "aggregate",
        "score",
        "__end__",
    }
    edges = {(e.source, e.target, e.conditional) for e in drawn.edges}
    assert ("select_priors", "referencer", True) in edges
    assert ("drop_subsets", "aggregate", True) in edges
    mermaid = drawn.draw_mermaid(with_styles=False)
    assert "select_priors -.-> referencer;" in mermaid
    assert "drop_subsets -.-> aggregate;" in mermaid


def test_math_question_selects_the_math_model_and_the_trace_is_complete(
    pool, bank, embedder, fakes
) -> None:
    out = compile_graph(pool, bank, embedder).invoke(
        {"messages": [HumanMessage("What is 12 plus 30 added together?")]}, RUN
    )
    trace = out["trace"]
    assert trace["referencers"][0] == "mathy"
    assert trace["aggregator"] == "mathy"
    assert trace["priors"]["mathy"] > trace["priors"]["histo"] >= trace["priors"]["weak"] == 0
    assert trace["support_size"] >= 4 and trace["bank_size"] == 12
    assert len(trace["support_examples"]) == min(5, trace["support_size"])
    assert {r["model"] for r in trace["references"]} == {"mathy", "histo", "weak"}
    assert len(trace["subsets"]) == 4 and all(len(s) == 2 for s in trace["subsets"])
    assert all(len(set(s)) == 2 for s in trace["subsets"])
    assert len(trace["candidates"]) == 4
    assert trace["perplexity_available"] is True
    for cand in trace["candidates"]:
        # every aggregation says the same words, so perplexity is exp(0.5) and similarity 1
        assert cand["perplexity"] == pytest.approx(math.exp(0.5))
        assert cand["total"] == pytest.approx(cand["similarity"] + 1 - math.exp(0.5))
    assert sum(c["chosen"] for c in trace["candidates"]) == 1
    stages = [c["stage"] for c in trace["calls"]]
    assert stages.count("referencer") == 3 and stages.count("aggregate") == 4
    assert all(c["total_tokens"] > 0 for c in trace["calls"])
    assert trace["usage"]["total_tokens"] == sum(c["total_tokens"] for c in trace["calls"])
    assert out["answer"] == "The answer is 42."
    final = out["messages"][-1]
    assert isinstance(final, AIMessage) and final.content == "The answer is 42."
    assert (
        final.response_metadata["smcs_trace"] is trace
        or final.response_metadata["smcs_trace"] == trace
    )
    assert final.usage_metadata == trace["usage"]


def test_history_question_selects_the_history_model(pool, bank, embedder) -> None:
    out = compile_graph(pool, bank, embedder, k=1, aggregator="histo").invoke(
        {"question": "In which year did the French Revolution begin, roughly?"}, RUN
    )
    assert out["trace"]["referencers"] == ["histo"]
    assert out["answer"] == "It began in 1789."
    # a `question` input is recorded as the user turn of the conversation
    assert isinstance(out["messages"][0], HumanMessage)


def test_k_is_capped_at_the_pool_size_with_a_note(pool, bank, embedder) -> None:
    out = compile_graph(pool, bank, embedder, k=7).invoke({"question": "What is 9 times 6?"}, RUN)
    assert out["trace"]["k_used"] == 3 and out["trace"]["k_requested"] == 7
    assert any("capped at the pool size" in note for note in out["trace"]["notes"])


def test_context_overrides_the_default_config_also_as_a_mapping(pool, bank, embedder) -> None:
    graph = compile_graph(pool, bank, embedder)
    out = graph.invoke({"question": "What is 9 times 6?"}, RUN, context=FAST.replace(k=2))
    assert len(out["trace"]["referencers"]) == 2
    out = graph.invoke({"question": "What is 9 times 6?"}, RUN, context={"k": 1, "seed": 1})
    assert len(out["trace"]["referencers"]) == 1


def test_a_partial_context_keeps_the_graphs_own_settings(pool, bank, embedder) -> None:
    # LangGraph's server and Studio send a mapping and fill what it leaves out from the context
    # schema: the graph's own settings (here n=4, k=3), never the paper's (n=8, k=7).
    graph = compile_graph(pool, bank, embedder)
    schema = graph.builder.context_schema
    assert issubclass(schema, SMCSConfig) and schema().n_aggregations == 4
    for context in ({"k": 2}, schema(k=2)):
        out = graph.invoke({"question": "What is 9 times 6?"}, RUN, context=context)
        assert len(out["trace"]["referencers"]) == 2
        assert len(out["trace"]["candidates"]) == 4
    out = graph.invoke({"question": "What is 9 times 6?"}, RUN, context={})
    assert len(out["trace"]["referencers"]) == 3 and len(out["trace"]["candidates"]) == 4
    assert build_graph(pool, bank, embedder).compile().builder.context_schema is SMCSConfig


def test_aggregator_sees_numbered_candidates_and_the_conversation(pool, bank, embedder, fakes):
    history: list[BaseMessage] = [
        SystemMessage("Be brief."),
        HumanMessage("Tell me about Rome."),
        AIMessage("Rome is in Italy."),
        HumanMessage("Who was the first emperor of Rome?"),
    ]
    out = compile_graph(pool, bank, embedder, aggregator="weak").invoke({"messages": history}, RUN)
    assert out["trace"]["question"] == "Who was the first emperor of Rome?"
    referencer_call = fakes["histo"].calls[0]["messages"]
    assert [m.content for m in referencer_call] == [m.content for m in history]
    agg_messages = fakes["weak"].calls[-1]["messages"]
    assert isinstance(agg_messages[0], SystemMessage)
    assert agg_messages[0].content.startswith("Be brief.")  # merged, one system message
    assert "Candidate 1:" in agg_messages[0].content
    assert "Candidate 2:" in agg_messages[0].content
    assert [m.content for m in agg_messages[1:]] == [m.content for m in history[1:]]
    assert fakes["weak"].calls[-1]["kwargs"]["logprobs"] is True


def test_seed_makes_subsets_reproducible(pool, bank, embedder) -> None:
    graph = compile_graph(pool, bank, embedder, n_aggregations=6)
    first = graph.invoke({"question": "What is 9 times 6?"}, RUN)["trace"]["subsets"]
    second = graph.invoke({"question": "What is 9 times 6?"}, RUN)["trace"]["subsets"]
    assert first == second


# (3) consensus and sure: the hybrid score's pick, though neither term alone picks it.
CONSENSUS_SURE = "The answer is 42 because 12 plus 30 is 42."
# index: (text, logprob of every token). Index 0 is an outlier so that "take the first" fails.
SCRIPTED_FUSIONS = {
    0: ("Totally different words here", -0.01),  # outlier: the surest, unlike the others
    1: ("The answer is 42.", -2.0),  # the consensus's centre, but unsure (PPL e^2)
    2: (CONSENSUS_SURE, -0.1),
    3: ("I think the answer is 42 here.", -0.4),
}


def test_hybrid_score_picks_the_consensus_with_low_perplexity(bank, embedder) -> None:
    """Four distinct fusions: the most similar is unsure, the surest is an outlier; SMCS must
    pick the one that is both consensual and sure, as eqs. 5-7 computed here by hand say."""
    seed = 3

    def aggregator(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if "Candidate 1:" not in str(messages[0].content):  # answering as a referencer
            return AIMessage("The answer is 42.")
        # aggregation i is called with seed + 1000 + i: a KeyError here means that changed
        text, logprob = SCRIPTED_FUSIONS[kwargs["seed"] - seed - 1000]
        content = [{"token": word, "logprob": logprob} for word in text.split()]
        return AIMessage(text, response_metadata={"logprobs": {"content": content}})

    fakes = {
        "mathy": FakeChatModel(respond=aggregator),
        "histo": FakeChatModel(responses=["It began in 1789."]),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    graph = compile_graph(make_pool(**fakes), bank, embedder, n_aggregations=4, seed=seed)
    out = graph.invoke({"question": "What is 12 plus 30?"}, RUN)
    trace = out["trace"]
    assert trace["aggregator"] == "mathy"
    candidates = sorted(trace["candidates"], key=lambda c: c["index"])
    assert [c["text"] for c in candidates] == [SCRIPTED_FUSIONS[i][0] for i in range(4)]

    # eqs. 5-7 by hand: mean cosine to the other fusions, PPL = exp(-mean logprob)
    texts = [SCRIPTED_FUSIONS[i][0] for i in range(4)]
    vectors = np.asarray(embedder.embed(texts), dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = vectors @ vectors.T
    similarity = (cosines.sum(axis=1) - np.diag(cosines)) / 3
    perplexity = np.exp([-SCRIPTED_FUSIONS[i][1] for i in range(4)])
    total = similarity + FAST.lam * (1 - perplexity)
    # the premise: neither term alone picks the consensus-and-sure fusion
    assert int(np.argmax(similarity)) == 1 and int(np.argmin(perplexity)) == 0
    assert int(np.argmax(total)) == 2

    assert [c["similarity"] for c in candidates] == pytest.approx(similarity, abs=1e-5)
    assert [c["perplexity"] for c in candidates] == pytest.approx(perplexity, abs=1e-5)
    assert [c["total"] for c in candidates] == pytest.approx(total, abs=1e-5)
    outliers = [c for c in candidates if c["text"] != CONSENSUS_SURE]
    assert len(outliers) == 3 and not any(c["chosen"] for c in outliers)
    assert trace["chosen"] == 2 and candidates[2]["chosen"]
    assert out["answer"] == CONSENSUS_SURE
    assert out["messages"][-1].content == CONSENSUS_SURE


def test_failing_referencer_is_left_out_and_named(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."]),
        "histo": FakeChatModel(error=ConnectionError("connection refused")),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    out = compile_graph(make_pool(**fakes), bank, embedder).invoke(
        {"question": "What is 12 plus 30?"}, RUN
    )
    trace = out["trace"]
    assert [f["model"] for f in trace["failures"]] == ["histo"]
    assert "ConnectionError: connection refused" in trace["failures"][0]["error"]
    assert all("histo" not in s for s in trace["subsets"])
    assert all(len(s) == 1 for s in trace["subsets"])  # two answered, one dropped per subset


def test_quorum_not_met_raises_naming_each_failure(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(error=ConnectionError("refused")),
        "histo": FakeChatModel(error=ValueError("bad gateway")),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    graph = compile_graph(make_pool(**fakes), bank, embedder, min_referencers=2)
    with pytest.raises(SMCSError) as err:
        graph.invoke({"question": "What is 12 plus 30?"}, RUN)
    assert "mathy" in str(err.value) and "histo" in str(err.value)
    assert "quorum" in str(err.value)


def test_referencer_timeout_sync_and_async(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."]),
        "histo": FakeChatModel(responses=["late"], latency_s=3.0),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    graph = compile_graph(make_pool(**fakes), bank, embedder, referencer_timeout_s=0.2)
    out = graph.invoke({"question": "What is 12 plus 30?"}, RUN)
    assert [f["model"] for f in out["trace"]["failures"]] == ["histo"]
    assert "Timeout" in out["trace"]["failures"][0]["error"]


async def test_referencer_timeout_async(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."]),
        "histo": FakeChatModel(responses=["late"], latency_s=3.0),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    graph = compile_graph(make_pool(**fakes), bank, embedder, referencer_timeout_s=0.2)
    out = await graph.ainvoke({"question": "What is 12 plus 30?"})
    assert [f["model"] for f in out["trace"]["failures"]] == ["histo"]


def test_failed_aggregations_are_left_out_and_all_failed_raises(bank, embedder) -> None:
    state = {"n": 0}

    def flaky(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        if "Candidate" in str(messages[0].content) and kwargs.get("seed", 0) % 2:
            raise RuntimeError("aggregator hiccup")
        state["n"] += 1
        return "The answer is 42."

    fakes = {
        "mathy": FakeChatModel(respond=flaky),
        "histo": FakeChatModel(responses=["It began in 1789."]),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    out = compile_graph(make_pool(**fakes), bank, embedder).invoke(
        {"question": "What is 12 plus 30?"}, RUN
    )
    agg_failures = [f for f in out["trace"]["failures"] if f["stage"] == "aggregate"]
    assert len(agg_failures) == 2 and len(out["trace"]["candidates"]) == 2

    broken = {**fakes, "weak": FakeChatModel(error=TimeoutError("slow"))}
    graph = compile_graph(
        make_pool(**broken), bank, embedder, aggregator="weak", require_fusion=True
    )
    with pytest.raises(SMCSError, match="every aggregation failed"):
        graph.invoke({"question": "What is 12 plus 30?"}, RUN)


def test_aggregator_without_logprobs_scores_by_similarity_with_flag(bank, embedder) -> None:
    fakes = {
        "mathy": FakeChatModel(responses=["The answer is 42."], logprobs=False),
        "histo": FakeChatModel(responses=["It began in 1789."]),
        "weak": FakeChatModel(responses=["I do not know."]),
    }
    graph = compile_graph(make_pool(**fakes), bank, embedder)
    with pytest.warns(PerplexityUnavailableWarning, match="no token logprobs"):
        out = graph.invoke({"question": "What is 12 plus 30?"}, RUN)
    trace = out["trace"]
    assert trace["perplexity_available"] is False and trace["warnings"]
    assert all(c["perplexity"] is None for c in trace["candidates"])
    assert all(c["total"] == c["similarity"] for c in trace["candidates"])


@pytest.mark.parametrize(
    "payload",
    [
        {"question": ""},
        {"question": "   \n"},
        {"question": 42},
        {"messages": [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "x"}}])]},
        {"messages": [AIMessage("only an assistant turn")]},
        {},
    ],
)
def test_bad_input_fails_before_any_model_call(payload, pool, bank, embedder, fakes) -> None:
    with pytest.raises(InvalidQuestionError):
        compile_graph(pool, bank, embedder).invoke(payload, RUN)
    assert all(not f.calls for f in fakes.values())


def test_checkpointed_thread_keeps_turns_apart(pool, bank, embedder) -> None:
    graph = build_graph(pool, bank, embedder, FAST).compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t1"}, **RUN}
    graph.invoke({"messages": [HumanMessage("What is 12 plus 30?")]}, cfg)
    out = graph.invoke({"messages": [HumanMessage("Who was the first emperor of Rome?")]}, cfg)
    state = graph.get_state(cfg).values
    assert len(state["references"]) == 3 and len(state["candidates"]) == 4
    assert len(state["calls"]) == 7
    assert len(out["messages"]) == 4  # two user turns, two answers
    assert out["trace"]["question"] == "Who was the first emperor of Rome?"


def test_streaming_shows_every_stage(pool, bank, embedder) -> None:
    graph = compile_graph(pool, bank, embedder)
    nodes: list[str] = []
    events: list[dict[str, Any]] = []
    for mode, chunk in graph.stream(
        {"question": "What is 12 plus 30?"}, RUN, stream_mode=["updates", "custom"]
    ):
        if mode == "updates":
            nodes.extend(chunk)
        else:
            events.append(chunk)
    assert nodes.count("referencer") == 3 and nodes.count("aggregate") == 4
    assert {"select_priors", "drop_subsets", "score"} <= set(nodes)
    assert [e["stage"] for e in events].count("referencer") == 3
    answered = [e for e in events if e["stage"] == "referencer"]
    assert sorted(e["rank"] for e in answered) == [0, 1, 2]
    assert all(e["ok"] and e["preview"] and e["output_tokens"] > 0 for e in answered)
    assert events[-1]["stage"] == "score"


async def test_async_run_matches_sync(pool, bank, embedder) -> None:
    graph = compile_graph(pool, bank, embedder)
    out = await graph.ainvoke({"question": "What is 12 plus 30?"})
    assert out["answer"] == "The answer is 42."
    assert len(out["trace"]["candidates"]) == 4


def test_parallel_branches_run_concurrently(bank, embedder) -> None:
    """The 6 aggregations (all on one aggregator) are in flight at once: each waits at a
    6-party barrier, which only opens when all 6 are waiting (a serial run breaks it)."""
    import threading

    barrier = threading.Barrier(6, timeout=10)
    passed: list[int] = []

    def fuse(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        if "Candidate 1:" in str(messages[0].content):
            barrier.wait()  # BrokenBarrierError unless the other 5 arrive too
            passed.append(1)
        return "The answer is 42."

    fakes = {name: FakeChatModel(respond=fuse) for name in ("mathy", "histo", "weak")}
    graph = compile_graph(make_pool(**fakes), bank, embedder, n_aggregations=6)
    out = graph.invoke({"question": "What is 12 plus 30?"}, RUN)
    assert not out["trace"]["failures"]
    assert len(passed) == 6 and len(out["trace"]["candidates"]) == 6


def test_shrunk_prior_rule_ranks_by_shrunk_support_accuracy(bank, embedder) -> None:
    """prior_rule="shrunk": a model right on a thin local record does not beat a model that is
    right on the same questions and strong overall; the priors are accuracies in [0, 1]."""
    from smcs_graph import core

    fakes = {
        name: FakeChatModel(responses=[f"{name} answer"]) for name in ("mathy", "histo", "weak")
    }
    pool = make_pool(**fakes)
    out = compile_graph(pool, bank, embedder, prior_rule="shrunk").invoke(
        {"question": "What is 12 plus 30?"}, RUN
    )
    priors = out["trace"]["priors"]
    assert out["trace"]["referencers"][0] == "mathy"
    assert all(0.0 <= v <= 1.0 for v in priors.values())
    # the same numbers straight from core, on the bank's own support set
    support = bank.support(
        embedder.embed(["What is 12 plus 30?"])[0], pool.names, n_sup_base=4, gamma=0.95
    )
    expected = core.shrunk_prior_scores(
        support.similarities,
        support.capability,
        support.measured,
        bank.accuracy(pool.names),
        10.0,
        temperature=0.1,
    )
    assert [priors[m] for m in pool.names] == pytest.approx(expected, abs=1e-6)
    assert bank.accuracy(["mathy", "weak", "absent"]) == pytest.approx([0.5, 0.0, 0.5])


def test_hier_prior_rule_shrinks_toward_the_inferred_category(bank, embedder) -> None:
    """prior_rule="hier": the graph's priors are `core.hier_prior_scores` on the bank's support
    set, its categories (the family where a question has none) and per-category accuracies."""
    from smcs_graph import BankQuestion, core

    fakes = {
        name: FakeChatModel(responses=[f"{name} answer"]) for name in ("mathy", "histo", "weak")
    }
    pool = make_pool(**fakes)
    out = compile_graph(pool, bank, embedder, prior_rule="hier", hier_strength=0.5).invoke(
        {"question": "What is 12 plus 30?"}, RUN
    )
    priors = out["trace"]["priors"]
    assert out["trace"]["referencers"][0] == "mathy"
    assert all(0.0 <= v <= 1.0 for v in priors.values())
    support = bank.support(
        embedder.embed(["What is 12 plus 30?"])[0], pool.names, n_sup_base=4, gamma=0.95
    )
    assert set(support.categories) <= {"math", "history"}
    table = bank.category_accuracy(pool.names, 10.0)
    assert table["math"][pool.names.index("mathy")] == pytest.approx((6 + 10 * 0.5) / 16)
    expected = core.hier_prior_scores(
        support.similarities,
        support.capability,
        support.measured,
        support.categories,
        table,
        bank.accuracy(pool.names),
        0.5,
        temperature=0.1,
        category_temperature=0.05,
    )
    assert [priors[m] for m in pool.names] == pytest.approx(expected, abs=1e-6)
    # an explicit category wins over the family, and the cached table follows writes
    bank.add_questions(
        [BankQuestion(id="x0", question="Sum 2 and 2.", family="math", category="arith")]
    )
    bank.record_results("weak", {"x0": True})
    after = bank.category_accuracy(["weak", "absent"])
    assert after["arith"] == pytest.approx([1.0, 0.5])
    assert after["math"][0] == 0.0

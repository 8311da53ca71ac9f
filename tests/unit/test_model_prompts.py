"""Per-model prompts: a pool entry's system prompt and per-family templates, how they are
rendered, checked, and sent to that model only (referencer, fusion, single-model calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from smcs_graph import ConfigError, Pool, PoolModel, SMCSConfig, build_graph
from smcs_graph.models.prompts import model_messages, prompt_digest
from smcs_graph.nodes._common import answer_call
from smcs_graph.questions import QuestionRecord, prompt_for
from smcs_graph.testing import FakeChatModel

MC = QuestionRecord(
    id="q", family="multiple_choice", question="Which colour?", choices=("red", "blue")
)
MC_PROMPT = prompt_for(MC)


def member(name: str = "m", **prompts: object) -> PoolModel:
    return PoolModel(name=name, chat_model=FakeChatModel(model_name=name), **prompts)  # type: ignore[arg-type]


def texts(messages: list[BaseMessage]) -> list[tuple[str, object]]:
    return [(m.type, m.content) for m in messages]


# ---------------------------------------------------------------------- rendering


def test_a_model_without_prompts_gets_the_conversation_untouched() -> None:
    conversation = [SystemMessage("Be brief."), HumanMessage(MC_PROMPT)]
    plain = member()
    assert texts(model_messages(plain, "multiple_choice", conversation)) == texts(conversation)
    assert prompt_digest(plain, "multiple_choice") == prompt_digest(plain, None) == ""


def test_the_system_prompt_goes_first_merged_into_one_system_message() -> None:
    own = member(system_prompt="You are terse.")
    assert texts(model_messages(own, None, [HumanMessage("Hi")])) == [
        ("system", "You are terse."),
        ("human", "Hi"),
    ]
    users = [SystemMessage("Be brief."), HumanMessage("Hi"), AIMessage("Hello"), HumanMessage("?")]
    sent = model_messages(own, None, users)
    assert texts(sent) == [
        ("system", "You are terse.\n\nBe brief."),
        ("human", "Hi"),
        ("ai", "Hello"),
        ("human", "?"),
    ]
    assert users[0].content == "Be brief."  # the caller's messages are not changed


def test_templates_wrap_the_latest_user_prompt_of_their_family_only() -> None:
    own = member(
        templates={
            "multiple_choice": "Think first.\n\n{question}\n\nBe sure.",
            "instruction": "<<{question}>>",
        }
    )
    conversation = [HumanMessage("earlier"), AIMessage("ok"), HumanMessage(MC_PROMPT)]
    sent = model_messages(own, "multiple_choice", conversation)
    assert sent[-1].content == f"Think first.\n\n{MC_PROMPT}\n\nBe sure."  # contract kept inside
    assert [m.content for m in sent[:2]] == ["earlier", "ok"]
    # Other families: no template of theirs, so as they are; no contract: the instruction one.
    assert model_messages(own, "math", [HumanMessage("2+2?")])[-1].content == "2+2?"
    assert model_messages(own, None, [HumanMessage("hello")])[-1].content == "<<hello>>"
    # A fusion takes the system prompt only.
    assert (
        model_messages(own, "multiple_choice", conversation, template=False)[-1].content
        == MC_PROMPT
    )
    # Multi-part content keeps its parts between the template's text.
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]
    wrapped = model_messages(own, None, [HumanMessage(parts)])[-1].content
    assert wrapped == [{"type": "text", "text": "<<"}, *parts, {"type": "text", "text": ">>"}]


def test_the_digest_names_the_system_prompt_and_the_familys_template() -> None:
    a = member(system_prompt="S", templates={"math": "M {question}"})
    assert prompt_digest(a, "math") != prompt_digest(a, "numeric") != ""
    assert prompt_digest(a, "numeric") == prompt_digest(member(system_prompt="S"), "numeric")
    assert prompt_digest(a, "math") == prompt_digest(
        member(system_prompt="S", templates={"math": "M {question}"}), "math"
    )  # stable
    assert prompt_digest(a, "general") == prompt_digest(a, "instruction")  # no contract: same


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("prompts", "fragment"),
    [
        (
            {"templates": {"maths": "{question}"}},
            r"unknown family 'maths'; known families: "
            r"multiple_choice, math, numeric, code, instruction",
        ),
        (
            {"templates": {"math": "no placeholder"}},
            r"math template must be text containing "
            r"\{question\} exactly once",
        ),
        ({"templates": {"math": "{question} {question}"}}, r"exactly once"),
        ({"templates": ["math"]}, r"templates must be a mapping of family to template text"),
        ({"system_prompt": 3}, r"system_prompt must be text"),
    ],
)
def test_bad_prompts_are_config_errors_that_say_what_to_write(
    prompts: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        member(**prompts)


def test_pool_file_entries_carry_prompts_and_name_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(
        "models:\n"
        "  - name: a\n    base_url: http://127.0.0.1:9/v1\n"
        "    system_prompt: You are careful.\n"
        '    templates:\n      math: "Check twice.\\n\\n{question}"\n'
        "  - name: b\n    base_url: http://127.0.0.1:9/v1\n"
    )
    pool = Pool.from_file(path)
    assert pool["a"].system_prompt == "You are careful."
    assert pool["a"].templates == {"math": "Check twice.\n\n{question}"}
    assert pool["b"].system_prompt == "" and pool["b"].templates == {}
    path.write_text(
        "models:\n  - name: a\n    base_url: http://127.0.0.1:9/v1\n"
        "    templates: {algebra: '{question}'}\n"
    )
    with pytest.raises(ConfigError, match=r"pool\.yaml: pool model 'a': templates names unknown"):
        Pool.from_file(path)


# ---------------------------------------------------------------------- what models are sent


def test_single_model_calls_are_sent_the_entrys_prompts() -> None:
    """`answer_call` builds the referencers', the fusions' and eval's single-model calls."""
    own = member(system_prompt="S.", templates={"multiple_choice": "T: {question}"})
    call = answer_call("single", own, 0, [HumanMessage(MC_PROMPT)], SMCSConfig(), None, None)
    assert texts(list(call.messages)) == [("system", "S."), ("human", f"T: {MC_PROMPT}")]
    assert call.family == "multiple_choice"  # the family is read from the prompt, not the template
    fusion = answer_call(
        "aggregate",
        own,
        0,
        [SystemMessage("AGG"), HumanMessage(MC_PROMPT)],
        SMCSConfig(),
        None,
        None,
        fusion=True,
    )
    assert texts(list(fusion.messages)) == [("system", "S.\n\nAGG"), ("human", MC_PROMPT)]


def test_the_graph_sends_each_entrys_prompts_to_that_model_only(bank, embedder) -> None:
    fakes = {
        name: FakeChatModel(model_name=name, responses=["The answer is 42."])
        for name in ("mathy", "histo", "weak")
    }
    pool = Pool(
        [
            PoolModel(
                name="mathy",
                chat_model=fakes["mathy"],
                system_prompt="You are mathy.",
                templates={"instruction": "[mathy] {question}"},
            ),
            PoolModel(name="histo", chat_model=fakes["histo"]),
            PoolModel(name="weak", chat_model=fakes["weak"]),
        ]
    )
    config = SMCSConfig(k=3, n_aggregations=2, n_sup_base=4, seed=7, aggregator="mathy")
    graph = build_graph(pool, bank, embedder, config).compile()
    history = [SystemMessage("Be brief."), HumanMessage("What is 12 plus 30?")]
    graph.invoke({"messages": history}, {"max_concurrency": 8})

    referencer, *fusions = [c["messages"] for c in fakes["mathy"].calls]
    assert texts(referencer) == [
        ("system", "You are mathy.\n\nBe brief."),
        ("human", "[mathy] What is 12 plus 30?"),
    ]
    assert len(fusions) == 2
    for fusion in fusions:
        assert fusion[0].content.startswith("You are mathy.\n\nBe brief.\n\n")
        assert "Candidate 1:" in fusion[0].content
        assert texts(fusion[1:]) == [("human", "What is 12 plus 30?")]  # no template in a fusion
    for name in ("histo", "weak"):
        (call,) = fakes[name].calls
        assert texts(call["messages"]) == texts(history)

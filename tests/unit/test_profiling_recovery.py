"""Profiling asks as the runtime does: one source of generation settings, answers that the
token limit cut off finished by one follow-up call, cache keys that follow the settings, and
the default matrix re-profiled only where its recorded settings differ from the runtime's."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage

import smcs_graph.embedded.default as embedded
import smcs_graph.embedded.default_bank as default_bank
import smcs_graph.embedder as embedder_module
from smcs_graph import answers
from smcs_graph.bank.importer import read_matrix
from smcs_graph.config import SMCSConfig
from smcs_graph.embedder import HashingEmbedder
from smcs_graph.errors import ConfigError
from smcs_graph.models.pool import Pool
from smcs_graph.offline.cache import CachedResponse, ResponseCache
from smcs_graph.offline.profiling import GenerationSettings, profile_pool, question_key
from smcs_graph.questions import QuestionRecord, prompt_for
from smcs_graph.testing import FakeChatModel
from tests.unit.test_profiling import mc_records, new_bank

LIMIT = 32
THINKING = "Let me weigh each option in turn before deciding"


def _is_follow_up(messages: Sequence[BaseMessage]) -> bool:
    return isinstance(messages[-1], AIMessage)


def cut_off_model(finish: str = "length") -> FakeChatModel:
    """Answers with reasoning and no final answer, cut at the limit (`finish` "length") or
    ended on its own ("stop"); a follow-up that continues its own turn gets the letter of the
    gold answer of `mc_records` question 0 ("A")."""
    output = LIMIT if finish == "length" else LIMIT // 2

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if _is_follow_up(messages):
            return AIMessage(content="A)", response_metadata={"finish_reason": "stop"})
        return AIMessage(
            content=THINKING,
            response_metadata={"finish_reason": finish},
            usage_metadata={
                "input_tokens": 20,
                "output_tokens": output,
                "total_tokens": 20 + output,
            },
        )

    return FakeChatModel(model_name="cut", respond=respond)


def _profile(model: FakeChatModel, records: list[QuestionRecord], **kwargs: Any) -> Any:
    bank = new_bank(records)
    report = profile_pool(
        bank, Pool.from_chat_models({model.model_name: model}), progress=False, **kwargs
    )
    values, measured = bank.capability([model.model_name], [r.id for r in records])
    return report, values[0], measured[0]


def test_a_reply_cut_off_before_its_answer_gets_one_follow_up_and_is_graded(
    tmp_path: Path,
) -> None:
    records = mc_records(1)  # gold answer A
    model = cut_off_model()
    cache = tmp_path / "responses.sqlite"
    generation = GenerationSettings(max_tokens=LIMIT, answer_recovery=True)
    report, values, measured = _profile(model, records, cache=cache, generation=generation)
    contract = answers.CONTRACTS["multiple_choice"]
    assert len(model.calls) == 2 and _is_follow_up(model.calls[1]["messages"])
    follow_up = model.calls[1]
    assert str(follow_up["messages"][-1].content).endswith(str(contract.recovery_prefix))
    assert follow_up["kwargs"]["max_tokens"] == contract.recovery_tokens
    assert measured.all() and values.tolist() == [1.0]  # the recovered letter was graded
    tally = report.models["cut"]
    assert (tally.calls, tally.recoveries, tally.hit_limit) == (2, 1, 1)
    assert tally.output_tokens == LIMIT + 1  # both calls ("A)" is one token)
    # The cache holds the finished reply, under the key with recovery: a rerun asks nothing.
    key = question_key(
        "cut", records[0].id, records[0].question, prompt_for(records[0]),
        generation.for_family("multiple_choice"),
    )  # fmt: skip
    with ResponseCache(cache) as saved:
        hit = saved.get(key)
    assert hit is not None and hit.text.endswith("The answer is (A)")
    assert hit.output_tokens == LIMIT + 1
    again = cut_off_model()
    _profile(again, records, cache=cache, generation=generation)
    assert again.calls == []


@pytest.mark.parametrize(
    "reply",
    [
        # at the limit, but the answer is there: nothing to recover
        AIMessage(
            content=f"{THINKING}. The answer is (A)",
            response_metadata={"finish_reason": "length"},
        ),
        # stopped on its own with its answer
        AIMessage(
            content=f"{THINKING}. The answer is (A)", response_metadata={"finish_reason": "stop"}
        ),
    ],
)
def test_a_reply_with_its_answer_gets_no_follow_up(
    reply: AIMessage,
) -> None:
    model = FakeChatModel(model_name="done", responses=[reply])
    generation = GenerationSettings(max_tokens=LIMIT, answer_recovery=True)
    report, _, measured = _profile(model, mc_records(1), generation=generation)
    assert len(model.calls) == 1 and report.models["done"].recoveries == 0 and measured.all()


def test_a_reply_that_ends_without_its_answer_gets_one_follow_up() -> None:
    model = cut_off_model(finish="stop")
    generation = GenerationSettings(max_tokens=LIMIT, answer_recovery=True)
    report, values, measured = _profile(model, mc_records(1), generation=generation)
    assert len(model.calls) == 2 and _is_follow_up(model.calls[1]["messages"])
    assert measured.all() and values.tolist() == [1.0]
    tally = report.models["cut"]
    assert (tally.recoveries, tally.hit_limit) == (1, 0)


def test_answers_cached_when_only_cut_off_replies_were_finished_are_reused(
    tmp_path: Path,
) -> None:
    """A cache written before replies that ended without an answer were finished: the
    answered replies are reused as they are, and only the others get their follow-up."""
    records = mc_records(2)  # gold A, B
    generation = GenerationSettings(max_tokens=LIMIT, answer_recovery=True)
    settings = generation.for_family("multiple_choice")
    cache = tmp_path / "responses.sqlite"
    earlier = {
        records[0].id: AIMessage(content="The answer is (A)"),
        records[1].id: AIMessage(content=THINKING, response_metadata={"finish_reason": "stop"}),
    }
    with ResponseCache(cache) as saved:
        saved.put_many(
            [
                (
                    question_key(
                        "cut", r.id, r.question, prompt_for(r), settings, unfinished=False
                    ),
                    "cut",
                    CachedResponse.from_message(earlier[r.id]),
                )
                for r in records
            ]
        )
    model = cut_off_model()  # its follow-up answers "A)"
    report, values, measured = _profile(model, records, cache=cache, generation=generation)
    assert len(model.calls) == 1 and _is_follow_up(model.calls[0]["messages"])
    assert model.calls[0]["messages"][-1].content.startswith(THINKING)
    assert measured.all() and values.tolist() == [1.0, 0.0]  # (A) right; the follow-up's A wrong
    assert (report.models["cut"].cached, report.models["cut"].recoveries) == (2, 1)
    again = cut_off_model()
    _profile(again, records, cache=cache, generation=generation)
    assert again.calls == []  # both now cached under the current key


def test_recovery_off_asks_no_follow_up_and_grades_the_cut_reply_wrong() -> None:
    model = cut_off_model()
    generation = GenerationSettings(max_tokens=LIMIT, answer_recovery=False)
    report, values, measured = _profile(model, mc_records(1), generation=generation)
    assert len(model.calls) == 1 and measured.all() and values.tolist() == [0.0]
    assert (report.models["cut"].hit_limit, report.models["cut"].recoveries) == (1, 0)


def test_settings_come_from_the_runtime_settings() -> None:
    runtime = SMCSConfig(max_tokens=100, max_tokens_multiple_choice=40, answer_recovery=False)
    generation = GenerationSettings.from_settings(runtime)
    assert (generation.temperature, generation.seed) == (0.0, 0)  # greedy unless told
    assert generation.prompt_version == answers.PROMPT_VERSION
    for family in ("multiple_choice", "math", "numeric", "code", "instruction"):
        assert generation.for_family(family).max_tokens == runtime.tokens_for(family)
    assert generation.for_family("math").recovery is None
    on = GenerationSettings.from_settings(runtime.replace(answer_recovery=True))
    assert on.for_family("math").recovery is answers.CONTRACTS["math"]
    assert on.for_family("code").recovery is None  # no prefix finishes a program
    assert on.for_family("instruction").recovery is None  # no contract


def test_cache_keys_follow_recovery_and_the_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    def key(settings: GenerationSettings, family: str, prompt: str = "prompt") -> str:
        return question_key("m", "q1", "text", prompt, settings.for_family(family))

    off, on = GenerationSettings(), GenerationSettings(answer_recovery=True)
    # Recovery off: the keys of version-1 caches (no family, no recovery in them).
    assert key(off, "multiple_choice") == question_key("m", "q1", "text", "prompt", off)
    assert key(on, "multiple_choice") != key(off, "multiple_choice")
    assert key(on, "code") == key(off, "code")  # no recovery for code: its answers stay valid
    assert key(on, "math", "new wording") != key(on, "math")  # the prompt text is in the key
    before = key(on, "multiple_choice")
    contract = answers.CONTRACTS["multiple_choice"]
    monkeypatch.setitem(
        answers.CONTRACTS,  # type: ignore[arg-type]
        "multiple_choice",
        dataclasses.replace(contract, recovery_tokens=contract.recovery_tokens + 1),
    )
    assert key(on, "multiple_choice") != before


# ------------------------------------------------------------- the default matrix's record


def _toy_records() -> list[QuestionRecord]:
    # numeric, not math: math checks run in worker processes that end with the grading
    # threads of the run that started them, and these tests run several in one process
    numeric = [
        QuestionRecord(
            id=f"num/{i}", family="numeric", question=f"What is {i} + {i}?", answer=f"{2 * i}"
        )
        for i in range(3)
    ]
    return mc_records(4) + numeric


class _Counting(FakeChatModel):
    """Answers every question right (the gold letter, or the sum), or the letters wrong."""

    wrong_letters: bool = False

    def answer(self, prompt: str) -> str:
        if prompt.startswith("What is "):
            i = int(prompt.split("What is ")[1].split(" ")[0])
            return f"The answer is {2 * i}"
        i = int(prompt.split("number ")[1].split(":")[0])
        letter = "ABCD"[(i + (1 if self.wrong_letters else 0)) % 4]
        return f"The answer is ({letter})"


def _counting(name: str, wrong_letters: bool = False) -> _Counting:
    model: _Counting

    def respond(messages: list[BaseMessage], _: dict[str, Any]) -> str:
        return model.answer(str(messages[-1].content))

    model = _Counting(model_name=name, respond=respond, wrong_letters=wrong_letters)
    return model


@pytest.fixture
def toy_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The embedded default on toy questions, fakes and the hashing embedder; the committed
    matrix is a file in `tmp_path`."""
    state: dict[str, Any] = {"settings": SMCSConfig(max_tokens=64, answer_recovery=False)}
    records = _toy_records()
    monkeypatch.setattr(embedded, "MATRIX_FILE", tmp_path / "matrix.csv")
    monkeypatch.setattr(embedded, "local_config", lambda **_: state["settings"])
    monkeypatch.setattr(embedded, "local_model_names", lambda: ["a", "b"])
    monkeypatch.setattr(embedded, "local_pool", lambda: Pool.from_chat_models(state["models"]))
    monkeypatch.setattr(default_bank, "default_bank_records", lambda *_: records)
    monkeypatch.setattr(default_bank, "default_split", lambda rs: (list(rs), []))
    monkeypatch.setattr(embedder_module, "SentenceTransformerEmbedder", lambda: HashingEmbedder(64))
    state["models"] = {"a": _counting("a"), "b": _counting("b")}
    return state


def _run(tmp_path: Path, state: dict[str, Any], *, everything: bool = False) -> int:
    """Profile; the number of model calls made."""
    report = embedded.profile_local_pool(
        tmp_path / "cache", matrix_out=embedded.MATRIX_FILE, everything=everything, progress=False
    )
    assert not report.failed, report.summary()
    return sum(len(m.calls) for m in state["models"].values())


def test_the_default_matrix_is_reprofiled_only_where_its_settings_changed(
    tmp_path: Path, toy_default: dict[str, Any]
) -> None:
    state = toy_default
    assert _run(tmp_path, state) == 2 * 7  # no record yet: every family, every model
    matrix_file = embedded.MATRIX_FILE
    sidecar = matrix_file.with_name("matrix.settings.json")
    first = read_matrix(matrix_file)
    assert all(all(v.values()) for v in first.results.values())
    record = json.loads(sidecar.read_text())
    assert sorted(record["families"]) == ["multiple_choice", "numeric"]
    assert record["families"]["numeric"]["max_tokens"] == 64

    state["models"] = {"a": _counting("a", True), "b": _counting("b", True)}
    assert _run(tmp_path, state) == 0  # settings unchanged: nothing asked again

    # A new numeric limit: only the 3 numeric questions are asked again, by both models; the
    # multiple-choice cells are kept (these fakes would now answer them wrong).
    state["settings"] = state["settings"].replace(max_tokens_numeric=128)
    assert _run(tmp_path, state) == 2 * 3
    assert read_matrix(matrix_file).results == first.results
    families = json.loads(sidecar.read_text())["families"]
    assert families["numeric"]["max_tokens"] == 128
    assert families["multiple_choice"] == record["families"]["multiple_choice"]

    # Recovery on changes the families that have a recovery prefix: asked again.
    state["settings"] = state["settings"].replace(answer_recovery=True)
    state["models"] = {"a": _counting("a"), "b": _counting("b")}
    assert _run(tmp_path, state) == 2 * 7
    families = json.loads(sidecar.read_text())["families"]
    assert families["multiple_choice"]["recovery"]["prefix"] == (
        answers.CONTRACTS["multiple_choice"].recovery_prefix
    )

    # --all asks every family again; the answers are in the response cache: no calls.
    state["models"] = {"a": _counting("a"), "b": _counting("b")}
    assert _run(tmp_path, state, everything=True) == 0
    assert read_matrix(matrix_file).results == first.results


def test_a_matrix_without_a_matching_record_is_reprofiled_whole(
    tmp_path: Path, toy_default: dict[str, Any]
) -> None:
    state = toy_default
    _run(tmp_path, state)
    matrix_file = embedded.MATRIX_FILE
    sidecar = matrix_file.with_name("matrix.settings.json")
    matrix_file.write_text(matrix_file.read_text().replace(",1,1\n", ",1,\n", 1))  # by hand
    state["models"] = {"a": _counting("a"), "b": _counting("b")}
    assert _run(tmp_path, state) == 0  # every family again, from the response cache
    assert all(len(v) == 7 for v in read_matrix(matrix_file).results.values())
    digest = json.loads(sidecar.read_text())["matrix_sha256"]
    assert digest == hashlib.sha256(matrix_file.read_bytes()).hexdigest()
    # Changed settings need every model: a subset would leave cells of two settings.
    state["settings"] = state["settings"].replace(max_tokens_numeric=99)
    with pytest.raises(ConfigError, match="without choosing models"):
        embedded.profile_local_pool(
            tmp_path / "cache", matrix_out=matrix_file, models=["a"], progress=False
        )

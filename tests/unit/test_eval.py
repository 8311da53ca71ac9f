"""`smcs eval` on scripted models: each method's definition, call sharing, tables, plots, resume."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from numpy.typing import NDArray

from smcs_graph import BankQuestion, HashingEmbedder, Pool, QuestionBank, SMCSConfig
from smcs_graph.errors import ConfigError
from smcs_graph.grading import Verdict, grade
from smcs_graph.offline.cache import ResponseCache
from smcs_graph.offline.evaluation.generation import (
    EvalOptions,
    EvalRun,
    answer_key,
    bank_standings,
    evaluate,
    expand_methods,
    majority_vote,
    rescore,
)
from smcs_graph.offline.evaluation.generation_report import (
    render_markdown,
    render_text,
    report_json,
    scaling_curve,
    summarize,
    write_report,
)
from smcs_graph.questions import QuestionRecord
from smcs_graph.testing import FakeChatModel

ADDITIONS = [(12, 30), (7, 8), (9, 6), (40, 2), (25, 25), (3, 4), (11, 19), (8, 8)]
CAPITALS = [
    ("France", "Paris", ["Lyon", "Paris", "Nice"]),
    ("Peru", "Lima", ["Lima", "Cusco", "Quito"]),
    ("Japan", "Tokyo", ["Osaka", "Kyoto", "Tokyo"]),
    ("Italy", "Rome", ["Rome", "Milan", "Turin"]),
    ("Spain", "Madrid", ["Seville", "Madrid", "Bilbao"]),
]
CONFIG = SMCSConfig(k=2, n_aggregations=3, n_sup_base=4, max_tokens=64, seed=3)


def addition(index: int, a: int, b: int, prefix: str) -> QuestionRecord:
    return QuestionRecord(
        id=f"{prefix}-add-{index}",
        family="numeric",
        question=f"What is {a} plus {b}?",
        answer=str(a + b),
        category="arithmetic",
    )


def capital(index: int, country: str, city: str, options: list[str], prefix: str) -> QuestionRecord:
    return QuestionRecord(
        id=f"{prefix}-cap-{index}",
        family="multiple_choice",
        question=f"Which city is the capital of {country}?",
        choices=tuple(options),
        answer="ABC"[options.index(city)],
        category="geography",
    )


BANK_RECORDS = [addition(i, a, b, "bank") for i, (a, b) in enumerate(ADDITIONS[:5])] + [
    capital(i, *row, "bank") for i, row in enumerate(CAPITALS[:3])
]
TEST_RECORDS = [addition(i, a, b, "test") for i, (a, b) in enumerate(ADDITIONS[5:])] + [
    capital(i, *row, "test") for i, row in enumerate(CAPITALS[3:])
]


def _user_text(messages: list[BaseMessage]) -> str:
    return str(messages[-1].content)


def _solve(prompt: str) -> tuple[str, str]:
    """(right, wrong) answers to a test prompt."""
    match = re.search(r"What is (\d+) plus (\d+)\?", prompt)
    if match:
        total = int(match.group(1)) + int(match.group(2))
        return f"The answer is {total}", f"The answer is {total + 1}"
    country = re.search(r"capital of (\w+)\?", prompt)
    assert country is not None, prompt
    row = next(r for r in CAPITALS if r[0] == country.group(1))
    right = "ABC"[row[2].index(row[1])]
    wrong = "ABC"[(row[2].index(row[1]) + 1) % 3]
    return f"The answer is ({right})", f"The answer is ({wrong})"


def scripted(knows: str, calls: list[str] | None = None) -> FakeChatModel:
    """A model right on one family ('numeric', 'multiple_choice' or 'none'), wrong elsewhere.

    As an aggregator it answers the question itself, ignoring the candidates.
    """

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> str:
        prompt = _user_text(messages)
        right, wrong = _solve(prompt)
        family = "numeric" if "plus" in prompt else "multiple_choice"
        if calls is not None:
            aggregating = isinstance(messages[0], SystemMessage)
            calls.append(f"{'aggregate' if aggregating else 'answer'}:{prompt[:40]}")
        if knows == "none":
            return "I am not sure."
        return right if family == knows else wrong

    return FakeChatModel(model_name=knows, respond=respond)


class TopicEmbedder:
    """Word hashing plus two strong topic axes (arithmetic, geography), so that retrieval of a
    full prompt (with its answer-format instruction) finds the bank questions of its topic."""

    id = "topic-test-embedder"
    dimension = 66

    def __init__(self) -> None:
        self._words = HashingEmbedder(dimension=64)

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        words = self._words.embed(texts)
        topics = np.array(
            [[3.0 * ("plus" in t), 3.0 * ("capital" in t)] for t in texts], dtype=np.float32
        )
        vectors = np.hstack([words, topics])
        out: NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return out


@pytest.fixture
def embedder() -> TopicEmbedder:
    return TopicEmbedder()


@pytest.fixture
def eval_bank(embedder: TopicEmbedder) -> QuestionBank:
    """'calc' right on arithmetic, 'geo' on geography, 'weak' on nothing; calc is best."""
    bank = QuestionBank.in_memory(embedder)
    bank.add_questions([BankQuestion.from_record(r) for r in BANK_RECORDS])
    numeric = {r.id: r.family == "numeric" for r in BANK_RECORDS}
    bank.record_results("calc", numeric)
    bank.record_results("geo", {i: not v for i, v in numeric.items()})
    bank.record_results("weak", dict.fromkeys(numeric, False))
    return bank


def make_pool(calls: dict[str, list[str]] | None = None) -> Pool:
    calls = calls if calls is not None else {}
    return Pool.from_chat_models(
        {
            name: scripted(knows, calls.setdefault(name, []))
            for name, knows in (("calc", "numeric"), ("geo", "multiple_choice"), ("weak", "none"))
        }
    )


def run(bank: QuestionBank, out: Path | None, **options: Any) -> EvalRun:
    pool = options.pop("pool", None) or make_pool()
    config = options.pop("config", CONFIG)
    return evaluate(
        pool, bank, TEST_RECORDS, config, out, options=EvalOptions(progress=False, **options)
    )


def by_method(result: EvalRun) -> dict[str, dict[str, bool | None]]:
    table: dict[str, dict[str, bool | None]] = {}
    for r in result.results:
        table.setdefault(r.method, {})[r.question_id] = r.correct
    return table


NUMERIC_IDS = [r.id for r in TEST_RECORDS if r.family == "numeric"]
CHOICE_IDS = [r.id for r in TEST_RECORDS if r.family == "multiple_choice"]


def accuracy(table: dict[str, bool | None]) -> float:
    graded = [v for v in table.values() if v is not None]
    return sum(graded) / len(graded)


def test_each_method_follows_its_definition(eval_bank: QuestionBank, tmp_path: Path) -> None:
    result = run(eval_bank, tmp_path / "eval")
    table = by_method(result)
    assert not result.failures
    assert result.standings.best == "calc"
    # Single models: right exactly on their family.
    assert table["single:calc"] == {i: i in NUMERIC_IDS for i in NUMERIC_IDS + CHOICE_IDS}
    assert table["single:geo"] == {i: i in CHOICE_IDS for i in NUMERIC_IDS + CHOICE_IDS}
    assert not any(table["single:weak"].values())
    # Best single = calc; the router sends arithmetic to calc and geography to geo.
    assert table["best-single"] == table["single:calc"]
    assert all(table["router"].values())
    routed = {r.question_id: r.detail["model"] for r in result.results if r.method == "router"}
    assert {routed[i] for i in NUMERIC_IDS} == {"calc"} and {routed[i] for i in CHOICE_IDS} == {
        "geo"
    }
    # SMCS: retrieval picks calc (arithmetic) or geo (geography) as referencer and aggregator
    # (what SMCS then chooses among its fusions: test_smcs_records_the_fusion_the_score_chose).
    smcs = {r.question_id: r for r in result.results if r.method == "smcs"}
    assert {smcs[i].detail["aggregator"] for i in CHOICE_IDS} == {"geo"}
    assert {smcs[i].detail["aggregator"] for i in NUMERIC_IDS} == {"calc"}
    assert all(smcs[i].detail["referencers"][0] == "calc" for i in NUMERIC_IDS)
    # MoA and Self-MoA aggregate with the best bank model (calc), which answers itself.
    assert table["moa"] == table["single:calc"] == table["self-moa"]
    # Majority over calc's samples; the vote over all models breaks the calc/geo tie by bank
    # rank, so calc's answers win everywhere (weak abstains).
    assert table["majority"] == table["single:calc"]
    assert table["vote-all"] == table["single:calc"]
    # Ablations: no prior drop fuses all K references in every aggregation, SMCS K - 1.
    for method, size in (("smcs", CONFIG.k - CONFIG.k_drop), ("no-prior-drop", CONFIG.k)):
        runs = [r for r in result.results if r.method == method]
        assert len(runs) == len(TEST_RECORDS)
        assert {len(c["subset"]) for r in runs for c in r.detail["candidates"]} == {size}
    assert set(table["no-similarity"]) == set(table["no-perplexity"]) == set(table["smcs"])
    random_k = [r for r in result.results if r.method == "random-k"]
    assert len(random_k) == len(TEST_RECORDS)
    assert all(len(r.detail["referencers"]) == 2 for r in random_k)


def test_calls_are_shared_between_methods_and_counted(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    calls: dict[str, list[str]] = {}
    result = run(eval_bank, tmp_path / "eval", pool=make_pool(calls))
    answers = {name: [c for c in made if c.startswith("answer:")] for name, made in calls.items()}
    # Each model answers each test question once for single/SMCS/MoA/vote-all/random-k, and
    # calc (the best model) K=2 times for Self-MoA and majority (one of them shared too).
    assert len(answers["weak"]) == len(answers["geo"]) == len(TEST_RECORDS)
    assert len(answers["calc"]) == 2 * len(TEST_RECORDS)
    assert result.calls_made == sum(len(made) for made in calls.values())
    assert result.cache_hits > 0
    smcs = next(s for s in summarize(result) if s.row == "smcs")
    assert smcs.calls == len(TEST_RECORDS) * (2 + 3)  # K referencers + n aggregations
    single = next(s for s in summarize(result) if s.row == "single:calc")
    assert single.calls == len(TEST_RECORDS) and single.input_tokens > 0


def test_resume_after_an_interruption_makes_no_call_twice(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    clean = run(eval_bank, tmp_path / "clean")

    done: list[str] = []
    crash_after = 25

    def crashing(knows: str) -> FakeChatModel:
        inner = scripted(knows)
        assert inner.respond is not None
        respond: Callable[..., Any] = inner.respond

        def guarded(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
            if len(done) >= crash_after:
                raise KeyboardInterrupt  # like Ctrl-C or a kill, in the middle of the run
            reply = respond(messages, kwargs)
            done.append(knows)
            return reply

        return FakeChatModel(model_name=knows, respond=guarded)

    pool = Pool.from_chat_models(
        {
            "calc": crashing("numeric"),
            "geo": crashing("multiple_choice"),
            "weak": crashing("none"),
        }
    )
    with pytest.raises(KeyboardInterrupt):
        run(eval_bank, tmp_path / "resumed", pool=pool)
    first = len(done)
    assert first == crash_after
    partial = ResponseCache(tmp_path / "resumed" / "calls.sqlite")
    committed = len(partial)
    partial.close()
    assert 0 < committed <= first

    calls: dict[str, list[str]] = {}
    resumed = run(eval_bank, tmp_path / "resumed", pool=make_pool(calls))
    second = sum(len(made) for made in calls.values())
    # No committed response is requested again: both runs together make the clean run's calls
    # (plus the calls that were in flight at the crash, never committed).
    assert committed + second == clean.calls_made
    assert by_method(resumed) == by_method(clean)
    answers = {(r.method, r.question_id): r.answer for r in resumed.results}
    assert answers == {(r.method, r.question_id): r.answer for r in clean.results}

    again: dict[str, list[str]] = {}
    rerun = run(eval_bank, tmp_path / "resumed", pool=make_pool(again))
    assert sum(len(made) for made in again.values()) == 0 and rerun.calls_made == 0


def test_other_settings_in_the_same_folder_are_refused(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    run(eval_bank, tmp_path / "eval", methods=("single",))
    with pytest.raises(
        ConfigError, match=r"other settings \(config.k: stored 2, now 3; samples: stored 2, now 3\)"
    ):
        run(eval_bank, tmp_path / "eval", methods=("single",), config=CONFIG.replace(k=3))


def test_bad_input_is_refused_before_any_call(eval_bank: QuestionBank, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown method"):
        EvalOptions(methods=("smcs", "magic"))
    leaked = [*TEST_RECORDS, BANK_RECORDS[0]]
    calls: dict[str, list[str]] = {}
    with pytest.raises(ConfigError, match="also in the bank"):
        evaluate(
            make_pool(calls),
            eval_bank,
            leaked,
            CONFIG,
            tmp_path,
            options=EvalOptions(progress=False),
        )
    empty = QuestionBank.in_memory(TopicEmbedder())
    with pytest.raises(ConfigError, match="no recorded result"):
        evaluate(make_pool(calls), empty, TEST_RECORDS, CONFIG, None)
    assert not any(calls.values())


def test_failing_model_is_reported_and_retried_by_the_next_run(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    broken = make_pool()
    broken["weak"].chat_model = FakeChatModel(error=ValueError("bad request"))
    first = run(eval_bank, tmp_path / "eval", pool=broken, methods=("single", "vote-all"))
    failed = {method for method, _ in first.failures}
    assert failed == {"single:weak", "vote-all"}
    assert "bad request" in next(iter(first.failures.values()))
    summary = {s.row: s for s in summarize(first)}
    assert summary["single:weak"].failed == len(TEST_RECORDS) and summary["single:calc"].n == len(
        TEST_RECORDS
    )
    second = run(eval_bank, tmp_path / "eval", methods=("single", "vote-all"))
    assert not second.failures and len(by_method(second)["vote-all"]) == len(TEST_RECORDS)


def test_bank_standings_and_router_fall_back_from_category_to_family_to_overall(
    eval_bank: QuestionBank,
) -> None:
    standings = bank_standings(eval_bank, ["weak", "geo", "calc", "new"])
    assert standings.order == ["calc", "geo", "weak"] and standings.unmeasured == ["new"]
    assert standings.accuracy["calc"] == pytest.approx(5 / 8)
    geography = capital(9, "Peru", "Lima", ["Lima", "Cusco", "Quito"], "x")
    assert standings.route(geography) == ("geo", "category:geography")
    other_category = QuestionRecord(
        id="x", family="multiple_choice", question="q?", choices=("a", "b"), category="art"
    )
    assert standings.route(other_category) == ("geo", "family:multiple_choice")
    unknown = QuestionRecord(id="y", family="math", question="q?", answer="1")
    assert standings.route(unknown) == ("calc", "overall")


def test_expand_methods() -> None:
    rows = expand_methods(["smcs", "single", "best-single"], ["a", "b", "c"], [1, 3, 2])
    assert rows == ["smcs", "single:a", "single:b", "single:c", "best-single", "smcs@1", "smcs@2"]


def test_scaling_curve_from_single_answers_and_subpool_runs(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    result = run(eval_bank, tmp_path / "eval", methods=("smcs", "single"), scaling=(1, 2))
    points = {p.size: p for p in scaling_curve(result)}
    assert [p.models for p in points.values()] == [
        ["calc"],
        ["calc", "geo"],
        ["calc", "geo", "weak"],
    ]
    assert points[1].best_single == points[1].oracle == points[1].smcs == pytest.approx(0.6)
    assert points[2].oracle == 1.0 and points[3].oracle == 1.0
    assert points[3].smcs == 1.0 and points[2].smcs is not None


def test_tables_json_and_plots_are_written(eval_bank: QuestionBank, tmp_path: Path) -> None:
    result = run(eval_bank, tmp_path / "eval", scaling=(1,))
    text = render_text(result)
    assert "best single (calc)" in text and "multiple_choice" in text and "accuracy %" in text
    markdown = render_markdown(result)
    assert "| SMCS | 5 | 100.0 |" in markdown
    data = report_json(result)
    json.dumps(data)
    rows = {m["row"]: m for m in data["methods"]}
    assert rows["smcs"]["accuracy"] == 1.0 and rows["smcs"]["by_family"]["numeric"]["n"] == 3
    assert rows["best-single"]["accuracy"] == pytest.approx(0.6)
    assert data["bank"]["router"]["category:geography"] == "geo"
    paths = write_report(result, tmp_path / "eval")
    for key in ("accuracy", "scaling", "cost"):
        png = paths[key].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert json.loads(paths["json"].read_text())["questions"] == len(TEST_RECORDS)
    assert paths["markdown"].read_text().startswith("# smcs eval")


def test_rescore_switches_one_term_of_the_hybrid_score_off() -> None:
    candidates = [
        {"similarity": 0.9, "perplexity": 3.0},  # consensus, unsure
        {"similarity": 0.2, "perplexity": 1.1},  # outlier, confident
        {"similarity": 0.9, "perplexity": None},  # infinite perplexity
    ]
    assert rescore(candidates, without="similarity") == 1
    assert rescore(candidates, without="perplexity") == 0  # ties: the first
    unavailable = [{"similarity": 0.1, "perplexity": None}, {"similarity": 0.5, "perplexity": None}]
    assert rescore(unavailable, without="similarity") is None
    assert rescore(unavailable, without="perplexity") == 1
    with pytest.raises(ValueError, match="without"):
        rescore(candidates, without="prior")


def test_majority_vote_groups_equal_answers_and_breaks_ties_by_order() -> None:
    def verdicts(*extracted: str | None) -> list[Verdict]:
        return [Verdict(correct=False, extracted=e) for e in extracted]

    assert majority_vote("multiple_choice", verdicts("B", "a", "A", None)) == 1
    assert majority_vote("multiple_choice", verdicts("B", "A")) == 0
    assert majority_vote("numeric", verdicts("1,000", "7", "1000.0", "$1000")) == 0
    assert majority_vote("numeric", verdicts(None, None)) is None
    assert majority_vote("math", verdicts("\\frac{1}{2}", "2", "0.5", "2")) == 0  # 1/2 = 0.5
    assert majority_vote("math", verdicts("x", "\\frac{1}{2}", "0.5")) == 1
    assert majority_vote("code", verdicts("def f(): pass")) is None
    assert answer_key("numeric", "12 apples") is None
    assert answer_key("multiple_choice", " c ") == "C"


def copying_aggregator(name: str) -> FakeChatModel:
    """Answers like `scripted('numeric')`; aggregating, it copies its first candidate, sure of
    itself only when copying an 'I am not sure.' (low perplexity on a wrong answer)."""

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
        if not isinstance(messages[0], SystemMessage):
            right, wrong = _solve(_user_text(messages))
            return right if "plus" in _user_text(messages) else wrong
        system = str(messages[0].content)
        copied = system.split("Candidate 1:\n", 1)[1].split("\n\n", 1)[0].strip()
        logprob = -0.01 if copied.startswith("I am not sure") else -1.0
        content = [{"token": word, "logprob": logprob} for word in copied.split()]
        return AIMessage(content=copied, response_metadata={"logprobs": {"content": content}})

    return FakeChatModel(model_name=name, respond=respond)


def test_ablation_rescoring_picks_from_the_same_candidates_without_calls(
    eval_bank: QuestionBank, tmp_path: Path
) -> None:
    pool = make_pool()
    pool["calc"].chat_model = copying_aggregator("calc")
    config = CONFIG.replace(k=3, k_drop=2, n_aggregations=6, aggregator="calc", drop_mode="authors")
    first = run(eval_bank, tmp_path / "eval", pool=pool, config=config, methods=("smcs",))
    calls: dict[str, list[str]] = {}
    second = run(
        eval_bank,
        tmp_path / "eval",
        pool=make_pool(calls),  # any new call would be scripted differently, and counted
        config=config,
        methods=("smcs", "no-similarity", "no-perplexity"),
    )
    assert first.calls_made > 0 and second.calls_made == 0
    smcs = {r.question_id: r for r in second.results if r.method == "smcs"}
    changed = 0
    for result in second.results:
        if result.method == "smcs":
            continue
        base = smcs[result.question_id]
        candidates = base.detail["candidates"]
        position = rescore(candidates, without=result.method.removeprefix("no-"))
        assert position is not None
        assert result.detail["chosen"] == candidates[position]["index"]
        assert result.answer == candidates[position]["text"]
        record = next(r for r in TEST_RECORDS if r.id == result.question_id)
        assert result.correct == grade(record, result.answer).correct
        assert (result.input_tokens, result.cost) == (base.input_tokens, base.cost)
        changed += result.detail["chosen"] != base.detail["chosen"]
    assert changed > 0  # the ablations do choose differently on some question
    table = by_method(second)
    assert accuracy(table["no-perplexity"]) > accuracy(table["no-similarity"])


def fusing_aggregator(name: str) -> FakeChatModel:
    """Answers like `scripted('numeric')`; aggregating, it writes three different fusions of
    each question in turn (per number of candidates it read): an outlier that is wrong and the
    surest, the consensus unsure, and the consensus sure, which names how many it read."""
    lock = threading.Lock()
    turns: Counter[tuple[str, int]] = Counter()

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> Any:
        prompt = _user_text(messages)
        right, wrong = _solve(prompt)
        if not isinstance(messages[0], SystemMessage):
            return right if "plus" in prompt else wrong
        read = len(re.findall(r"^Candidate \d+:$", str(messages[0].content), re.MULTILINE))
        with lock:
            turn = turns[prompt, read] % 3
            turns[prompt, read] += 1
        text, logprob = fusions(right, wrong, read)[turn]
        content = [{"token": word, "logprob": logprob} for word in text.split()]
        return AIMessage(content=text, response_metadata={"logprobs": {"content": content}})

    return FakeChatModel(model_name=name, respond=respond)


def fusions(right: str, wrong: str, read: int) -> list[tuple[str, float]]:
    """(text, logprob of each token) of the three fusions `fusing_aggregator` writes."""
    agreed = f"{right}. The candidates agree on it, and I checked each of them carefully"
    return [(wrong, -0.01), (f"{agreed}.", -2.0), (f"{agreed} ({read} read).", -0.05)]


def test_smcs_records_the_fusion_the_score_chose(eval_bank: QuestionBank, tmp_path: Path) -> None:
    """SMCS answers with the fusion that is both consensual and sure (eq. 7), not a reference
    and not the surest outlier; the ablations choose otherwise, observably."""
    pool = make_pool()
    pool["calc"].chat_model = fusing_aggregator("calc")
    config = CONFIG.replace(k=3, n_aggregations=3, aggregator="calc")
    methods = ("smcs", "no-prior-drop", "no-similarity", "no-perplexity")
    result = run(eval_bank, tmp_path / "eval", pool=pool, config=config, methods=methods)
    assert not result.failures
    runs = {(r.method, r.question_id): r for r in result.results}
    for record in TEST_RECORDS:
        right, wrong = _solve(record.question)
        for method, read in (("smcs", 2), ("no-prior-drop", 3)):
            chosen = runs[method, record.id]
            texts = {c["text"]: c for c in chosen.detail["candidates"]}
            written = fusions(right, wrong, read)
            assert set(texts) == {text for text, _ in written}  # the three fusions, each once
            assert {len(c["subset"]) for c in texts.values()} == {read}
            assert chosen.answer == written[2][0]  # consensual and sure
            assert chosen.detail["chosen"] == texts[written[2][0]]["index"]
            assert chosen.correct is True
        # similarity alone picks the unsure centre of the consensus; perplexity alone picks
        # the outlier, which is wrong
        assert runs["no-perplexity", record.id].answer == fusions(right, wrong, 2)[1][0]
        assert runs["no-similarity", record.id].answer == wrong
        assert runs["no-similarity", record.id].correct is False
    table = by_method(result)
    assert accuracy(table["smcs"]) == 1.0 and accuracy(table["no-similarity"]) == 0.0

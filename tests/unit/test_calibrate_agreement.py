"""`smcs calibrate --agreement` on a small synthetic bank and a response cache written by hand:
the gate's decision on cached replies, the similarity threshold by hand, the recommendation,
the cache keys profiling stores replies under, and the command end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from smcs_graph import BankQuestion, QuestionBank, SMCSConfig
from smcs_graph.cli import main
from smcs_graph.core import select_top_k
from smcs_graph.errors import ConfigError
from smcs_graph.models.pool import read_pool_file
from smcs_graph.nodes.gates import agreement
from smcs_graph.offline.cache import CachedResponse, ResponseCache
from smcs_graph.offline.calibrate import (
    AgreementEvidence,
    bank_agreement_evidence,
    bank_held_out,
    choose_similarity,
    cross_validated,
    profiled_replies,
)
from smcs_graph.offline.calibrate.agreement import MIN_AGREE
from smcs_graph.offline.profiling.settings import GenerationSettings, question_key
from smcs_graph.questions import QuestionRecord, prompt_for
from smcs_graph.selection import prior_selection

POOL = ["alpha", "beta", "gamma"]
ENTRIES = [
    {"name": "alpha", "base_url": "http://127.0.0.1:9/v1"},
    {"name": "beta", "base_url": "http://127.0.0.1:9/v1", "system_prompt": "Be brief."},
    {
        "name": "gamma",
        "base_url": "http://127.0.0.1:9/v1",
        "templates": {"math": "Think.\n\n{question}"},
    },
]
SETTINGS = SMCSConfig(k=3, n_aggregations=2, n_sup_base=8, prior_rule="shrunk", seed=1)
_WORDS = ["prime", "angle", "river", "empire", "vote", "atom", "gene", "loop", "orbit", "poem"]
_CHAT = ["the river bends north", "a quiet empire falls", "gene loops orbit atoms", "vote now"]


def _questions() -> list[QuestionRecord]:
    """30 math questions (the gate compares boxed answers) and 30 in a family of one's own
    ('chat': the gate compares the replies' embeddings)."""
    rng = np.random.default_rng(3)
    out = []
    for i in range(60):
        family = "math" if i % 2 == 0 else "chat"
        words = " ".join(rng.choice(_WORDS, size=3))
        out.append(QuestionRecord(id=f"q{i:02d}", family=family, question=f"{family} {words} {i}?"))
    return out


def _reply(model: str, record: QuestionRecord, i: int) -> str:
    """Replies: on a third of the questions every model says the same."""
    same = i % 3 == 0
    if record.family == "math":
        value = 7 if same or model == "alpha" else i + len(model)
        return f"So the result is $\\boxed{{{value}}}$."
    if same:
        return _CHAT[i % 4]
    if i % 3 == 1:  # the same sentence, each model's name after it: close, not identical
        return f"{_CHAT[i % 4]} {model}"
    return f"{_CHAT[(i + len(model)) % 4]} {model}"


def _right(model: str, i: int) -> bool:
    return (i * 7 + len(model) * 3) % 5 < {"alpha": 3, "beta": 2, "gamma": 1}[model]


def _bank(embedder: Any, where: Path | None = None) -> QuestionBank:
    bank = QuestionBank.open(where, embedder) if where else QuestionBank.in_memory(embedder)
    records = _questions()
    bank.add_questions([BankQuestion.from_record(r) for r in records])
    for m in POOL:
        bank.record_results(m, {r.id: _right(m, i) for i, r in enumerate(records)})
    return bank


def _write_cache(path: Path, *, skip: set[tuple[str, str]] = frozenset()) -> None:
    """The replies under the keys `smcs profile` stores them with (pool file's settings)."""
    from smcs_graph.models.prompts import prompt_digest
    from smcs_graph.offline.calibrate.agreement import _entry_prompts

    prompts = _entry_prompts(ENTRIES)
    generation = GenerationSettings.from_settings(SETTINGS)
    rows = []
    for i, record in enumerate(_questions()):
        for m in POOL:
            if (record.id, m) in skip:
                continue
            key = question_key(
                m,
                record.id,
                record.question,
                prompt_for(record),
                generation.for_family(record.family),
                prompt_digest(prompts[m], record.family),  # type: ignore[arg-type]
            )
            rows.append((key, m, CachedResponse(_reply(m, record, i))))
    with ResponseCache(path) as cache:
        cache.put_many(rows)


def test_calibrate_decides_agreement_as_the_gate_does_on_the_cached_replies(
    embedder, tmp_path: Path
) -> None:
    bank = _bank(embedder)
    cache = tmp_path / "replies.sqlite"
    _write_cache(cache, skip={("q05", "beta")})
    held = bank_held_out(bank, POOL, SETTINGS, folds=0)
    ev = bank_agreement_evidence(bank, held, ENTRIES, SETTINGS, cache)
    assert "q05" not in ev.question_ids and ev.missing == {"chat": 1}
    assert len(ev.question_ids) == 59
    records = {r.id: (i, r) for i, r in enumerate(_questions())}
    snap = bank._snap()
    families = dict(zip(snap.ids, snap.families, strict=True))
    checked = set()
    for j, qid in enumerate(ev.question_ids):
        h = held.question_ids.index(qid)
        if j % 6 == 0:  # the gate's view on the bank without the question
            row = snap.index[qid]
            support, priors = prior_selection(
                snap.texts[row], POOL, _without(embedder, qid), embedder, SETTINGS, snap.matrix[row]
            )
            assert held.nearest[h] == support.question_ids[0]
            assert held.referencers[h] == tuple(POOL[i] for i in select_top_k(priors, 3))
        i, record = records[qid]
        texts = [_reply(m, record, i) for m in held.referencers[h]]
        family = families[held.nearest[h]]
        assert ev.families[j] == family
        for t in np.arange(-0.5, 1.0, 0.05):
            gate = agreement(texts, family, embedder, t)
            assert bool(ev.agree(t)[j]) == gate["agree"], (qid, t)
            checked.add((family in ("math",), gate["agree"]))
    # Both ways of agreeing are exercised, each both ways.
    assert checked == {(True, True), (True, False), (False, True), (False, False)}


def _without(embedder: Any, qid: str) -> QuestionBank:
    bank = QuestionBank.in_memory(embedder)
    records = [r for r in _questions() if r.id != qid]
    bank.add_questions([BankQuestion.from_record(r) for r in records])
    for m in POOL:
        bank.record_results(m, {r.id: _right(m, int(r.id[1:])) for r in records})
    return bank


def _evidence(
    lowest: list[float],
    top: list[bool],
    any_: list[bool],
    *,
    extractor: list[bool] | None = None,
    same: list[bool] | None = None,
    p_top: list[float] | None = None,
) -> AgreementEvidence:
    size = len(lowest)
    ext = np.array(extractor or [False] * size)
    return AgreementEvidence(
        question_ids=[f"q{i}" for i in range(size)],
        families=["math" if e else "chat" for e in ext],
        extractor=ext,
        same_answer=np.array(same or [False] * size),
        min_similarity=np.where(ext, np.nan, np.array(lowest, dtype=np.float64)),
        top_right=np.array(top),
        any_right=np.array(any_),
        p_top=np.array(p_top or [0.1] * size),
        k=3,
        n=2,
        missing={},
    )


def test_the_similarity_threshold_is_the_smallest_within_the_tolerance_by_hand() -> None:
    # 40 questions at cosines 0.50, 0.51, ..., 0.89; collaborating helps on those at 0.52
    # and 0.55 only (the top model wrong, another right); every other top model is right.
    lowest = [0.5 + i / 100 for i in range(40)]
    top = [i not in (2, 5) for i in range(40)]
    any_ = [True] * 40
    ev = _evidence(lowest, top, any_)
    # 0.56: 34 agree, gain 0; 0.55: 35 agree, gain 1/35 = 2.9 points > 2.
    chosen = choose_similarity(ev, tolerance=0.02, prior_threshold=0.5, current=0.9)
    assert chosen.threshold == 0.56 and chosen.qualified
    # 3 points: 0.53 (1 in 37 = 2.7 points); 0.52 has 2 in 38 = 5.3.
    assert choose_similarity(ev, tolerance=0.03, prior_threshold=0.5, current=0.9).threshold == (
        0.53
    )
    # Every question escalates (P(correct) 0.1 < 0.5): the 34 that agree at 0.56 save n = 2
    # calls each, at no gain lost: 5 -> 5 - 2 * 34 / 40.
    assert chosen.escalated_agree == 34 and chosen.recommend
    assert chosen.calls_prior == 5 and chosen.calls_both == pytest.approx(5 - 2 * 34 / 40)
    row = chosen.families[0]
    assert (row.family, row.method, row.questions, row.agree) == ("chat", "similarity", 40, 34)
    assert row.top_agree == 1.0 and row.top_rest == pytest.approx(4 / 6)
    # No threshold with MIN_AGREE questions agreeing meets a zero tolerance below 0.56;
    # the gain on more than 40 - MIN_AGREE questions decides nothing more.
    strict = choose_similarity(
        _evidence(lowest, [i != 30 for i in range(40)], any_),
        tolerance=0.0,
        prior_threshold=0.5,
        current=0.9,
    )
    assert not strict.qualified and strict.threshold == 1.0 and not strict.recommend


def test_too_few_questions_decided_by_similarity_leave_the_threshold_alone() -> None:
    few = MIN_AGREE - 1
    ev = _evidence([0.99] * few, [True] * few, [True] * few)
    result = choose_similarity(ev, tolerance=0.02, prior_threshold=0.5, current=0.9)
    assert result.threshold is None and f"only {few} questions" in (result.why_not or "")
    # The figures use the run's 0.9: every pair at 0.99 agrees.
    assert result.families[0].agree == few
    assert cross_validated(ev, tolerance=0.02) is None


def test_the_gate_is_recommended_only_where_it_saves_calls_at_no_loss() -> None:
    # Extractor questions only: 4 agree (same answer); P(correct) decides which escalate.
    same = [True, True, True, True, False, False]
    p_top = [0.2, 0.2, 0.9, 0.9, 0.2, 0.9]
    ext = [True] * 6
    safe = _evidence([0] * 6, [True] * 6, [True] * 6, extractor=ext, same=same, p_top=p_top)
    on = choose_similarity(safe, tolerance=0.0, prior_threshold=0.5, current=0.9)
    assert on.threshold is None and on.recommend and on.escalated_agree == 2
    # 3 escalate (5 calls), 3 alone: 18 / 6 = 3; two of them agree and skip n = 2 fusions.
    assert on.calls_prior == 3 and on.calls_both == pytest.approx(3 - 4 / 6)
    lossy = _evidence(
        [0] * 6,
        [False, True, True, True, True, True],
        [True] * 6,
        extractor=ext,
        same=same,
        p_top=p_top,
    )
    off = choose_similarity(lossy, tolerance=0.02, prior_threshold=0.5, current=0.9)
    assert not off.recommend and "could still add 50.0 points" in off.reason
    # Nothing escalated agrees: no call saved, nothing recommended.
    alone = choose_similarity(safe, tolerance=0.02, prior_threshold=0.1, current=0.9)
    assert not alone.recommend and "save no call" in alone.reason
    with pytest.raises(ConfigError, match=r"fraction in \[0, 1\]"):
        choose_similarity(safe, tolerance=1.5, prior_threshold=0.5, current=0.9)


def test_replies_are_found_under_profilings_keys_only(tmp_path: Path) -> None:
    records = _questions()[:4]
    questions = [BankQuestion.from_record(r) for r in records]
    cache = tmp_path / "replies.sqlite"
    _write_cache(cache)
    wanted = {r.id: POOL for r in records}
    found = profiled_replies(cache, questions, ENTRIES, SETTINGS, wanted)
    assert found == {(r.id, m): _reply(m, r, i) for i, r in enumerate(records) for m in POOL}
    # Other settings (token limits) or another model prompt: other keys, nothing found.
    other = SETTINGS.replace(max_tokens_math=17, max_tokens=33)
    assert profiled_replies(cache, questions, ENTRIES, other, wanted) == {}
    changed = [{**e, "system_prompt": "New."} for e in ENTRIES]
    assert profiled_replies(cache, questions, changed, SETTINGS, wanted) == {}


def test_a_reply_cached_before_unfinished_replies_were_finished_counts_when_it_states_one(
    tmp_path: Path,
) -> None:
    record = QuestionRecord(id="m1", family="math", question="What is 2 + 2?")
    settings = SMCSConfig(answer_recovery=True)
    narrowed = GenerationSettings.from_settings(settings).for_family("math")
    assert narrowed.recovery is not None and narrowed.recovery.recover_unfinished
    parts = ("alpha", "m1", record.question, prompt_for(record), narrowed, "")
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put(question_key(*parts, unfinished=False), "alpha", CachedResponse("\\boxed{4}"))
        cache.put(
            question_key("beta", *parts[1:], unfinished=False),
            "beta",
            CachedResponse("Let me think about it"),  # a follow-up is due now: unknown reply
        )
    entries = [{"name": "alpha"}, {"name": "beta"}]
    found = profiled_replies(
        tmp_path / "c.sqlite",
        [BankQuestion.from_record(record)],
        entries,
        settings,
        {"m1": ["alpha", "beta"]},
    )
    assert found == {("m1", "alpha"): "\\boxed{4}"}


def _pool_file(path: Path) -> Path:
    import yaml

    path.write_text(
        "# my pool\n"
        + yaml.safe_dump({"models": ENTRIES})
        + "smcs:\n  k: 3\n  n_aggregations: 2\n  n_sup_base: 8\n  prior_rule: shrunk\n"
        "  seed: 1\n"
    )
    return path


def test_calibrate_agreement_end_to_end_on_a_bank_on_disk(tmp_path: Path, capsys) -> None:
    from smcs_graph import HashingEmbedder

    _bank(HashingEmbedder(64), tmp_path / "bank").close()
    pool = _pool_file(tmp_path / "pool.yaml")
    base = ["calibrate", "--pool", str(pool), "--bank", str(tmp_path / "bank")]
    base += ["--embedder", "hashing:64", "--max-calls", "3"]
    out = tmp_path / "out.yaml"
    # No cache yet: a note, the prior gate's settings only, exit 0.
    assert main([*base, "--agreement", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Agreement gate: not calibrated" in text and "no profiled replies at" in text
    assert "smcs profile" in text and "agreement" not in out.read_text()
    # `smcs profile`'s cache beside the bank.
    _write_cache(tmp_path / "bank.responses.sqlite")
    assert main([*base, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "Agreement gate: not calibrated (--agreement calibrates it from the profiled" in text
    assert main([*base, "--agreement", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "the replies of every top-K model for 60 of 60 held-out bank questions" in text
    assert "math              answer" in text and "similarity" in text
    written = read_pool_file(out).settings
    recommended = "Recommendation: agreement_gate on" in text
    assert written.agreement_gate is recommended
    chosen = float(text.split("Chosen: agreement_similarity = ")[1].split(" ")[0])
    assert written.agreement_similarity == chosen
    assert written.collaboration == "adaptive" and "# my pool" in out.read_text()
    assert main([*base, "--agreement", "--agreement-tolerance", "2", "--dry-run"]) == 2
    assert "--agreement-tolerance 2 is impossible" in capsys.readouterr().err

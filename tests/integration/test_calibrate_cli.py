"""`smcs calibrate` as a real process on the embedded default bank (MiniLM, Chroma on disk,
the committed matrix): no model is called; and `--agreement` on a small bank that the real
local pool profiled over HTTP (its response cache beside the bank)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from smcs_graph.embedded.default import LOCAL_POOL_FILE
from smcs_graph.models.pool import read_pool_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def smcs(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SMCS_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "smcs_graph", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def test_calibrate_on_the_default_bank_writes_a_copy_of_the_pool_file(
    smcs_cache: Path, tmp_path: Path
) -> None:
    before = LOCAL_POOL_FILE.read_text()
    refused = smcs(smcs_cache, "calibrate", "--max-calls", "2")
    assert refused.returncode == 2 and "--out FILE" in refused.stderr
    out, plot = tmp_path / "calibrated.yaml", tmp_path / "curve.png"
    done = smcs(
        smcs_cache,
        *("calibrate", "--max-calls", "2", "--out", str(out), "--plot", str(plot)),
        *("--agreement", "--rules", "paper,hier"),
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    # A fresh cache holds no profiled replies: said, and no agreement setting is written.
    responses = smcs_cache / "default-bank" / "bank-v1.responses.sqlite"
    assert (
        f"Agreement gate: not calibrated, agreement_gate and agreement_similarity left as "
        f"they are: no profiled replies at {responses}" in text
    )
    assert "python -m smcs_graph.embedded profile" in text
    assert "agreement" not in out.read_text()
    assert "leave-one-out over 499 bank questions" in text  # the bank split, never the test
    assert "Platt calibration refitted" in text and "(follow-ups not counted" in text
    assert "ECE" in text and "<- chosen" in text and "oracle" in text
    # Both rules held out, one chosen: the gate's rule is written, selection's is kept.
    rows = re.findall(r"^  (paper|hier) +([\d.]+) %.*$", text, flags=re.M)
    assert [r[0] for r in rows] == ["paper", "hier"], text
    rule = re.search(r"gate rule (\w+)\)", text)
    assert rule is not None and rule.group(1) in ("paper", "hier")
    chosen = re.search(
        r"Chosen: prior_gate_threshold = ([\d.]+): .* ([\d.]+) calls per question "
        r"\(upper 90 % bound ([\d.]+) calls",
        text,
    )
    assert chosen is not None, text
    threshold, calls, bound = (float(chosen.group(i)) for i in (1, 2, 3))
    assert 0.0 < threshold < 1.0 and 1.0 < calls < bound <= 2.0
    settings = read_pool_file(out).settings
    assert settings.collaboration == "adaptive" and settings.prior_gate_threshold == threshold
    assert settings.gate_rule == rule.group(1) and settings.prior_rule == "paper"
    assert settings.k == 3 and settings.n_aggregations == 2  # the other settings kept
    assert "# Settings that fit 2 CPU cores" in out.read_text()  # and the comments
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert LOCAL_POOL_FILE.read_text() == before


@pytest.mark.parametrize("rule", ["hier", "learned"])
def test_calibrate_scores_default_bank_questions_as_the_gate_on_the_bank_without_them(
    smcs_cache: Path, rule: str
) -> None:
    """The real bank (MiniLM embeddings, Chroma on disk, the committed matrix), 10 folds: a
    question's P(correct) in calibrate is the gate's on a bank holding the other folds."""
    import numpy as np

    from smcs_graph.bank import QuestionBank
    from smcs_graph.core import select_top_k
    from smcs_graph.embedded.default import open_default_bank
    from smcs_graph.offline.calibrate import bank_held_out
    from smcs_graph.offline.calibrate.heldout import fold_of
    from smcs_graph.selection import p_correct, prior_selection

    parsed = read_pool_file(LOCAL_POOL_FILE)
    settings, pool = parsed.settings.replace(prior_rule=rule, gate_rule=None), parsed.model_names
    bank = open_default_bank(smcs_cache, progress=False)
    try:
        held = bank_held_out(bank, pool, settings, folds=10, seed=3)
        assert held.scheme == "10-fold cross-fitting" and held.platt_fits == 10
        snap = bank._snap()
        ids = list(snap.ids)
        assignment = fold_of(len(ids), 10, seed=3)
        fold = np.flatnonzero(assignment == 4)
        keep = np.flatnonzero(assignment != 4)
        rest = QuestionBank.in_memory(bank.embedder)
        rest.add_questions(bank.get([ids[i] for i in keep]), embeddings=snap.matrix[keep])
        rest.record_many(
            {
                m: {ids[i]: bool(v == 1) for i in keep if (v := snap.results[m][i]) >= 0}
                for m in snap.results
            }
        )
        k = held.k
        for row in fold[:5]:
            support, priors = prior_selection(
                snap.texts[row], pool, rest, bank.embedder, settings, snap.matrix[row]
            )
            p = p_correct(support, pool, rest, settings, priors)
            top = int(select_top_k(priors, k)[0])
            i = held.question_ids.index(ids[row])
            assert held.top[i] == pool[top]
            # 1e-6, not 1e-9: the copy's embeddings are normalized again on write (1.5e-8).
            assert abs(held.p_top[i] - p[top]) <= 1e-6
    finally:
        bank.close()


CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Greece": "Athens",
    "Russia": "Moscow",
    "China": "Beijing",
    "Canada": "Ottawa",
    "Portugal": "Lisbon",
    "Norway": "Oslo",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Cuba": "Havana",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
}
CHOICES = {
    "Which planet is closest to the Sun?": (("Venus", "Mercury", "Mars", "Earth"), "B"),
    "What is the chemical symbol for water?": (("H2O", "CO2", "NaCl", "O2"), "A"),
    "How many legs does a spider have?": (("Six", "Ten", "Eight", "Four"), "C"),
    "Which gas do plants take in from the air?": (("Oxygen", "Helium", "Neon", "CO2"), "D"),
}


def test_calibrate_agreement_on_replies_the_local_pool_gave(
    pool: Any, embedder: Any, tmp_path: Path
) -> None:
    """The local pool (the session's servers) answers a small bank over HTTP through
    `profile_pool` (20 free-text capital questions: the gate compares the replies' MiniLM
    embeddings; 4 multiple-choice: their letters); `smcs calibrate --agreement` then reads
    the cached replies, reports and writes the agreement settings, and agrees with the gate's
    own decision on those replies."""
    from smcs_graph import BankQuestion, QuestionBank
    from smcs_graph.grading import Verdict, grade
    from smcs_graph.nodes.gates import agreement
    from smcs_graph.offline.calibrate import bank_agreement_evidence, bank_held_out
    from smcs_graph.offline.profiling import GenerationSettings, profile_pool
    from smcs_graph.questions import QuestionRecord

    records = [
        QuestionRecord(
            id=f"cap-{country}",
            family="capital",
            question=f"What is the capital of {country}? Answer in one word.",
            answer=city,
        )
        for country, city in CAPITALS.items()
    ]
    records += [
        QuestionRecord(
            id=f"mc-{i}", family="multiple_choice", question=q, choices=choices, answer=letter
        )
        for i, (q, (choices, letter)) in enumerate(CHOICES.items())
    ]
    names = list(pool.names)
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(
        "models:\n"
        + "".join(f"  - name: {name}\n    local: true\n" for name in names)
        + "smcs:\n  k: 2\n  n_aggregations: 1\n  n_sup_base: 8\n  max_tokens: 24\n"
        "  max_tokens_multiple_choice: 24\n  answer_recovery: false\n"
    )
    settings = read_pool_file(pool_file).settings

    def grader(record: QuestionRecord, text: str) -> Verdict:
        if record.family == "multiple_choice":
            return grade(record, text)
        return Verdict(correct=(record.answer or "").lower() in text.lower())

    folder = tmp_path / "bank"
    bank = QuestionBank.open(folder, embedder)
    try:
        bank.add_questions([BankQuestion.from_record(r) for r in records])
        report = profile_pool(
            bank,
            pool,
            generation=GenerationSettings.from_settings(settings),
            grader=grader,
            concurrency=2,
            progress=False,
        )
        assert not report.failed
    finally:
        bank.close()
    assert (tmp_path / "bank.responses.sqlite").is_file()  # beside the bank

    out = tmp_path / "out.yaml"
    args = ("calibrate", "--pool", str(pool_file), "--bank", str(folder), "--max-calls", "2")
    done = smcs(tmp_path / "cache", *args, "--agreement", "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "the replies of every top-K model for 24 of 24 held-out bank questions" in text
    # By the family of each question's nearest bank question, as the gate decides.
    by_similarity = re.search(r"capital +similarity +(\d+) ", text)
    by_answer = re.search(r"multiple_choice +answer +(\d+) ", text)
    assert by_similarity is not None and by_answer is not None, text
    assert int(by_similarity.group(1)) + int(by_answer.group(1)) == 24
    assert int(by_similarity.group(1)) >= 20  # enough to choose agreement_similarity on
    chosen = re.search(r"Chosen: agreement_similarity = ([-\d.]+) ", text)
    assert chosen is not None, text
    threshold = float(chosen.group(1))
    written = read_pool_file(out).settings
    assert written.agreement_similarity == threshold
    assert written.agreement_gate is ("Recommendation: agreement_gate on" in text)
    assert written.collaboration == "adaptive"

    # The report's agreement is the gate's on the same replies (MiniLM on the cached text).
    bank = QuestionBank.open(folder, embedder, create=False)
    try:
        held = bank_held_out(bank, names, settings)
        entries = read_pool_file(pool_file).data["models"]
        ev = bank_agreement_evidence(
            bank, held, entries, settings, folder.with_name("bank.responses.sqlite")
        )
    finally:
        bank.close()
    assert len(ev.question_ids) == 24
    from smcs_graph.offline.calibrate import profiled_replies

    by_id = {r.id: BankQuestion.from_record(r) for r in records}
    wanted = dict(zip(held.question_ids, held.referencers, strict=True))
    replies = profiled_replies(
        folder.with_name("bank.responses.sqlite"), list(by_id.values()), entries, settings, wanted
    )
    for j, qid in enumerate(ev.question_ids):
        h = held.question_ids.index(qid)
        texts = [replies[(qid, m)] for m in held.referencers[h]]
        for t in (threshold, 0.5, 0.8):
            gate = agreement(texts, ev.families[j], embedder, t)
            assert bool(ev.agree(t)[j]) == gate["agree"], (qid, t, texts)

"""`smcs calibrate` as a real process on the embedded default bank (MiniLM, Chroma on disk,
the committed matrix): no model is called."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
    done = smcs(smcs_cache, "calibrate", "--max-calls", "2", "--out", str(out), "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "leave-one-out over 499 bank questions" in text  # the bank split, never the test
    assert "prior_rule paper" in text and "Platt calibration refitted" in text
    assert "ECE" in text and "<- chosen" in text and "oracle" in text
    chosen = re.search(r"Chosen: prior_gate_threshold = ([\d.]+): .* ([\d.]+) calls per", text)
    assert chosen is not None
    threshold, calls = float(chosen.group(1)), float(chosen.group(2))
    assert 0.0 < threshold < 1.0 and 1.0 < calls <= 2.0
    settings = read_pool_file(out).settings
    assert settings.collaboration == "adaptive" and settings.prior_gate_threshold == threshold
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
    settings, pool = parsed.settings.replace(prior_rule=rule), parsed.model_names
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

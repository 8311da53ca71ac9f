"""Stream replay on synthetic arrays: step priors, revealed cells, learning, the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from smcs_graph import core
from smcs_graph.offline.evaluation.calibration import ShrunkChoice
from smcs_graph.offline.evaluation.priors import rps_priors, shrunk_priors, similarity_matrix
from smcs_graph.offline.evaluation.stream import (
    StreamSettings,
    _Bank,
    _route,
    _Rule,
    run_stream,
)
from smcs_graph.offline.evaluation.stream_report import (
    render_stream_markdown,
    render_stream_text,
    stream_plot,
)

Data = tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.bool_], list[str], list[str]]


def clustered(n: int = 400, clusters: int = 20, seed: int = 0) -> Data:
    """Questions in tight clusters; model j is right on clusters with c % 4 == j, else wrong;
    model 4 is right half the time everywhere. One category: the initial bank misses clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, 16))
    cluster = rng.integers(0, clusters, n)
    emb = (centres[cluster] + 0.05 * rng.normal(size=(n, 16))).astype(np.float32)
    cap = np.zeros((5, n))
    for j in range(4):
        cap[j] = cluster % 4 == j
    cap[4] = rng.random(n) < 0.5
    measured = np.ones((5, n), dtype=bool)
    measured[rng.integers(0, 5, 30), rng.integers(0, n, 30)] = False
    return emb, cap, measured, ["x"] * n, [f"m{j}" for j in range(5)]


def test_settings_refuse_bad_input_clearly() -> None:
    with pytest.raises(ValueError, match="learned rule refits"):
        StreamSettings(rule="learned")
    with pytest.raises(ValueError, match="modes must name"):
        StreamSettings(modes=("static", "greedy"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="initial_fraction"):
        StreamSettings(initial_fraction=0.0)
    with pytest.raises(ValueError, match="exploration weights"):
        StreamSettings(explore_c=-1.0)


def test_step_priors_equal_the_batch_rules_on_a_partial_bank() -> None:
    """One arrival's priors over a bank with masked cells: eq. 4's ranking and the shrunk rule
    equal the batch code replay scores (`rps_priors`, `shrunk_priors`) on the same mask."""
    emb, cap, measured, _, _ = clustered()
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cap_t, meas_t = cap.T.copy(), measured.T.copy()
    bank = _Bank(cap_t, meas_t, np.zeros(400, dtype=np.intp), 1, 50)
    rng = np.random.default_rng(1)
    for position in range(50, 300):
        bank.add(position, np.flatnonzero(meas_t[position] & (rng.random(5) < 0.4)))
    sims = similarity_matrix(unit[300:310], unit[:300])
    mask = bank.revealed[:300].T
    assert (~mask & measured[:, :300]).any()  # masked cells with a recorded value
    paper = _Rule("paper", 20, 0.95, "paper", ["x"])
    want = rps_priors(sims, cap[:, :300], mask, 20, 0.95)
    choice = ShrunkChoice(20, 0.1, 1.0, 0.0, 0.0)
    shrunk = _Rule("shrunk", 20, 0.95, "paper", ["x"], shrunk=choice)
    g = core.global_accuracy(cap[:, :300], mask)
    want_shrunk = shrunk_priors(sims, cap[:, :300], mask, g, 20, 0.95, 1.0, temperature=0.1)
    for row in range(10):
        p, labels, support = _route(paper, bank, sims[row], explore=False)
        total = np.where(core.support_mask(sims[row], 20, 0.95), sims[row], 0.0).sum()
        np.testing.assert_allclose(p * total, want[row], rtol=1e-10, atol=1e-12)
        inside = core.support_mask(sims[row], 20, 0.95)
        assert support == inside.sum()
        np.testing.assert_array_equal(labels, mask[:, inside].sum(axis=1))
        np.testing.assert_allclose(_route(shrunk, bank, sims[row], False)[0], want_shrunk[row])


def test_each_mode_reveals_only_its_cells_and_masked_cells_are_never_wrong() -> None:
    emb, cap, measured, labels, models = clustered()
    cfg = StreamSettings(
        modes=("static", "chosen", "top-k", "full", "explore"),
        seeds=(0, 1),
        k=2,
        n_sup_base=5,
        held_out_fraction=0.1,
        explore_c=0.5,
    )
    report = run_stream(emb, cap, measured, labels, models, cfg)
    for i, seed in enumerate(report.seeds):
        assert seed.initial + seed.streamed + seed.held_out + seed.skipped == 400
        t = seed.streamed
        assert report.runs["static"][i].labels == 0
        assert report.runs["chosen"][i].labels == t
        assert report.runs["explore"][i].labels == t
        assert report.runs["top-k"][i].labels == 2 * t
        # full reveals every recorded cell of the streamed questions, nothing unrecorded
        assert 4 * t < report.runs["full"][i].labels <= 5 * t
    hits = report.hits("chosen")
    assert hits.shape == (2, report.streamed)


def test_feedback_teaches_the_bank_what_the_initial_bank_missed() -> None:
    """Models are experts on cluster groups; a 5 % initial bank misses clusters. Full labels
    beat the static bank on every seed; the chosen model's label alone helps less (eq. 4 only
    credits models already chosen), and the exploration bonus recovers part of the gap."""
    emb, cap, measured, labels, models = clustered(n=600)
    cfg = StreamSettings(
        modes=("static", "chosen", "full", "explore"),
        seeds=(0, 1, 2),
        n_sup_base=5,
        gamma=1.0,
        window=200,
        explore_c=0.2,
    )
    report = run_stream(emb, cap, measured, labels, models, cfg)
    static, chosen, full, explore = (report.summary(m) for m in cfg.modes)
    assert full["vs_static"]["wins"] == 3
    assert full["top1"]["mean"] > static["top1"]["mean"] + 0.2
    assert full["held_out"]["mean"] > static["held_out"]["mean"] + 0.2
    assert static["top1"]["mean"] < chosen["top1"]["mean"] < full["top1"]["mean"]
    assert explore["top1"]["mean"] > chosen["top1"]["mean"] + 0.05
    assert explore["held_out"]["mean"] > chosen["held_out"]["mean"] + 0.05
    # learning along the stream: the last window beats the first
    assert full["windows"][-1]["mean"] > full["windows"][0]["mean"]


def test_report_spread_is_the_sample_std_over_seeds_and_renders(tmp_path: Path) -> None:
    emb, cap, measured, labels, models = clustered()
    cfg = StreamSettings(
        modes=("static", "chosen", "explore"), seeds=(0, 1, 2), n_sup_base=5, window=100
    )
    report = run_stream(emb, cap, measured, labels, models, cfg)
    again = run_stream(emb, cap, measured, labels, models, cfg)
    np.testing.assert_array_equal(report.hits("chosen"), again.hits("chosen"))  # seeded
    per_seed = report.hits("chosen").mean(axis=1)
    summary = report.summary("chosen")
    assert summary["top1"]["std"] == pytest.approx(per_seed.std(ddof=1))
    vs = summary["vs_static"]
    assert vs["wins"] + vs["ties"] + vs["losses"] == 3
    assert all(s.explore_c in cfg.explore_grid for s in report.seeds)
    text = render_stream_text(report)
    assert "sample std over seeds (ddof=1)" in text and "chosen (chosen model's label)" in text
    assert f"q 1-{min(100, report.streamed)}" in text
    assert "| mode |" in render_stream_markdown(report, "smcs replay --stream")
    stream_plot(report, tmp_path / "out" / "stream.png")
    assert (tmp_path / "out" / "stream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""The replay on real MMLU-Pro recorded correctness (29 models) with the real MiniLM embedder.

Reads the shared benchmark files from $SMCS_BENCHMARKS_DIR (default <repo>/../shared/benchmarks)
and skips where they are absent. Embeddings are cached outside the repository
(~/.cache/smcs-graph/embeddings): the first run embeds 12,032 questions (minutes on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smcs_graph.embedder import default_embedder
from smcs_graph.offline.evaluation import (
    ReplayData,
    ReplaySettings,
    benchmarks_dir,
    cached_embeddings,
    load_replay_data,
    run_replay,
)

pytestmark = pytest.mark.integration

QUESTIONS = benchmarks_dir() / "mmlu_pro.jsonl"
MATRIX = benchmarks_dir() / "mmlu_pro_correctness_29_models.csv"
if not (QUESTIONS.is_file() and MATRIX.is_file()):
    pytest.skip(
        f"MMLU-Pro files not found in {benchmarks_dir()} (set SMCS_BENCHMARKS_DIR)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def mmlu_pro() -> tuple[ReplayData, np.ndarray]:
    data = load_replay_data(QUESTIONS, MATRIX)
    return data, cached_embeddings(default_embedder(), data.texts("question"))


def test_rps_beats_the_best_single_model_on_mmlu_pro(
    mmlu_pro: tuple[ReplayData, np.ndarray],
) -> None:
    data, embeddings = mmlu_pro
    assert len(data.models) == 29 and len(data.question_ids) == 12032
    assert not data.measured.all()  # some models have no record on some questions
    settings = ReplaySettings(
        rules=("paper", "shrunk"),
        seeds=(0, 1),
        sweep_n_sup_base=(),
        sweep_gamma=(),
        calibration_queries=1000,
    )
    report = run_replay(
        embeddings, data.capability, data.measured, data.categories, data.models, settings
    )
    for seed, info in enumerate(report.splits):
        assert info.test_questions == info.evaluated + info.skipped
        assert 1150 < info.evaluated <= 1210 and info.with_unmeasured > 0
        rps = report.results["rps"][seed]
        best = report.results["best-single"][seed]
        # the paper's claim for selection, with its defaults (N_sup_base=400, gamma=0.95)
        assert rps.top1 > best.top1
        assert rps.pairwise > best.pairwise
        assert report.results["random"][seed].top1 < best.top1 < rps.top1
        assert report.results["oracle"][seed].top1 > 0.9
        assert rps.coverage[5] > rps.top1 + 0.1  # the unused room the issue points at
        assert info.shrunk is not None and info.shrunk.loo_top1 > 0.6
    assert (
        report.summary("rps-shrunk")["pairwise"]["mean"] > report.summary("rps")["pairwise"]["mean"]
    )


def test_learned_rule_on_mmlu_pro_is_chosen_on_the_bank_and_calibrated(
    mmlu_pro: tuple[ReplayData, np.ndarray],
) -> None:
    """One split, a narrowed grid (the full one is the README's run): the learned rule ranks at
    least as well as the paper's RPS, and its P(correct) is calibrated on the test split."""
    data, embeddings = mmlu_pro
    settings = ReplaySettings(
        rules=("paper", "learned"),
        seeds=(0,),
        sweep_n_sup_base=(),
        sweep_gamma=(),
        calibration_queries=1000,
        learned_rank_grid=(8, 16, 32),
        learned_penalty_grid=(10.0, 100.0),
    )
    report = run_replay(
        embeddings, data.capability, data.measured, data.categories, data.models, settings
    )
    learned, rps = report.results["rps-learned"][0], report.results["rps"][0]
    assert learned.top1 > rps.top1 and learned.pairwise > rps.pairwise
    assert learned.top1 > report.results["best-single"][0].top1
    info = report.splits[0]
    assert info.learned is not None and info.learned.blend.knn_weight > 0.0
    assert report.ece["rps-learned"][0] < 0.03
    assert report.ece["per-category"][0] < 0.05 and report.ece["rps"][0] < 0.05


def test_cli_replay_writes_json_and_markdown(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "replay.json", tmp_path / "replay.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smcs_graph",
            "replay",
            "--questions",
            str(QUESTIONS),
            "--matrix",
            str(MATRIX),
            "--seeds",
            "1",
            "--rule",
            "paper",
            "--sweep-n-sup-base",
            "200,400",
            "--sweep-gamma",
            "0.95",
            "--exclude-model",
            "DeepSeek-Coder-V2",
            "--json",
            str(out_json),
            "--markdown",
            str(out_md),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "RPS (paper rule)" in result.stdout and "seed 0" in result.stderr
    payload = json.loads(out_json.read_text(encoding="utf-8"))
    assert len(payload["models"]) == 28 and "DeepSeek-Coder-V2" not in payload["models"]
    assert set(payload["methods"]) == {"rps", "best-single", "per-category", "random", "oracle"}
    rps = payload["methods"]["rps"]["summary"]["top1"]["mean"]
    assert rps > payload["methods"]["best-single"]["summary"]["top1"]["mean"]
    assert {(row["n_sup_base"], row["gamma"]) for row in payload["sweep"]} == {
        (200, 0.95),
        (400, 0.95),
    }
    markdown = out_md.read_text(encoding="utf-8")
    assert "| method |" in markdown and "smcs replay" in markdown


def test_cli_replay_names_a_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smcs_graph", "replay", "--matrix", str(tmp_path / "none.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "correctness matrix not found" in result.stderr


def test_cli_replay_on_a_bank_folder(tmp_path: Path) -> None:
    """`--bank`: the stored MiniLM embeddings, families and capability matrix of a Chroma bank."""
    from smcs_graph import BankQuestion, QuestionBank

    data = load_replay_data(QUESTIONS, MATRIX)
    picked = [
        i
        for category in ("law", "math")
        for i in [j for j, c in enumerate(data.categories) if c == category][:30]
    ]
    bank = QuestionBank.open(tmp_path / "bank", default_embedder())
    bank.add_questions(
        [
            BankQuestion(
                id=data.question_ids[i], question=data.questions[i], family=data.categories[i]
            )
            for i in picked
        ]
    )
    for row, model in enumerate(data.models[:4]):
        bank.record_results(
            model,
            {
                data.question_ids[i]: bool(data.capability[row, i])
                if data.measured[row, i]
                else None
                for i in picked
            },
        )
    bank.close()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smcs_graph",
            "replay",
            "--bank",
            str(tmp_path / "bank"),
            "--seeds",
            "2",
            "--n-sup-base",
            "10",
            "--sweep-n-sup-base",
            "10",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "60 questions, 2 categories, 4 models" in result.stdout

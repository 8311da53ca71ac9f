"""`smcs replay --stream` as a user runs it: the real CLI on the real MMLU-Pro files.

Reads the shared benchmark files from $SMCS_BENCHMARKS_DIR (default <repo>/../shared/benchmarks)
and skips where they are absent. The MiniLM embeddings come from the cache outside the
repository (the first run embeds 12,032 questions). A short stream keeps it under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from smcs_graph.offline.evaluation import benchmarks_dir

pytestmark = pytest.mark.integration

QUESTIONS = benchmarks_dir() / "mmlu_pro.jsonl"
MATRIX = benchmarks_dir() / "mmlu_pro_correctness_29_models.csv"
if not (QUESTIONS.is_file() and MATRIX.is_file()):
    pytest.skip(
        f"MMLU-Pro files not found in {benchmarks_dir()} (set SMCS_BENCHMARKS_DIR)",
        allow_module_level=True,
    )


def _smcs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smcs_graph", "replay", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_stream_replay_on_mmlu_pro_writes_table_json_and_plot(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "stream.json", tmp_path / "plots" / "stream.png"
    result = _smcs(
        "--questions", str(QUESTIONS), "--matrix", str(MATRIX),
        "--stream", "--seeds", "2", "--limit", "1500", "--window", "500",
        "--modes", "static,chosen,top-k,full,explore", "--explore-c", "0.05",
        "--json", str(out_json), "--plot", str(out_png),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "seed 1:" in result.stderr
    assert "sample std over seeds (ddof=1)" in result.stdout
    assert "q 1001-1500" in result.stdout and "held-out top-1" in result.stdout
    payload = json.loads(out_json.read_text(encoding="utf-8"))
    assert len(payload["models"]) == 29 and payload["questions"] == 12032
    for seed in payload["seeds"]:
        # 5 % of each category's non-held-out questions starts the bank; 10 % is held out
        assert 500 < seed["initial"] < 600 and seed["streamed"] == 1500
        assert 1150 < seed["held_out"] < 1250
    modes = payload["modes"]
    assert list(modes) == ["static", "chosen", "top-k", "full", "explore"]
    for mode, labels in (("static", 0), ("chosen", 1500), ("top-k", 7 * 1500)):
        assert [run["labels"] for run in modes[mode]["per_seed"]] == [labels, labels]
    # full reveals every recorded cell: some models lack records on some questions
    assert all(28 * 1500 < run["labels"] < 29 * 1500 for run in modes["full"]["per_seed"])
    for mode in modes:
        summary = modes[mode]["summary"]
        # RPS routing on MMLU-Pro: far above a random model (about 0.45), below the oracle
        assert 0.6 < summary["top1"]["mean"] < 0.8
        assert 0.6 < summary["held_out"]["mean"] < 0.8
        assert len(summary["windows"]) == 3
    # all labels never route worse than the static bank it started from, on held-out questions
    assert (
        modes["full"]["summary"]["held_out"]["mean"]
        >= modes["static"]["summary"]["held_out"]["mean"]
    )
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_stream_replay_names_an_unsupported_rule() -> None:
    result = _smcs("--stream", "--rule", "learned", "--limit", "10", "--seeds", "1", "--quiet")
    assert result.returncode == 2
    assert "learned rule refits per bank snapshot" in result.stderr

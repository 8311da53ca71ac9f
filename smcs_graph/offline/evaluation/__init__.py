"""Evaluation: `smcs eval` (generation) and `smcs replay` (prior selection, no LLM call).

- `generation` (`evaluate`): every method (SMCS, baselines, ablations; `methods`) answers the
  held-out questions through the cached pool (`calls`); results in `results`, tables in
  `generation_report`, plots in `plots`. Not imported here: it loads the graph and the graders.
- Replay: `run_replay` works on numpy arrays (embeddings, capability matrix and mask,
  categories); `load_replay_data` reads a questions JSONL and a correctness CSV,
  `replay_data_from_bank` reads a `QuestionBank`; `cached_embeddings` embeds once and caches
  outside the repository.
"""

from smcs_graph.offline.evaluation.calibration import ShrunkChoice
from smcs_graph.offline.evaluation.data import (
    ReplayData,
    benchmarks_dir,
    load_replay_data,
    query_text,
    replay_data_from_bank,
)
from smcs_graph.offline.evaluation.embeddings import cached_embeddings, default_cache_dir
from smcs_graph.offline.evaluation.metrics import Metrics
from smcs_graph.offline.evaluation.replay import METHODS, ReplayReport, ReplaySettings, run_replay
from smcs_graph.offline.evaluation.report import render_json, render_markdown, render_text

__all__ = [
    "METHODS",
    "Metrics",
    "ReplayData",
    "ReplayReport",
    "ReplaySettings",
    "ShrunkChoice",
    "benchmarks_dir",
    "cached_embeddings",
    "default_cache_dir",
    "load_replay_data",
    "query_text",
    "render_json",
    "render_markdown",
    "render_text",
    "replay_data_from_bank",
    "run_replay",
]

"""Evaluation without LLM calls: replay of prior selection on recorded correctness.

`run_replay` works on numpy arrays (embeddings, capability matrix and mask, categories);
`load_replay_data` reads a questions JSONL and a correctness CSV, `replay_data_from_bank` reads a
`QuestionBank`; `cached_embeddings` embeds once and caches outside the repository.
"""

from smcs_graph.evaluation.data import (
    ReplayData,
    benchmarks_dir,
    load_replay_data,
    query_text,
    replay_data_from_bank,
)
from smcs_graph.evaluation.embeddings import cached_embeddings, default_cache_dir
from smcs_graph.evaluation.replay import (
    METHODS,
    Metrics,
    ReplayReport,
    ReplaySettings,
    ShrunkChoice,
    run_replay,
)
from smcs_graph.evaluation.report import render_json, render_markdown, render_text

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

"""The main job on the embedded default: several local LLMs collaborate on one question.

    make demo                                   # sets everything up, then runs this
    .venv/bin/python examples/local_demo.py "Your question here"

Starts the local models (xllamacpp on 127.0.0.1), profiles them once on the starter bank, then
runs the SMCS graph, printing each stage as it happens and a summary of the run.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from _starter import local_pool, starter_bank

from smcs_graph import build_graph
from smcs_graph.cli._render import render_progress, render_trace

DEFAULT_QUESTION = "What is 17 times 3? Reply with the number only."


def main(question: str) -> None:
    started = time.perf_counter()
    pool, config = local_pool()
    bank = starter_bank(pool)
    graph = build_graph(pool, bank, bank.embedder, config).compile()
    print(f"\nQuestion: {question}\n")
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(
        {"question": question}, {"max_concurrency": 16}, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            print(render_progress(chunk), flush=True)
        else:
            final = chunk
    print()
    print(render_trace(final["trace"], final["answer"]))
    print(f"total with setup {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or DEFAULT_QUESTION)

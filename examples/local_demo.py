"""The main job on the embedded default, from Python: several local LLMs answer one question.

    .venv/bin/python examples/local_demo.py "Your question here"

`make demo` runs the same through the command line (`smcs ask`). `default_graph()` starts the
local models (xllamacpp on 127.0.0.1), opens the default bank (built in the cache on first use
from the local pool's committed results) and compiles the SMCS graph with the local settings;
this script streams each stage as it happens and prints a summary of the run.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from smcs_graph.cli._render import render_progress, render_trace
from smcs_graph.embedded.default import default_graph, local_config

DEFAULT_QUESTION = "What is 17 times 3? Reply with the number only."


def main(question: str) -> None:
    started = time.perf_counter()
    # The full method on every question, to show each stage (the embedded default's own
    # settings are adaptive: `make demo` shows the gates deciding).
    graph = default_graph(local_config(collaboration="always"), progress=True)
    print(f"\nQuestion: {question}\n")
    final: dict[str, Any] = {}
    for mode, chunk in graph.stream(
        {"question": question},
        {"max_concurrency": local_config().max_concurrency},
        stream_mode=["custom", "values"],
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

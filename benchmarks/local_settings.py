"""The embedded default on this machine: batched slots, time to first answer, wall time per
question, and memory peak, on the real local models and the default bank.

1. Batching: N_PARALLEL requests to one local model at once, on a server with 1 slot (they
   queue) and on one with N_PARALLEL slots (llama.cpp decodes them in one batch); prints both
   wall times and their ratio. With one thread per server batching gained nothing reliable
   here (0.9x-1.1x of the queued time), so the local pool file keeps one slot per model.
2. SMCS with the local settings (data/local_pool.yaml): time to the first answer in a fresh
   process (servers started, bank opened, one question answered), then the wall time of each of
   `--questions` questions from the default bank's held-out test split (median and range), and
   the process's peak resident memory (the llama.cpp servers run inside it).

    .venv/bin/python benchmarks/local_settings.py [--questions 5] [--model qwen2.5-coder-0.5b]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "Explain in three sentences why the sky is blue."
N_PARALLEL = 3
BATCH_TOKENS = 96


def _batching(model: str) -> None:
    from smcs_graph.local_models import LocalServerManager, local_chat_model

    walls = {}
    for slots in (1, N_PARALLEL):
        manager = LocalServerManager()
        try:
            chat = local_chat_model(
                model,
                manager=manager,
                parallel=slots,
                temperature=0,
                max_tokens=BATCH_TOKENS,
                extra_body={"ignore_eos": True},
            )
            chat.invoke("Hi")  # warm
            started = time.perf_counter()
            with ThreadPoolExecutor(N_PARALLEL) as pool:
                prompts = [f"{PROMPT} ({i})" for i in range(N_PARALLEL)]
                outs = list(pool.map(chat.invoke, prompts))
            walls[slots] = time.perf_counter() - started
            tokens = sum(o.usage_metadata["output_tokens"] for o in outs if o.usage_metadata)
            print(
                f"{model}: {N_PARALLEL} requests x {BATCH_TOKENS} tokens on {slots} slot(s): "
                f"{walls[slots]:.2f} s ({tokens / walls[slots]:.1f} tokens/s)"
            )
        finally:
            manager.shutdown()
    print(f"batched/queued wall time: {walls[N_PARALLEL] / walls[1]:.2f}")


def _smcs(questions: int) -> None:
    from smcs_graph.embedded import default_bank_path, default_graph, local_config
    from smcs_graph.questions import load_records

    started = time.perf_counter()
    graph = default_graph()
    ready = time.perf_counter() - started
    folder = default_bank_path()
    test = load_records(folder.with_name(f"{folder.name}.test.jsonl"))
    # A handful spread over the families (the test split is grouped by family).
    step = max(1, len(test) // max(1, questions))
    chosen = test[::step][:questions]
    run = {"max_concurrency": local_config().max_concurrency}
    walls = []
    for i, record in enumerate(chosen):
        t0 = time.perf_counter()
        out = graph.invoke({"question": record.question}, run)
        walls.append(time.perf_counter() - t0)
        trace = out["trace"]
        if i == 0:
            print(
                f"time to first answer in a fresh process: {time.perf_counter() - started:.1f} s "
                f"(servers + bank {ready:.1f} s, question {walls[0]:.1f} s)"
            )
        print(
            f"  {record.id} [{record.family}]: {walls[-1]:.1f} s, "
            f"{trace['usage']['output_tokens']} output tokens, "
            f"{len(trace['references'])} references, {len(trace['candidates'])} candidates"
        )
    print(
        f"wall time per question: median {statistics.median(walls):.1f} s "
        f"(min {min(walls):.1f}, max {max(walls):.1f}, n={len(walls)})"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory (process incl. the in-process model servers): {peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="model for the batching run")
    parser.add_argument("--skip-batching", action="store_true")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, cwd: {Path.cwd()}")
    if not args.skip_batching:
        _batching(args.model)
    _smcs(args.questions)


if __name__ == "__main__":
    main()

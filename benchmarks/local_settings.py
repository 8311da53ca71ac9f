"""The embedded default on this machine: concurrent calls, time to first answer, wall time per
question, and memory peak, on the real local models and the default bank.

1. Concurrency: `--requests` calls to one local model at once (the aggregation map), three
   ways side by side: queued on one server with one slot, batched on one server with that many
   slots (llama.cpp decodes them in one batch), and on that many one-thread replicas (the
   client sends each call to the least busy). Prints each wall time and its ratio to the queued
   one. With one thread per server batching gained nothing reliable here (0.9x-1.1x of the
   queued time) and two replicas took 0.58-0.72x, so the local pool file gives the aggregator
   replicas, not slots.
2. SMCS with the local settings (data/local_pool.yaml): time to the first answer in a fresh
   process (servers started, bank opened, one question answered), then the wall time of each of
   `--questions` questions from the default bank's held-out test split (median and range), and
   the process's peak resident memory (the llama.cpp servers run inside it).

    .venv/bin/python benchmarks/local_settings.py [--questions 5] [--model qwen2.5-coder-1.5b]
        [--set n_aggregations=3 ...] [--skip-concurrency]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "Explain in three sentences why the sky is blue."
BATCH_TOKENS = 96


def _concurrency(model: str, requests: int) -> None:
    """`requests` concurrent calls (the aggregation map) three ways, side by side."""
    from smcs_graph.models.local import LocalServerManager, local_chat_model

    setups = {
        "queued on 1 server, 1 slot": {"parallel": 1, "replicas": 1},
        f"batched on 1 server, {requests} slots": {"parallel": requests, "replicas": 1},
        f"{requests} replicas, 1 thread each": {"parallel": 1, "replicas": requests},
    }
    walls = {}
    for label, server in setups.items():
        manager = LocalServerManager()
        try:
            chat = local_chat_model(
                model,
                manager=manager,
                temperature=0,
                max_tokens=BATCH_TOKENS,
                extra_body={"ignore_eos": True},
                **server,
            )
            with ThreadPoolExecutor(requests) as pool:
                list(pool.map(chat.invoke, ["Hi"] * requests))  # warm every replica
            started = time.perf_counter()
            with ThreadPoolExecutor(requests) as pool:
                prompts = [f"{PROMPT} ({i})" for i in range(requests)]
                outs = list(pool.map(chat.invoke, prompts))
            walls[label] = time.perf_counter() - started
            tokens = sum(o.usage_metadata["output_tokens"] for o in outs if o.usage_metadata)
            print(
                f"{model}: {requests} requests x {BATCH_TOKENS} tokens, {label}: "
                f"{walls[label]:.2f} s ({tokens / walls[label]:.1f} tokens/s)"
            )
        finally:
            manager.shutdown()
    queued = walls["queued on 1 server, 1 slot"]
    for label, wall in walls.items():
        print(f"  wall time / queued: {wall / queued:.2f}  ({label})")


def _smcs(questions: int, overrides: dict[str, Any]) -> None:
    from smcs_graph.embedded.default import default_bank_path, default_graph, local_config
    from smcs_graph.questions import load_records

    config = local_config(**overrides)
    started = time.perf_counter()
    graph = default_graph(config)
    ready = time.perf_counter() - started
    folder = default_bank_path()
    test = load_records(folder.with_name(f"{folder.name}.test.jsonl"))
    # A handful spread over the families (the test split is grouped by family).
    step = max(1, len(test) // max(1, questions))
    chosen = test[::step][:questions]
    run = {"max_concurrency": config.max_concurrency}
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
        calls = trace["calls"]
        refs = max((c["seconds"] for c in calls if c["stage"] == "referencer"), default=0.0)
        fusions = [c["seconds"] for c in calls if c["stage"] == "aggregate"] or [0.0]
        print(
            f"  {record.id} [{record.family}]: {walls[-1]:.1f} s, "
            f"{trace['usage']['output_tokens']} output tokens, "
            f"{len(trace['references'])} references (slowest {refs:.1f} s), "
            f"{len(trace['candidates'])} candidates (fusions {min(fusions):.1f}-"
            f"{max(fusions):.1f} s)"
        )
    print(
        f"wall time per question: median {statistics.median(walls):.1f} s "
        f"(min {min(walls):.1f}, max {max(walls):.1f}, n={len(walls)})"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory (process incl. the in-process model servers): {peak:.0f} MiB")
    pss = _proportional_set_size()
    if pss is not None:
        # RSS counts a page once per mapping: the replicas map the same GGUF, so the weights
        # they share count twice there and once in PSS (what the machine really holds).
        print(f"proportional set size now, servers still up: {pss:.0f} MiB")


def _proportional_set_size() -> float | None:
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument(
        "--model", default="qwen2.5-coder-1.5b", help="model for the concurrency run"
    )
    parser.add_argument("--requests", type=int, default=2, help="concurrent requests (the local n)")
    parser.add_argument("--skip-concurrency", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a local setting, e.g. --set n_aggregations=3 (repeatable)",
    )
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        field, _, value = item.partition("=")
        overrides[field] = yaml.safe_load(value)
    print(f"cpus: {os.cpu_count()}, cwd: {Path.cwd()}")
    if not args.skip_concurrency:
        _concurrency(args.model, args.requests)
    _smcs(args.questions, overrides)


if __name__ == "__main__":
    main()

"""Load test of `smcs serve` on fast fake models, over loopback only; stops by itself.

    .venv/bin/python benchmarks/server_load.py [--requests 200] [--rounds 3]

Starts `smcs serve` as a subprocess (a pool file of FakeChatModels, a Chroma bank on disk built
with the real MiniLM embedder, so every request embeds its question and candidates for real),
then sends rounds of `--requests` concurrent requests (one in four streamed, with usage) and
validates every response. Reports requests/second, p50/p99 latency, counts by status, the 5xx
count (must be 0) and the server's resident memory (VmRSS from /proc) before and after each
round. A second phase starts a deliberately small server (few slots, short queue) and sends the
same burst: the excess must get 429s with OpenAI error bodies, never a 5xx.
Exit status 1 if any response was a 5xx or invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
ANSWERS = {"The answer is 4.", "It is 4, I think."}
POOL = """
models:
  - name: alpha
    class: smcs_graph.testing:FakeChatModel
    kwargs: {{model_name: alpha, responses: ["The answer is 4."], latency_s: {latency}}}
  - name: beta
    class: smcs_graph.testing:FakeChatModel
    kwargs: {{model_name: beta, responses: ["It is 4, I think."], latency_s: {latency}}}
  - name: gamma
    class: smcs_graph.testing:FakeChatModel
    kwargs: {{model_name: gamma, responses: ["The answer is 4."], latency_s: {latency}}}
smcs: {{k: 3, n_aggregations: 3, n_sup_base: 4, seed: 0}}
"""
QUESTIONS = [
    "What is 2 plus 2?",
    "What is 9 times 7?",
    "Name the capital of Peru.",
    "Which river flows through Cairo?",
    "Who wrote Hamlet?",
    "Compute 144 divided by 12.",
]


def build_bank(path: Path) -> None:
    from smcs_graph import BankQuestion, QuestionBank
    from smcs_graph.embedder import default_embedder

    bank = QuestionBank.open(path, default_embedder())
    questions = [BankQuestion(id=f"q{i}", question=q) for i, q in enumerate(QUESTIONS)]
    bank.add_questions(questions)
    for j, model in enumerate(("alpha", "beta", "gamma")):
        bank.record_results(model, {q.id: (i + j) % 2 == 0 for i, q in enumerate(questions)})
    bank.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Outcome:
    status: int
    seconds: float
    valid: bool
    problem: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcomes: list[Outcome]) -> None:
        self.outcomes.extend(outcomes)


def check_completion(body: dict[str, Any]) -> str:
    """'' if `body` is a valid chat completion of one of the scripted answers."""
    choice = body["choices"][0]
    usage = body["usage"]
    if body["object"] != "chat.completion" or choice["message"]["content"] not in ANSWERS:
        return f"unexpected completion {body!r:.200}"
    if choice["finish_reason"] != "stop" or not body["id"].startswith("chatcmpl-"):
        return "bad finish_reason or id"
    if usage["total_tokens"] != usage["prompt_tokens"] + usage["completion_tokens"]:
        return f"inconsistent usage {usage}"
    if usage["completion_tokens"] <= 0:
        return "no completion tokens counted"
    return ""


def check_stream(text: str) -> str:
    """'' if `text` is a valid SSE stream: role chunk, the answer, finish, usage, [DONE]."""
    events = [b[6:] for b in text.split("\n\n") if b.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return "stream does not end with [DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    if content not in ANSWERS:
        return f"streamed content {content!r}"
    if chunks[-2]["choices"][0]["finish_reason"] != "stop":
        return "no finish chunk"
    if chunks[-1]["choices"] or not chunks[-1]["usage"]["total_tokens"]:
        return "no usage chunk"
    return ""


def check_error(body: dict[str, Any], status: int) -> str:
    error = body.get("error") or {}
    if set(error) != {"message", "type", "param", "code"} or not error["message"]:
        return f"{status} without an OpenAI error body: {body!r:.200}"
    if status == 429 and error["code"] != "server_busy":
        return f"429 with code {error['code']!r}"
    return ""


async def one_request(http: httpx.AsyncClient, index: int) -> Outcome:
    stream = index % 4 == 0
    body: dict[str, Any] = {
        "model": "smcs",
        "messages": [{"role": "user", "content": f"{QUESTIONS[index % len(QUESTIONS)]} #{index}"}],
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    try:
        response = await http.post("/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return Outcome(0, time.perf_counter() - started, False, f"transport: {exc!r}")
    seconds = time.perf_counter() - started
    try:
        if response.status_code == 200:
            problem = check_stream(response.text) if stream else check_completion(response.json())
        else:
            problem = check_error(response.json(), response.status_code)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        problem = f"unparseable response: {exc!r}"
    return Outcome(response.status_code, seconds, not problem, problem)


async def burst(base_url: str, count: int) -> tuple[list[Outcome], float]:
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as http:
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one_request(http, i) for i in range(count)))
        return list(outcomes), time.perf_counter() - started


def start_server(
    pool: Path, bank: Path, log: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "smcs_graph", "serve", "--pool", str(pool), "--bank"]
    command += [str(bank), "--port", str(port), "--no-access-log", "--log-level", "warning"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, *extra],
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            stdout=sink,
            stderr=sink,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            raise SystemExit(f"smcs serve exited early:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("smcs serve did not come up within 180 s")
        time.sleep(0.25)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def in_process_rate(pool_file: Path, bank_path: Path, count: int, slots: int) -> float:
    """Runs per second of the same SMCS model called directly (no HTTP), same slot count."""
    from smcs_graph import QuestionBank, SMCSChatModel
    from smcs_graph.embedder import default_embedder
    from smcs_graph.models.pool import load_pool_file

    pool, settings = load_pool_file(pool_file)
    bank = QuestionBank.open(bank_path, default_embedder(), create=False)
    model = SMCSChatModel(
        pool=pool,
        bank=bank,
        embedder=bank.embedder,
        config=settings,
    )
    gate = asyncio.Semaphore(slots)

    async def run(index: int) -> None:
        async with gate:
            await model.ainvoke(f"{QUESTIONS[index % len(QUESTIONS)]} #{index}")

    await asyncio.gather(*(run(i) for i in range(8)))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(count)))
    seconds = time.perf_counter() - started
    bank.close()
    return count / seconds


def summarize(label: str, outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    latencies = sorted(o.seconds for o in outcomes if o.status == 200)
    statuses = Counter(o.status for o in outcomes)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0.0
    row = {
        "phase": label,
        "requests": len(outcomes),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(outcomes) / seconds, 1),
        "ok_per_s": round(statuses[200] / seconds, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(1000 * p99, 1),
        "status_counts": dict(sorted(statuses.items())),
        "errors_5xx": sum(n for s, n in statuses.items() if s >= 500 or s == 0),
        "invalid": sum(not o.valid for o in outcomes),
    }
    print(json.dumps(row))
    for problem in sorted({o.problem for o in outcomes if o.problem})[:5]:
        print(f"  problem: {problem}")
    return row


async def main_async(args: argparse.Namespace, folder: Path) -> int:
    bank = folder / "bank"
    build_bank(bank)
    pool = folder / "pool.yaml"
    pool.write_text(POOL.format(latency=args.latency))
    rows: list[dict[str, Any]] = []

    process, base_url = start_server(
        pool,
        bank,
        folder / "main.log",
        "--max-concurrency",
        str(args.max_concurrency),
        "--max-queue",
        str(args.requests * 2),
    )
    try:
        await burst(base_url, 8)  # warm-up: first-call costs out of the figures
        rss_start = rss_kib(process.pid)
        print(f"server pid {process.pid}; RSS after warm-up {rss_start / 1024:.1f} MiB")
        for round_no in range(1, args.rounds + 1):
            outcomes, seconds = await burst(base_url, args.requests)
            rows.append(summarize(f"round {round_no}", outcomes, seconds))
            rss = rss_kib(process.pid)
            print(f"  RSS {rss / 1024:.1f} MiB ({(rss - rss_start) / 1024:+.1f} MiB since warm-up)")
        rss_end = rss_kib(process.pid)
        alive = process.poll() is None
    finally:
        stop_server(process)

    baseline = await in_process_rate(pool, bank, args.requests, args.max_concurrency)
    print(
        f"in-process baseline (same pool, bank and slots, no HTTP): {baseline:.1f} runs/s",
        flush=True,
    )

    if args.overload:
        small, small_url = start_server(
            pool, bank, folder / "small.log", "--max-concurrency", "4", "--max-queue", "16"
        )
        try:
            await burst(small_url, 4)
            outcomes, seconds = await burst(small_url, args.requests)
            rows.append(summarize("overload (4 slots, queue 16)", outcomes, seconds))
            health = httpx.get(f"{small_url}/health").json()
            print(f"  after the burst: running {health['running']}, queued {health['queued']}")
        finally:
            stop_server(small)

    total = [r for r in rows if r["phase"].startswith("round")]
    all_ok = sum(r["status_counts"].get(200, 0) for r in total)
    print(
        f"\nsummary: {sum(r['requests'] for r in total)} requests in {len(total)} rounds of "
        f"{args.requests} concurrent, {all_ok} ok; "
        f"{min(r['requests_per_s'] for r in total)}-{max(r['requests_per_s'] for r in total)} "
        f"req/s; p50 {statistics.median(r['p50_ms'] for r in total)} ms; "
        f"worst p99 {max(r['p99_ms'] for r in total)} ms; RSS {rss_start / 1024:.1f} -> "
        f"{rss_end / 1024:.1f} MiB; server alive after the load: {alive}"
    )
    server_rate = statistics.median(r["requests_per_s"] for r in total)
    print(f"server / in-process throughput: {server_rate / baseline:.2f}")
    failures = sum(r["errors_5xx"] + r["invalid"] for r in rows)
    print(f"5xx + invalid responses over every phase: {failures}")
    return 1 if failures or not alive else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-concurrency", type=int, default=32, help="server run slots")
    parser.add_argument("--latency", type=float, default=0.005, help="fake model latency (s)")
    parser.add_argument("--time-limit", type=float, default=600, help="give up after (s)")
    parser.add_argument(
        "--no-overload", dest="overload", action="store_false", help="skip the 429 phase"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smcs-load-") as tmp:
        try:
            return asyncio.run(asyncio.wait_for(main_async(args, Path(tmp)), args.time_limit))
        except TimeoutError:
            print(f"load test stopped at its {args.time_limit} s limit", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())

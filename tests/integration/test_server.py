"""`smcs serve` as a real process on 127.0.0.1, called with the official `openai` client and
with `ChatOpenAI`: a Chroma bank on disk built with the real MiniLM embedder, a pool file of
fake models (`class:` entries), and one run over the real local models."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from smcs_graph import BankQuestion, QuestionBank
from smcs_graph.embedder import default_embedder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY = "integration-secret"
KEY_ENV = "SMCS_TEST_SERVER_KEY"
WEATHER = "What is the weather like in Paris today?"
ASK_BODY = {"model": "smcs", "messages": [{"role": "user", "content": "What is 2 plus 2?"}]}

# alpha knows math, beta geography, toolsmith always calls the weather tool (weather questions).
FAKE_POOL = """
models:
  - name: alpha
    class: smcs_graph.testing:FakeChatModel
    kwargs: {{model_name: alpha, responses: ["The answer is 4."], latency_s: {latency}}}
  - name: beta
    class: smcs_graph.testing:FakeChatModel
    kwargs: {{model_name: beta, responses: ["I believe it is 4."], latency_s: {latency}}}
  - name: toolsmith
    class: smcs_graph.testing:FakeChatModel
    kwargs:
      model_name: toolsmith
      latency_s: {latency}
      responses:
        - content: ""
          tool_calls: [{{name: weather, args: {{city: Paris}}, id: call_w1}}]
smcs: {{k: 2, n_aggregations: 2, n_sup_base: 3, seed: 0}}
"""
BANK = {
    "math": ["What is 2 plus 2?", "What is 7 times 8?", "Compute 15 minus 6."],
    "geography": ["What is the capital of Peru?", "Which river flows through Cairo?"],
    "weather": [
        "What is the weather in London right now?",
        "Will it rain in Tokyo tomorrow?",
        "How warm is it in Madrid today?",
    ],
}
BEST = {"math": "alpha", "geography": "beta", "weather": "toolsmith"}


def build_bank(path: Path, models: Sequence[str]) -> Path:
    """A bank on disk (real MiniLM): each family's specialist right, the others wrong."""
    bank = QuestionBank.open(path, default_embedder())
    questions = [
        BankQuestion(id=f"{family}-{i}", question=q, family=family)
        for family, texts in BANK.items()
        for i, q in enumerate(texts)
    ]
    bank.add_questions(questions)
    for model in models:
        bank.record_results(model, {q.id: BEST[q.family] == model for q in questions})
    bank.close()
    return path


def write_fake_pool(path: Path, latency_s: float = 0.0) -> Path:
    path.write_text(FAKE_POOL.format(latency=latency_s))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str  # ends in /v1
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_server(
    pool: Path, bank: Path, log: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`smcs serve` on a free loopback port; waits for /health; always terminated."""
    port = free_port()
    command = [sys.executable, "-m", "smcs_graph", "serve", "--pool", str(pool)]
    command += ["--bank", str(bank), "--port", str(port), "--no-access-log", *extra]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=sink, stderr=sink)
    server = Server(process, f"http://127.0.0.1:{port}/v1", log)
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise AssertionError(f"smcs serve exited early:\n{server.output()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"smcs serve did not come up:\n{server.output()[-3000:]}")
            time.sleep(0.25)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def question(text: str = "What is 2 plus 2?") -> list[Any]:
    return [{"role": "user", "content": text}]


def test_openai_client_completion_with_trace_and_real_usage(keyed: Server) -> None:
    client = openai.OpenAI(base_url=keyed.base_url, api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list().data] == ["smcs"]
    completion = client.chat.completions.create(
        model="smcs", messages=question(), extra_body={"smcs": {"trace": True}}
    )
    choice = completion.choices[0]
    assert choice.message.content in {"The answer is 4.", "I believe it is 4."}
    assert choice.finish_reason == "stop"
    trace = (completion.model_extra or {})["smcs_trace"]
    assert trace["referencers"] == ["alpha", "beta"] and trace["aggregator"] == "alpha"
    assert completion.usage is not None
    assert completion.usage.total_tokens == sum(c["total_tokens"] for c in trace["calls"]) > 0
    assert completion.usage.prompt_tokens == sum(c["input_tokens"] for c in trace["calls"])
    plain = client.chat.completions.create(model="smcs", messages=question())
    assert "smcs_trace" not in (plain.model_extra or {})


def test_openai_client_streaming_with_usage(keyed: Server) -> None:
    client = openai.OpenAI(base_url=keyed.base_url, api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="smcs", messages=question(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in {"The answer is 4.", "I believe it is 4."}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.total_tokens > 0


def test_wrong_or_missing_key_is_401(keyed: Server) -> None:
    for key in ("wrong", ""):
        client = openai.OpenAI(base_url=keyed.base_url, api_key=key or "-", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="smcs", messages=question())
        assert caught.value.code == "invalid_api_key"
    bare = httpx.post(f"{keyed.base_url}/chat/completions", json={"model": "smcs"})
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"


def test_bad_requests_get_openai_errors_and_the_server_stays_up(keyed: Server) -> None:
    client = openai.OpenAI(base_url=keyed.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=question())
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(model="smcs", messages=question(), temperature=-3)
    assert invalid.value.param == "temperature"

    url = f"{keyed.base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    malformed = httpx.post(url, content=b'{"model": "smcs", "messages": [', headers=headers)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    oversize = {"model": "smcs", "messages": question("x" * 50_000)}
    too_big = httpx.post(url, json=oversize, headers=headers)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"

    assert keyed.process.poll() is None
    after = client.chat.completions.create(model="smcs", messages=question())
    assert after.choices[0].message.content


@tool
def weather(city: str) -> str:
    """The current weather of a city."""
    return f"Sunny in {city}"


def test_chat_openai_invoke_stream_and_tools(keyed: Server) -> None:
    llm = ChatOpenAI(
        model="smcs",
        base_url=keyed.base_url,
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
        use_responses_api=False,
        stream_usage=True,
    )
    message = llm.invoke("What is 2 plus 2?")
    assert message.content in {"The answer is 4.", "I believe it is 4."}
    assert message.usage_metadata and message.usage_metadata["total_tokens"] > 0
    chunks = list(llm.stream("What is 7 times 8?"))
    assert "".join(str(c.content) for c in chunks) in {"The answer is 4.", "I believe it is 4."}
    assert sum((c.usage_metadata or {}).get("total_tokens", 0) for c in chunks) > 0

    called = llm.bind_tools([weather]).invoke(WEATHER)
    assert called.tool_calls == [
        {"name": "weather", "args": {"city": "Paris"}, "id": "call_w1", "type": "tool_call"}
    ]
    assert called.response_metadata["finish_reason"] == "tool_calls"


def test_chat_openai_reads_the_trace_summary_header(keyed: Server) -> None:
    llm = ChatOpenAI(
        model="smcs",
        base_url=keyed.base_url,
        api_key=KEY,  # type: ignore[arg-type]
        max_retries=0,
        use_responses_api=False,
        include_response_headers=True,
        default_headers={"X-SMCS-Trace": "1"},
    )
    headers = llm.invoke("What is the capital of Peru?").response_metadata["headers"]
    assert '"aggregator":"beta"' in headers["x-smcs-summary"]


def wait_until_running(server: Server) -> None:
    health = server.base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + 30
    while httpx.get(health).json()["running"] < 1:
        assert time.monotonic() < deadline, "the request never started running"
        time.sleep(0.02)


def ask_in_background(client: openai.OpenAI, results: list[Any]) -> threading.Thread:
    worker = threading.Thread(
        target=lambda: results.append(
            client.chat.completions.create(model="smcs", messages=question())
        )
    )
    worker.start()
    return worker


def test_without_a_key_saturation_429_and_graceful_sigterm(tmp_path: Path, fake_bank: Path) -> None:
    """No key, slow fakes, one run at a time and no queue: saturates on purpose; then SIGTERM
    while a request is in flight lets it finish."""
    pool = write_fake_pool(tmp_path / "pool.yaml", latency_s=1.0)
    args = ("--max-concurrency", "1", "--max-queue", "0")
    with running_server(pool, fake_bank, tmp_path / "server.log", *args) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        llm = ChatOpenAI(
            model="smcs",
            base_url=server.base_url,
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            use_responses_api=False,
        )
        assert "".join(str(c.content) for c in llm.stream("What is 2 plus 2?"))

        results: list[Any] = []
        worker = ask_in_background(client, results)
        try:
            wait_until_running(server)
            with pytest.raises(openai.RateLimitError) as busy:
                client.chat.completions.create(model="smcs", messages=question())
            assert busy.value.code == "server_busy"
            assert busy.value.response.headers["retry-after"] == "1"
        finally:
            worker.join(timeout=60)
        assert len(results) == 1

        worker = ask_in_background(client, results)
        wait_until_running(server)
        server.process.send_signal(signal.SIGTERM)
        worker.join(timeout=60)
        # uvicorn drains, then re-raises the captured signal: exit by SIGTERM, as is usual.
        assert server.process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert len(results) == 2
    assert all(r.choices[0].message.content for r in results)
    log = server.output()
    assert "Waiting for" in log or "Shutting down" in log
    assert "Finished server process" in log


def test_serve_over_the_real_local_models(local_servers: dict[str, str], tmp_path: Path) -> None:
    """One run of the server over the embedded local pool (real GGUF models over HTTP)."""
    bank = QuestionBank.open(tmp_path / "bank", default_embedder())
    bank.add_questions(
        [
            BankQuestion(id="a", question="What is 2 plus 2?", family="math"),
            BankQuestion(id="b", question="Name the capital of Peru.", family="geography"),
        ]
    )
    bank.record_results("qwen2.5-coder-0.5b", {"a": True, "b": False})
    bank.record_results("smollm2-135m", {"a": False, "b": True})
    bank.close()
    with running_server(
        ROOT / "examples" / "local_pool.yaml",
        tmp_path / "bank",
        tmp_path / "server.log",
        "--set",
        "max_tokens=24",
        "--set",
        "n_aggregations=2",
    ) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        completion = client.chat.completions.create(
            model="smcs",
            messages=question("What is 3 plus 4? Reply with the number only."),
            extra_body={"smcs": {"trace": True}},
        )
    trace = (completion.model_extra or {})["smcs_trace"]
    assert sorted(trace["referencers"]) == ["qwen2.5-coder-0.5b", "smollm2-135m"]
    assert len(trace["candidates"]) == 2 and trace["perplexity_available"] is True
    assert completion.choices[0].message.content
    assert completion.usage and completion.usage.total_tokens == sum(
        c["total_tokens"] for c in trace["calls"]
    )


HUNG_POOL = """
models:
  - {{name: alpha, base_url: "http://127.0.0.1:{port}/v1", timeout_s: 600}}
  - {{name: beta, base_url: "http://127.0.0.1:{port}/v1", timeout_s: 600}}
smcs: {{k: 2, n_aggregations: 2, n_sup_base: 3, seed: 0}}
"""


class _Hang(socketserver.BaseRequestHandler):
    """Reads the request, then never answers (until the test ends)."""

    def handle(self) -> None:
        self.request.recv(65536)
        self.server.release.wait()  # type: ignore[attr-defined]


@contextmanager
def hung_endpoint() -> Iterator[int]:
    """A threaded HTTP endpoint on 127.0.0.1 that accepts every call and never answers."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Hang)
    server.daemon_threads = True
    server.release = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.release.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def open_and_abandon(base_url: str) -> socket.socket:
    """A completion request on a raw connection, left open; close it to leave."""
    host, port = base_url.removeprefix("http://").split("/")[0].split(":")
    body = httpx.Request("POST", "http://x", json={"model": "smcs", "messages": question()})
    payload = body.read()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def wait_for_health(server: Server, running: int, queued: int, within_s: float) -> dict[str, Any]:
    url = server.base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + within_s
    while True:
        health = httpx.get(url).json()
        if (health["running"], health["queued"]) == (running, queued):
            return health
        assert time.monotonic() < deadline, f"stuck at {health}"
        time.sleep(0.05)


def test_clients_that_disconnect_free_their_slots(tmp_path: Path, fake_bank: Path) -> None:
    """Every model hangs (a loopback endpoint that never answers, 600 s timeouts, 600 s run
    deadline): four clients take every place and hang up; their runs are cancelled within
    seconds, /health says so, and a fifth request is admitted, not refused."""
    with hung_endpoint() as port:
        pool = tmp_path / "pool.yaml"
        pool.write_text(HUNG_POOL.format(port=port))
        args = ("--max-concurrency", "2", "--max-queue", "2", "--run-timeout", "600")
        with running_server(pool, fake_bank, tmp_path / "server.log", *args) as server:
            clients = [open_and_abandon(server.base_url) for _ in range(4)]
            full = wait_for_health(server, running=2, queued=2, within_s=30)
            assert full["status"] == "full"
            refused = httpx.post(f"{server.base_url}/chat/completions", json=ASK_BODY)
            assert refused.status_code == 429
            for sock in clients:
                sock.close()
            assert wait_for_health(server, 0, 0, within_s=10)["status"] == "ok"

            fifth = open_and_abandon(server.base_url)
            busy = wait_for_health(server, running=1, queued=0, within_s=10)
            assert busy["status"] == "ok"  # one of two slots taken
            fifth.close()
            wait_for_health(server, 0, 0, within_s=10)
            assert server.process.poll() is None

"""The OpenAI-compatible server app in process (fake models): shapes, auth, limits, errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from pydantic import PrivateAttr
from starlette.testclient import TestClient

from smcs_graph import (
    ConfigError,
    InvalidQuestionError,
    PerplexityUnavailableWarning,
    SMCSChatModel,
    SMCSConfig,
    SMCSError,
)
from smcs_graph.cli import main
from smcs_graph.server import APIError, ServerSettings, create_app
from smcs_graph.server.admission import Admission
from smcs_graph.testing import FakeChatModel
from tests.unit.conftest import make_pool

# The fakes return logprobs: a perplexity warning is an error, except where a test expects it.
pytestmark = pytest.mark.filterwarnings("error::smcs_graph.PerplexityUnavailableWarning")

FAST = SMCSConfig(k=3, n_aggregations=3, n_sup_base=4, seed=1)
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ASK = {"model": "smcs", "messages": [{"role": "user", "content": "What is 12 plus 30?"}]}


@pytest.fixture
def model(pool, bank, embedder) -> SMCSChatModel:
    return SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST)


@pytest.fixture
def client(model) -> Iterator[TestClient]:
    with TestClient(create_app(model, ServerSettings(api_key=KEY))) as test_client:
        yield test_client


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def sse_events(text: str) -> list[Any]:
    """The data payloads of an SSE body, `[DONE]` kept as a string; comments skipped."""
    events: list[Any] = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_health_is_open_and_models_need_the_key(client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "model": "smcs",
        "pool": ["mathy", "histo", "weak"],
        "running": 0,
        "queued": 0,
        "capacity": {"running": 8, "queued": 64},
    }
    assert_openai_error(client.get("/v1/models"), 401, "invalid_api_key")
    models = client.get("/v1/models", headers=AUTH).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["smcs"]
    assert client.get("/v1/models/smcs", headers=AUTH).json()["id"] == "smcs"
    assert_openai_error(client.get("/v1/models/gpt-4", headers=AUTH), 404, "model_not_found")


def test_completion_has_the_answer_and_the_usage_of_every_call(client) -> None:
    response = client.post("/v1/chat/completions", json=ASK, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "smcs"
    assert body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "The answer is 42."}
    assert choice["finish_reason"] == "stop"
    assert "smcs_trace" not in body and "x-smcs-summary" not in response.headers

    traced = client.post(
        "/v1/chat/completions", json={**ASK, "smcs": {"trace": True}}, headers=AUTH
    ).json()
    calls = traced["smcs_trace"]["calls"]
    assert len(calls) == 3 + 3  # K referencers + n aggregations
    assert traced["usage"] == {
        "prompt_tokens": sum(c["input_tokens"] for c in calls),
        "completion_tokens": sum(c["output_tokens"] for c in calls),
        "total_tokens": sum(c["total_tokens"] for c in calls),
    }
    assert "smcs_trace" not in traced["choices"][0]["message"]["content"]


def test_trace_by_header_with_a_summary_header(client) -> None:
    response = client.post("/v1/chat/completions", json=ASK, headers={**AUTH, "X-SMCS-Trace": "1"})
    assert response.json()["smcs_trace"]["referencers"][0] == "mathy"
    summary = json.loads(response.headers["x-smcs-summary"])
    assert summary["aggregator"] == "mathy" and summary["candidates"] == 3


@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_requests_without_the_right_key_get_401(client, header) -> None:
    assert_openai_error(
        client.post("/v1/chat/completions", json=ASK, headers=header), 401, "invalid_api_key"
    )


def test_without_a_configured_key_no_auth_is_needed(model) -> None:
    with TestClient(create_app(model)) as open_client:
        assert open_client.post("/v1/chat/completions", json=ASK).status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ([1, 2], None, "JSON object"),
        ({"messages": ASK["messages"]}, "model", "'model' is required"),
        ({"model": "smcs", "messages": []}, "messages", "non-empty list"),
        ({"model": "smcs", "messages": "hi"}, "messages", "non-empty list"),
        ({"model": "smcs", "messages": [{"role": "robot", "content": "x"}]}, "messages[0]", "role"),
        (
            {"model": "smcs", "messages": [{"role": "user", "content": 5}]},
            "messages[0].content",
            "",
        ),
        ({"model": "smcs", "messages": [{"role": "user", "content": "  "}]}, "messages", "no text"),
        ({"model": "smcs", "messages": [{"role": "system", "content": "x"}]}, "messages", "user"),
        (
            {"model": "smcs", "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages[0].content[0]",
            "type",
        ),
        (
            {"model": "smcs", "messages": [*ASK["messages"], {"role": "tool", "content": "x"}]},
            "messages[1].tool_call_id",
            "tool_call_id",
        ),
        ({**ASK, "frobnicate": 1}, "frobnicate", "unrecognized"),
        ({**ASK, "n": 3}, "n", "'n' must be 1"),
        ({**ASK, "logprobs": True}, "logprobs", "not available"),
        ({**ASK, "response_format": {"type": "json_object"}}, "response_format", "tool"),
        ({**ASK, "temperature": -1}, "temperature", "temperature must be"),
        ({**ASK, "max_tokens": 0}, "max_tokens", "max_tokens must be"),
        ({**ASK, "seed": "x"}, "seed", "seed must be"),
        ({**ASK, "stop": [1]}, "stop", "stop"),
        ({**ASK, "stream": "yes"}, "stream", "true or false"),
        ({**ASK, "stream_options": {"include_usage": True}}, "stream_options", "stream"),
        ({**ASK, "tool_choice": "required"}, "tool_choice", "needs 'tools'"),
        ({**ASK, "tools": [{"type": "function"}]}, "tools[0]", "function"),
        ({**ASK, "smcs": {"trace": "yes"}}, "smcs", "trace"),
    ],
)
def test_invalid_requests_get_400_naming_the_field(client, body, param, fragment) -> None:
    error = assert_openai_error(client.post("/v1/chat/completions", json=body, headers=AUTH), 400)
    assert error["param"] == param and fragment in error["message"]
    assert error["type"] == "invalid_request_error"


def test_malformed_json_unknown_model_and_unknown_route(client) -> None:
    bad = client.post("/v1/chat/completions", content=b"{not json", headers=AUTH)
    assert_openai_error(bad, 400, "invalid_json")
    unknown = client.post("/v1/chat/completions", json={**ASK, "model": "gpt-4o"}, headers=AUTH)
    assert assert_openai_error(unknown, 404, "model_not_found")["param"] == "model"
    assert_openai_error(client.get("/v1/nothing"), 404, "not_found")
    assert_openai_error(client.get("/v1/chat/completions"), 405, "method_not_allowed")
    assert client.post("/v1/chat/completions", json=ASK, headers=AUTH).status_code == 200


def test_bodies_over_the_limit_get_413(model) -> None:
    app = create_app(model, ServerSettings(max_body_bytes=2000))
    big = {**ASK, "messages": [{"role": "user", "content": "x" * 3000}]}
    with TestClient(app) as small_client:
        assert_openai_error(
            small_client.post("/v1/chat/completions", json=big), 413, "request_too_large"
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield json.dumps(big).encode()

        assert_openai_error(
            small_client.post("/v1/chat/completions", content=chunks()), 413, "request_too_large"
        )
        assert small_client.post("/v1/chat/completions", json=ASK).status_code == 200


class GatedModel(FakeChatModel):
    """Answers only once the test opens its gate: holds a run slot deterministically."""

    _gate: asyncio.Event = PrivateAttr(default_factory=asyncio.Event)

    def open_gate(self) -> None:
        self._gate.set()

    async def _agenerate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any):
        await self._gate.wait()
        return await super()._agenerate(messages, stop, **kwargs)


async def test_saturation_gets_429_and_queued_requests_still_finish(bank, embedder) -> None:
    gated = GatedModel(responses=["The answer is 42."])
    model = SMCSChatModel(
        pool=make_pool(mathy=gated), bank=bank, embedder=embedder, config=FAST.replace(k=1)
    )
    app = create_app(model, ServerSettings(max_concurrency=1, max_queue=1))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first = asyncio.create_task(http.post("/v1/chat/completions", json=ASK))
        while (await http.get("/health")).json()["running"] < 1:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(http.post("/v1/chat/completions", json=ASK))
        while (await http.get("/health")).json()["queued"] < 1:
            await asyncio.sleep(0.01)
        refused = await http.post("/v1/chat/completions", json=ASK)
        error = assert_openai_error(refused, 429, "server_busy")
        assert error["type"] == "rate_limit_error" and refused.headers["retry-after"] == "1"
        assert "1 SMCS runs in progress, 1 queued" in error["message"]
        gated.open_gate()
        assert (await first).status_code == 200 and (await second).status_code == 200
        health = (await http.get("/health")).json()
        assert health["running"] == 0 and health["queued"] == 0
        assert (await http.post("/v1/chat/completions", json=ASK)).status_code == 200


def test_streaming_sends_openai_chunks_then_usage_then_done(client) -> None:
    body = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    response = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The answer is 42."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    assert all("smcs_trace" not in c for c in chunks)


def test_streaming_without_usage_and_with_trace(client) -> None:
    body = {**ASK, "stream": True, "smcs": {"trace": True}}
    events = sse_events(client.post("/v1/chat/completions", json=body, headers=AUTH).text)
    chunks = events[:-1]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["smcs_trace"]["aggregator"] == "mathy"


def _weather_aggregator(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
    if not kwargs.get("tools"):
        return AIMessage("It is sunny in Paris.")
    if isinstance(messages[-1], ToolMessage):
        return AIMessage(f"The weather: {messages[-1].content}")
    return AIMessage("", tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}])


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def tool_client(bank, embedder) -> Iterator[tuple[TestClient, FakeChatModel]]:
    aggregator = FakeChatModel(respond=_weather_aggregator)
    pool = make_pool(mathy=aggregator, histo=FakeChatModel(responses=["Sunny, I think."]))
    model = SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST.replace(k=2))
    with TestClient(create_app(model)) as tool_test_client:
        yield tool_test_client, aggregator


def test_tools_reach_the_aggregator_and_tool_calls_come_back(tool_client) -> None:
    http, aggregator = tool_client
    body = {**ASK, "tools": [WEATHER_TOOL], "tool_choice": "auto"}
    # tool-call candidates have no text, so no logprobs: SMCS says so and scores by similarity
    with pytest.warns(PerplexityUnavailableWarning, match="tool calls"):
        response = http.post("/v1/chat/completions", json=body).json()
    (choice,) = response["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    aggregations = [c for c in aggregator.calls if c["kwargs"].get("tools")]
    assert aggregations and aggregations[0]["kwargs"]["tools"] == [WEATHER_TOOL]

    with pytest.warns(PerplexityUnavailableWarning, match="tool calls"):
        streamed = sse_events(http.post("/v1/chat/completions", json={**body, "stream": True}).text)
    deltas = [c["choices"][0]["delta"] for c in streamed[:-1] if c["choices"]]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert calls == [[{"index": 0, **choice["message"]["tool_calls"][0]}]]
    assert streamed[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_tool_result_turn_is_accepted(tool_client) -> None:
    http, _ = tool_client
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    messages = [
        *ASK["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
    ]
    body = {"model": "smcs", "messages": messages, "tools": [WEATHER_TOOL]}
    response = http.post("/v1/chat/completions", json=body).json()
    assert response["choices"][0]["message"]["content"] == "The weather: rain"
    assert response["choices"][0]["finish_reason"] == "stop"


def test_request_fields_become_config_overrides(fakes, client) -> None:
    body = {
        **ASK,
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "seed": 7,
        "presence_penalty": 0.0,
        "stop": " is",
        "user": "someone",
        "top_p": 0.9,
    }
    response = client.post("/v1/chat/completions", json=body, headers=AUTH).json()
    assert response["choices"][0]["message"]["content"] == "The answer"  # cut at the stop
    kwargs = fakes["mathy"].calls[0]["kwargs"]
    assert kwargs["temperature"] == 0.2 and kwargs["max_tokens"] == 50
    assert kwargs["presence_penalty"] == 0.0 and kwargs["seed"] >= 7


def test_content_part_arrays_and_system_messages(fakes, client) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 12 plus 30?"}]},
    ]
    response = client.post(
        "/v1/chat/completions", json={"model": "smcs", "messages": messages}, headers=AUTH
    )
    assert response.status_code == 200
    seen = fakes["mathy"].calls[0]["messages"]
    assert seen[0].content == "Be brief." and seen[1].content[0]["text"] == "What is 12 plus 30?"


def test_a_failed_run_is_502_and_the_server_stays_up(bank, embedder) -> None:
    broken = {
        name: FakeChatModel(error=ConnectionError("endpoint down"))
        for name in ("mathy", "histo", "weak")
    }
    model = SMCSChatModel(pool=make_pool(**broken), bank=bank, embedder=embedder, config=FAST)
    with TestClient(create_app(model)) as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json=ASK), 502)
        assert error["type"] == "server_error" and error["code"] == "smcs_run_failed"
        assert "endpoint down" in error["message"]
        streamed = sse_events(http.post("/v1/chat/completions", json={**ASK, "stream": True}).text)
        assert streamed[-2]["error"]["code"] == "smcs_run_failed" and streamed[-1] == "[DONE]"
        assert http.get("/health").json()["running"] == 0


def test_an_unexpected_error_is_500(model, monkeypatch) -> None:
    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(SMCSChatModel, "_agenerate", explode)
    with TestClient(create_app(model)) as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json=ASK), 500)
        assert error["code"] == "internal_error" and "KeyError" in error["message"]
        assert http.get("/health").status_code == 200


def test_server_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_concurrency must be >= 1"):
        ServerSettings(max_concurrency=0)
    with pytest.raises(ConfigError, match="api_key"):
        ServerSettings(api_key=" ")
    with pytest.raises(ConfigError, match="run_timeout_s must be > 0"):
        ServerSettings(run_timeout_s=0)


def test_serve_command_errors_before_serving(tmp_path, monkeypatch, capsys) -> None:
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(
        "models:\n  - name: a\n    class: smcs_graph.testing:FakeChatModel\n"
        "    kwargs: {responses: [hi]}\n"
    )
    monkeypatch.delenv("SMCS_TEST_KEY", raising=False)
    args = ["serve", "--pool", str(pool_file), "--bank", str(tmp_path / "missing")]
    assert main([*args, "--api-key-env", "SMCS_TEST_KEY"]) == 2
    assert "SMCS_TEST_KEY" in capsys.readouterr().err
    assert main([*args, "--max-concurrency", "0"]) == 2
    assert main([*args, "--run-timeout", "0"]) == 2
    assert main(args) == 1
    assert "no question bank" in capsys.readouterr().err


# --- faults: abandoned runs, the deadline, saturation, client errors (issue 12) ---------------


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """`app` under a real uvicorn on 127.0.0.1 (a free port), in this event loop: clients that
    close their connection are seen as disconnects, as in production."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        await asyncio.wait_for(task, 10)


async def open_and_abandon(base_url: str, body: dict[str, Any]) -> asyncio.StreamWriter:
    """Send a completion request on a raw connection and leave it open (close it to leave)."""
    host, port = base_url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(body).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    return writer


async def wait_for_health(http: httpx.AsyncClient, running: int, queued: int) -> dict[str, Any]:
    """/health once it shows `running` and `queued` runs; fails after 5 s."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        health = (await http.get("/health")).json()
        if (health["running"], health["queued"]) == (running, queued):
            return health
        assert asyncio.get_running_loop().time() < deadline, f"stuck at {health}"
        await asyncio.sleep(0.02)


def gated_model(bank: Any, embedder: Any) -> tuple[SMCSChatModel, GatedModel]:
    gated = GatedModel(responses=["The answer is 42."])
    pool = make_pool(mathy=gated)
    return SMCSChatModel(pool=pool, bank=bank, embedder=embedder, config=FAST.replace(k=1)), gated


async def test_clients_that_leave_free_their_slots(bank, embedder) -> None:
    """Four clients (three plain, one streamed) fill every place while the model hangs, then
    hang up: their runs are cancelled and a fifth request is admitted, not refused."""
    model, gated = gated_model(bank, embedder)
    app = create_app(model, ServerSettings(max_concurrency=2, max_queue=2))
    async with serving(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        bodies = [ASK, ASK, ASK, {**ASK, "stream": True}]
        clients = [await open_and_abandon(base_url, body) for body in bodies]
        await wait_for_health(http, running=2, queued=2)
        assert_openai_error(await http.post("/v1/chat/completions", json=ASK), 429)
        for writer in clients:
            writer.close()
            await writer.wait_closed()
        health = await wait_for_health(http, running=0, queued=0)
        assert health["status"] == "ok"
        fifth = asyncio.create_task(http.post("/v1/chat/completions", json=ASK))
        await wait_for_health(http, running=1, queued=0)
        gated.open_gate()
        assert (await fifth).status_code == 200
        # Only the fifth run called the model (1 referencer + 3 aggregations): the abandoned
        # runs were cancelled while they waited, not left to go on once the model answered.
        assert len(gated.calls) == 1 + 3


async def test_admission_releases_each_place_once_however_the_run_ends() -> None:
    admission = Admission(max_concurrency=1, max_queue=1, run_timeout_s=60)
    never = asyncio.Event()
    unstarted = admission.start(never.wait)
    unstarted.cancel()  # before its first step: its coroutine never runs
    await asyncio.wait({unstarted})
    assert (admission.admitted, admission.running) == (0, 0)

    running = admission.start(never.wait)
    queued = admission.start(never.wait)
    while admission.running < 1:
        await asyncio.sleep(0)
    with pytest.raises(APIError):
        admission.start(never.wait)
    queued.cancel()
    await asyncio.wait({queued})
    assert (admission.admitted, admission.running) == (1, 1)
    running.cancel()
    await asyncio.wait({running})
    assert (admission.admitted, admission.running) == (0, 0)

    async def fail() -> None:
        raise ValueError("boom")

    assert await admission.start(lambda: asyncio.sleep(0, "done")) == "done"
    with pytest.raises(ValueError, match="boom"):
        await admission.start(fail)
    assert (admission.admitted, admission.running) == (0, 0)


async def test_a_run_past_the_deadline_gets_504(bank, embedder) -> None:
    model, _ = gated_model(bank, embedder)
    app = create_app(model, ServerSettings(run_timeout_s=0.3))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        error = assert_openai_error(await http.post("/v1/chat/completions", json=ASK), 504)
        assert error["code"] == "run_timeout" and error["type"] == "server_error"
        assert "0.3 s" in error["message"] and "deadline" in error["message"]
        streamed = await http.post("/v1/chat/completions", json={**ASK, "stream": True})
        events = sse_events(streamed.text)
        assert events[-2]["error"]["code"] == "run_timeout" and events[-1] == "[DONE]"
        health = (await http.get("/health")).json()
        assert (health["status"], health["running"], health["queued"]) == ("ok", 0, 0)


async def test_health_reports_saturation_then_ok(bank, embedder) -> None:
    """No free slot: 200 "saturated" (requests still queue); no place at all: 503 "full"."""
    model, gated = gated_model(bank, embedder)
    app = create_app(model, ServerSettings(max_concurrency=1, max_queue=1))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        idle = await http.get("/health")
        assert idle.status_code == 200 and idle.json()["status"] == "ok"
        assert idle.json()["capacity"] == {"running": 1, "queued": 1}
        first = asyncio.create_task(http.post("/v1/chat/completions", json=ASK))
        busy = await wait_for_health(http, running=1, queued=0)
        assert busy["status"] == "saturated"
        assert (await http.get("/health")).status_code == 200
        second = asyncio.create_task(http.post("/v1/chat/completions", json=ASK))
        full = await wait_for_health(http, running=1, queued=1)
        assert full["status"] == "full"
        assert (await http.get("/health")).status_code == 503
        gated.open_gate()
        assert (await first).status_code == 200 and (await second).status_code == 200
        after = await http.get("/health")
        assert after.status_code == 200 and after.json()["status"] == "ok"


def test_deeply_nested_json_is_400_not_500(client) -> None:
    nested = client.post("/v1/chat/completions", content=b"[" * 100_000, headers=AUTH)
    assert "nested" in assert_openai_error(nested, 400, "invalid_json")["message"]
    deep = {
        "model": "smcs",
        "messages": ASK["messages"],
        "metadata": json.loads("[" * 500 + "]" * 500),
    }
    assert (
        "nested"
        in assert_openai_error(client.post("/v1/chat/completions", json=deep, headers=AUTH), 400)[
            "message"
        ]
    )


def test_nested_tool_call_arguments_are_400_not_500(client) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "[" * 100_000}}
    messages = [*ASK["messages"], {"role": "assistant", "content": None, "tool_calls": [call]}]
    response = client.post(
        "/v1/chat/completions", json={"model": "smcs", "messages": messages}, headers=AUTH
    )
    assert assert_openai_error(response, 400)["param"] == "messages[1].tool_calls[0]"


def test_a_bad_question_found_inside_the_run_is_400_not_502(model, monkeypatch) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        try:
            raise InvalidQuestionError("the question has no text a model can read")
        except InvalidQuestionError as exc:
            raise SMCSError("every referencer failed") from exc

    monkeypatch.setattr(SMCSChatModel, "_agenerate", refuse)
    with TestClient(create_app(model)) as http:
        error = assert_openai_error(http.post("/v1/chat/completions", json=ASK), 400)
        assert error["param"] == "messages" and "no text" in error["message"]

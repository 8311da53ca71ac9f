"""An OpenAI-compatible HTTP server over `SMCSChatModel` (`smcs serve`).

Endpoints: `POST /v1/chat/completions` (JSON, or server-sent events with `"stream": true`),
`GET /v1/models`, `GET /v1/models/{id}`, `GET /health`. Each completion is one SMCS run;
`usage` sums the tokens of every underlying model call. This module only maps HTTP to the chat
model: validation of the OpenAI request, admission control, and the OpenAI response shapes.

- Trace: a client that sends `"smcs": {"trace": true}` or the header `X-SMCS-Trace: 1` gets the
  full SMCS trace as a top-level `smcs_trace` field (of the response, or of the last streamed
  choice chunk) and, on non-streamed responses, a one-line summary in the `X-SMCS-Summary`
  header. The answer text never carries it.
- Streaming: SMCS knows its answer only after scoring every aggregation, so a stream sends the
  role chunk at once, SSE comments as keep-alives while the run goes on, then the answer in one
  content (or tool-call) chunk, the finish chunk and, with `stream_options.include_usage`, the
  usage chunk.
- Limits: optional bearer key (401), a request body cap (413), at most `max_concurrency` runs
  at once with `max_queue` more waiting; beyond that 429 with `Retry-After` (a client-side
  retry is right: the server is busy, not broken).
- Errors are OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}`. A failed SMCS
  run (every model failed) is 502; an unexpected failure is 500. The server stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from smcs_graph._input import message_text, retrieval_query
from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.errors import BankError, ConfigError, InvalidQuestionError, SMCSError

log = logging.getLogger(__name__)

__all__ = ["APIError", "ServerSettings", "create_app"]

# Request fields mapped onto SMCSConfig (request name -> config field).
_CONFIG_FIELDS = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
}
# Accepted for compatibility; they have no SMCS counterpart and do not change the run.
_IGNORED_FIELDS = frozenset(
    {
        "user",
        "metadata",
        "store",
        "parallel_tool_calls",
        "top_p",
        "frequency_penalty",
        "logit_bias",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    }
)
_HANDLED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "stop",
        "n",
        "tools",
        "tool_choice",
        "logprobs",
        "top_logprobs",
        "response_format",
        "smcs",
    }
)
_KNOWN_FIELDS = _HANDLED_FIELDS | _IGNORED_FIELDS | set(_CONFIG_FIELDS)
_ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class ServerSettings:
    """How the server admits and answers requests."""

    model_name: str = "smcs"
    """The model id clients send and `/v1/models` lists."""
    api_key: str | None = None
    """Bearer key required on /v1 routes (None: no auth)."""
    max_concurrency: int = 8
    """SMCS runs at once; each run makes K + n model calls."""
    max_queue: int = 64
    """Requests that may wait for a run slot; more get 429."""
    max_body_bytes: int = 1_048_576
    keepalive_s: float = 15.0
    """Seconds between SSE keep-alive comments while a streamed run goes on."""

    def __post_init__(self) -> None:
        problems = []
        if not self.model_name.strip():
            problems.append("model_name must be non-empty")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("api_key must be non-empty or unset")
        for name in ("max_concurrency", "max_body_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_queue < 0:
            problems.append(f"max_queue must be >= 0 (got {self.max_queue})")
        if self.keepalive_s <= 0:
            problems.append(f"keepalive_s must be > 0 (got {self.keepalive_s})")
        if problems:
            raise ConfigError("invalid server settings: " + "; ".join(problems))


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class ChatRequest:
    """A validated chat completion request."""

    messages: list[BaseMessage]
    overrides: dict[str, Any]
    stop: list[str] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    stream: bool = False
    include_usage: bool = False
    trace: bool = False


def parse_request(
    payload: Any, settings: ServerSettings, model: SMCSChatModel, trace_header: bool
) -> ChatRequest:
    """Validate an OpenAI chat completion body; raise `APIError` saying what is wrong."""
    if not isinstance(payload, dict):
        raise _bad("the request body must be a JSON object", code="invalid_request")
    unknown = sorted(set(payload) - _KNOWN_FIELDS)
    if unknown:
        raise _bad(
            f"unrecognized request field(s): {', '.join(unknown)}; this server accepts "
            f"{', '.join(sorted(_KNOWN_FIELDS))}",
            param=unknown[0],
            code="unknown_parameter",
        )
    name = payload.get("model")
    if not isinstance(name, str) or not name:
        raise _bad("'model' is required: the id of a model from GET /v1/models", "model")
    if name != settings.model_name:
        raise APIError(
            404,
            f"the model {name!r} does not exist on this server; it serves "
            f"{settings.model_name!r} (GET /v1/models)",
            param="model",
            code="model_not_found",
        )
    messages = _messages(payload.get("messages"))
    try:
        retrieval_query(messages)
    except InvalidQuestionError as exc:
        raise _bad(str(exc), "messages") from exc

    overrides: dict[str, Any] = {}
    for request_field, config_field in _CONFIG_FIELDS.items():
        value = payload.get(request_field)
        if value is None:
            continue
        try:
            model.config.replace(**{config_field: value})
        except ConfigError as exc:
            raise _bad(f"'{request_field}': {exc}", request_field) from exc
        overrides[config_field] = value

    n = payload.get("n")
    if n not in (None, 1):
        raise _bad("'n' must be 1: SMCS returns one answer (its best aggregation)", "n")
    if payload.get("logprobs") or payload.get("top_logprobs") is not None:
        raise _bad(
            "'logprobs' are not available: the answer is chosen among fused candidates; "
            "ask for the trace ('smcs': {'trace': true}) to see each candidate's perplexity",
            "logprobs",
        )
    response_format = payload.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise _bad(
            "only response_format {'type': 'text'} is supported; for structured output, "
            "pass a tool (function) with the schema and tool_choice naming it",
            "response_format",
        )
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    include_usage = False
    options = payload.get("stream_options")
    if options is not None:
        if not stream:
            raise _bad("'stream_options' is only allowed with 'stream': true", "stream_options")
        if not isinstance(options, dict) or not isinstance(
            options.get("include_usage", False), bool
        ):
            raise _bad("'stream_options' must be {'include_usage': bool}", "stream_options")
        include_usage = bool(options.get("include_usage", False))
    tools, tool_choice = _tools(payload.get("tools"), payload.get("tool_choice"))
    smcs = payload.get("smcs") or {}
    if (
        not isinstance(smcs, dict)
        or set(smcs) - {"trace"}
        or not isinstance(smcs.get("trace", False), bool)
    ):
        raise _bad("'smcs' must be an object {'trace': bool}", "smcs")
    return ChatRequest(
        messages=messages,
        overrides=overrides,
        stop=_stop(payload.get("stop")),
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        include_usage=include_usage,
        trace=bool(smcs.get("trace", False)) or trace_header,
    )


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) and s for s in value):
        return list(value)
    raise _bad("'stop' must be a string or a list of non-empty strings", "stop")


def _tools(tools: Any, tool_choice: Any) -> tuple[list[dict[str, Any]], Any]:
    if tools is None:
        if tool_choice not in (None, "none"):
            raise _bad("'tool_choice' needs 'tools'", "tool_choice")
        return [], None
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list of function tools", "tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise _bad(
                f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                "'description': ..., 'parameters': {...}}}}",
                f"tools[{i}]",
            )
    names = {t["function"]["name"] for t in tools}
    if tool_choice is None or tool_choice in ("none", "auto", "required"):
        return tools, tool_choice
    chosen = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    if (
        not isinstance(tool_choice, dict)
        or tool_choice.get("type") != "function"
        or not isinstance(chosen, dict)
        or chosen.get("name") not in names
    ):
        raise _bad(
            "'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', "
            f"'function': {{'name': one of {sorted(names)}}}}}",
            "tool_choice",
        )
    return tools, tool_choice


def _content(value: Any, where: str, *, optional: bool = False) -> Any:
    """Validate message content: a string or a list of content parts (text parts checked)."""
    if value is None and optional:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for j, part in enumerate(value):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"{where}[{j}] must be a content part with a 'type'", f"{where}[{j}]")
            if part["type"] == "text" and not isinstance(part.get("text"), str):
                raise _bad(f"{where}[{j}] is a text part without a string 'text'", f"{where}[{j}]")
        return value
    raise _bad(f"{where} must be a string or a list of content parts", where)


def _messages(raw: Any) -> list[BaseMessage]:
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty list of chat messages", "messages")
    out: list[BaseMessage] = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object with 'role' and 'content'", where)
        role = item.get("role")
        if role not in _ROLES:
            raise _bad(f"{where}.role must be one of {', '.join(_ROLES)} (got {role!r})", where)
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise _bad(f"{where}.name must be a string", f"{where}.name")
        if role in ("system", "developer"):
            out.append(SystemMessage(_content(item.get("content"), f"{where}.content")))
        elif role == "user":
            out.append(HumanMessage(_content(item.get("content"), f"{where}.content"), name=name))
        elif role == "assistant":
            calls = _tool_calls(item.get("tool_calls"), where)
            content = _content(item.get("content"), f"{where}.content", optional=True)
            out.append(AIMessage(content=content, tool_calls=calls, name=name))
        else:
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{where}: a tool message needs 'tool_call_id'", f"{where}.tool_call_id")
            content = _content(item.get("content"), f"{where}.content")
            out.append(ToolMessage(content=content, tool_call_id=call_id))
    return out


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(raw):
        here = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"{here} must have a 'function' with a 'name'", here)
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else None
        except json.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            raise _bad(f"{here}.function.arguments must be a JSON object string", here)
        calls.append({"name": function["name"], "args": args, "id": call.get("id")})
    return calls


# ---------------------------------------------------------------- responses


def _usage(message: AIMessage) -> dict[str, int]:
    usage: Mapping[str, Any] = message.usage_metadata or {}
    prompt = int(usage.get("input_tokens", 0))
    completion = int(usage.get("output_tokens", 0))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


def _openai_tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    return [
        {
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
        }
        for call in message.tool_calls
    ]


def _trace_summary(trace: Mapping[str, Any]) -> str:
    """One header line: who answered, who aggregated, which candidate won, cost."""
    return json.dumps(
        {
            "referencers": trace.get("referencers"),
            "aggregator": trace.get("aggregator"),
            "chosen": trace.get("chosen"),
            "candidates": len(trace.get("candidates") or []),
            "perplexity_available": trace.get("perplexity_available"),
            "cost": trace.get("cost"),
        },
        separators=(",", ":"),
    )


class _Gate:
    """Admission: `max_concurrency` runs at once, `max_queue` waiting, the rest refused."""

    def __init__(self, settings: ServerSettings) -> None:
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._capacity = settings.max_concurrency + settings.max_queue
        self.admitted = 0
        self.running = 0

    def admit(self) -> None:
        # One event loop: these counters need no lock.
        if self.admitted >= self._capacity:
            raise APIError(
                429,
                f"the server is at capacity ({self.running} SMCS runs in progress, "
                f"{self.admitted - self.running} queued); retry shortly",
                type="rate_limit_error",
                code="server_busy",
                headers={"Retry-After": "1"},
            )
        self.admitted += 1

    async def run(self, model: SMCSChatModel, request: ChatRequest) -> AIMessage:
        """One admitted SMCS run; releases its admission however it ends."""
        try:
            async with self._slots:
                self.running += 1
                try:
                    runnable: Any = model
                    if request.tools:
                        runnable = model.bind_tools(request.tools, tool_choice=request.tool_choice)
                    result = await runnable.ainvoke(
                        request.messages, stop=request.stop, **request.overrides
                    )
                finally:
                    self.running -= 1
        finally:
            self.admitted -= 1
        if not isinstance(result, AIMessage):  # pragma: no cover - SMCSChatModel returns one
            raise TypeError(f"SMCS returned {type(result).__name__}, not an AIMessage")
        return result


def _run_error(exc: BaseException) -> APIError:
    """Map a failed run to an HTTP error (and log what the client does not see)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, InvalidQuestionError):
        return _bad(str(exc), "messages")
    if isinstance(exc, SMCSError):
        log.warning("SMCS run failed: %s", exc)
        return APIError(
            502,
            f"the SMCS run failed: {exc}",
            type="server_error",
            code="smcs_run_failed",
        )
    if isinstance(exc, BankError):
        log.error("question bank failure: %s", exc)
        return APIError(
            500, f"the question bank failed: {exc}", type="server_error", code="bank_error"
        )
    log.exception("unexpected error in an SMCS run", exc_info=exc)
    return APIError(
        500,
        f"internal error ({type(exc).__name__}: {exc}); see the server log",
        type="server_error",
        code="internal_error",
    )


def create_app(model: SMCSChatModel, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app serving `model` (run it with uvicorn, or test it with TestClient)."""
    settings = settings or ServerSettings()
    started = int(time.time())
    gate: _Gate | None = None
    # Streamed runs are tasks; asyncio holds tasks weakly, so keep them until they end.
    streamed_runs: set[asyncio.Task[AIMessage]] = set()

    def the_gate() -> _Gate:
        # Created on first use, inside the serving event loop.
        nonlocal gate
        if gate is None:
            gate = _Gate(settings)
        return gate

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise APIError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>' with the key "
                "this server was started with",
                code="invalid_api_key",
            )

    async def read_json(request: Request) -> Any:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        too_large = APIError(
            413,
            f"the request body is larger than this server's limit of {limit} bytes",
            code="request_too_large",
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _bad(f"the request body is not valid JSON: {exc}", code="invalid_json") from exc

    def model_card() -> dict[str, Any]:
        return {
            "id": settings.model_name,
            "object": "model",
            "created": started,
            "owned_by": "smcs",
            "smcs_pool": model.pool.names,
        }

    async def health(request: Request) -> Response:
        current = the_gate()
        return JSONResponse(
            {
                "status": "ok",
                "model": settings.model_name,
                "pool": model.pool.names,
                "running": current.running,
                "queued": current.admitted - current.running,
            }
        )

    async def list_models(request: Request) -> Response:
        try:
            authorize(request)
        except APIError as exc:
            return exc.response()
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def get_model(request: Request) -> Response:
        try:
            authorize(request)
            if request.path_params["model"] != settings.model_name:
                raise APIError(
                    404,
                    f"the model {request.path_params['model']!r} does not exist on this "
                    f"server; it serves {settings.model_name!r}",
                    param="model",
                    code="model_not_found",
                )
        except APIError as exc:
            return exc.response()
        return JSONResponse(model_card())

    async def chat_completions(request: Request) -> Response:
        try:
            authorize(request)
            header = request.headers.get("x-smcs-trace", "").strip().lower()
            chat = parse_request(
                await read_json(request), settings, model, header in ("1", "true", "yes")
            )
            the_gate().admit()
        except APIError as exc:
            return exc.response()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if chat.stream:
            # The run starts now, so its admission is released even if the client leaves
            # before the stream is first read.
            task = asyncio.create_task(the_gate().run(model, chat))
            streamed_runs.add(task)
            task.add_done_callback(streamed_runs.discard)
            return StreamingResponse(
                _sse(task, chat, completion_id, created),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            message = await the_gate().run(model, chat)
        except Exception as exc:
            return _run_error(exc).response()
        body = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": settings.model_name,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": _message_body(message),
                    "logprobs": None,
                    "finish_reason": "tool_calls" if message.tool_calls else "stop",
                }
            ],
            "usage": _usage(message),
        }
        headers = {}
        if chat.trace:
            trace = message.response_metadata.get("smcs_trace") or {}
            body["smcs_trace"] = trace
            headers["X-SMCS-Summary"] = _trace_summary(trace)
        return Response(
            json.dumps(body, default=str),
            media_type="application/json",
            headers=headers,
        )

    def chunk(completion_id: str, created: int, chat: ChatRequest, **fields: Any) -> str:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": settings.model_name,
            "system_fingerprint": None,
            **fields,
        }
        if chat.include_usage and "usage" not in body:
            body["usage"] = None
        return f"data: {json.dumps(body, default=str)}\n\n"

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    async def _sse(
        task: asyncio.Task[AIMessage], chat: ChatRequest, completion_id: str, created: int
    ) -> AsyncIterator[str]:
        try:
            yield chunk(
                completion_id, created, chat, choices=choice({"role": "assistant", "content": ""})
            )
            while True:
                done, _ = await asyncio.wait({task}, timeout=settings.keepalive_s)
                if done:
                    break
                yield ": keep-alive\n\n"
            try:
                message = task.result()
            except Exception as exc:
                # Headers (200) are gone already: report in-band, as OpenAI's API does.
                yield f"data: {json.dumps(_run_error(exc).body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            if message.tool_calls:
                calls = [{"index": i, **call} for i, call in enumerate(_openai_tool_calls(message))]
                yield chunk(completion_id, created, chat, choices=choice({"tool_calls": calls}))
            elif text := message_text(message):
                yield chunk(completion_id, created, chat, choices=choice({"content": text}))
            extra: dict[str, Any] = {}
            if chat.trace:
                extra["smcs_trace"] = message.response_metadata.get("smcs_trace") or {}
            finish = "tool_calls" if message.tool_calls else "stop"
            yield chunk(completion_id, created, chat, choices=choice({}, finish), **extra)
            if chat.include_usage:
                yield chunk(completion_id, created, chat, choices=[], usage=_usage(message))
            yield "data: [DONE]\n\n"
        finally:
            if not task.done():  # the client went away: stop the run
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"no route {request.method} {request.url.path}; routes: POST /v1/chat/completions, "
            "GET /v1/models, GET /health"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return APIError(exc.status_code, message, code=code).response()

    async def unexpected(request: Request, exc: Exception) -> Response:
        return _run_error(exc).response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Load the embedder and compile the graph before the first request, so /health
        # answers only once requests can be served promptly.
        embedder = model.embedder if model.embedder is not None else model.bank.embedder
        await asyncio.to_thread(embedder.embed, ["warm-up"])
        _ = model.graph
        the_gate()
        log.info("serving %r over pool %s", settings.model_name, model.pool.names)
        yield
        log.info("shutting down")

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        lifespan=lifespan,
    )


def _message_body(message: AIMessage) -> dict[str, Any]:
    text = message_text(message)
    body: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not message.tool_calls else None,
    }
    if message.tool_calls:
        body["tool_calls"] = _openai_tool_calls(message)
    return body


def run_server(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    access_log: bool = True,
    shutdown_timeout_s: int = 30,
) -> None:
    """Serve `app` with uvicorn until SIGINT/SIGTERM; in-flight requests finish first (up to
    `shutdown_timeout_s`)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=shutdown_timeout_s,
    )

"""The Starlette app of `smcs serve`: routes, auth, body limits, and the run of each request.

Endpoints: `POST /v1/chat/completions` (JSON, or server-sent events with `"stream": true`),
`GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, `POST /v1/feedback` (an outcome for a
run grows the bank: `feedback.py`). Each completion is one SMCS run;
`usage` sums the tokens of every underlying model call. The OpenAI request and response shapes
live in `request.py` and `response.py`, admission in `admission.py`.

- Trace: a client that sends `"smcs": {"trace": true}` or the header `X-SMCS-Trace: 1` gets the
  full SMCS trace as a top-level `smcs_trace` field and, on non-streamed responses, a one-line
  summary in the `X-SMCS-Summary` header.
- Limits: optional bearer key (401), a request body cap (413), at most `max_concurrency` runs
  at once with `max_queue` more waiting; beyond that 429 with `Retry-After` (a client-side
  retry is right: the server is busy, not broken). A run is cancelled when its client
  disconnects (streamed or not) and when it passes `run_timeout_s` (504, or an error event).
- `/health` says "ok" while a run slot is free, "saturated" (200) while every slot is busy
  but requests still queue, and "full" (503) when new requests would get 429: a load
  balancer's health check then routes around the server only while it refuses work.
- Errors are OpenAI-shaped: `{"error": {"message", "type", "param", "code"}}`. Client input
  errors are 4xx; a failed SMCS run (every model failed) is 502; an unexpected failure is
  500. The server stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessage
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.server.admission import Admission
from smcs_graph.server.errors import APIError, bad_request, run_error, unknown_model
from smcs_graph.server.feedback import feedback_endpoint, write_pending
from smcs_graph.server.request import ChatRequest, loads_json, parse_request
from smcs_graph.server.response import Completion, trace_summary
from smcs_graph.server.settings import ServerSettings

log = logging.getLogger(__name__)

__all__ = ["create_app", "run_server"]

_TRACE_HEADER_ON = ("1", "true", "yes")


def create_app(model: SMCSChatModel, settings: ServerSettings | None = None) -> Starlette:
    """The ASGI app serving `model` (run it with uvicorn, or test it with TestClient)."""
    settings = settings or ServerSettings()
    started = int(time.time())
    admission: Admission | None = None

    def the_admission() -> Admission:
        # Created on first use, inside the serving event loop.
        nonlocal admission
        if admission is None:
            admission = Admission(
                settings.max_concurrency, settings.max_queue, settings.run_timeout_s
            )
        return admission

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
            return loads_json(bytes(body))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise bad_request(
                f"the request body is not valid JSON: {exc}", code="invalid_json"
            ) from exc

    def model_card() -> dict[str, Any]:
        return {
            "id": settings.model_name,
            "object": "model",
            "created": started,
            "owned_by": "smcs",
            "smcs_pool": model.pool.names,
        }

    async def health(request: Request) -> Response:
        current = the_admission()
        status = "full" if current.full else "saturated" if current.saturated else "ok"
        return JSONResponse(
            {
                "status": status,
                "model": settings.model_name,
                "pool": model.pool.names,
                "running": current.running,
                "queued": current.queued,
                "capacity": {"running": current.max_concurrency, "queued": current.max_queue},
            },
            status_code=503 if current.full else 200,
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
                raise unknown_model(request.path_params["model"], settings.model_name)
        except APIError as exc:
            return exc.response()
        return JSONResponse(model_card())

    async def chat_completions(request: Request) -> Response:
        try:
            authorize(request)
            header = request.headers.get("x-smcs-trace", "").strip().lower()
            chat = parse_request(
                await read_json(request),
                model_name=settings.model_name,
                smcs_settings=model.config,
                trace_header=header in _TRACE_HEADER_ON,
                server=settings,
            )
            task = the_admission().start(lambda: _answer(model, chat))
        except APIError as exc:
            return exc.response()
        _cancel_on_disconnect(request, task)
        completion = Completion.start(chat, settings.model_name)
        if chat.stream:
            return StreamingResponse(
                completion.events(task, settings.keepalive_s),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            await asyncio.wait({task})
        finally:
            task.cancel()  # a no-op once it is done; stops the run if this handler is cancelled
        if task.cancelled():  # the client left; nobody reads this
            return APIError(499, "the client closed the request", code="client_closed").response()
        if (failure := task.exception()) is not None:
            return run_error(failure).response()
        message = task.result()
        headers = {"X-SMCS-Summary": trace_summary(message)} if chat.trace else {}
        return Response(
            json.dumps(completion.body(message), default=str),
            media_type="application/json",
            headers=headers,
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (
            f"no route {request.method} {request.url.path}; routes: POST /v1/chat/completions, "
            "POST /v1/feedback, GET /v1/models, GET /health"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return APIError(exc.status_code, message, code=code).response()

    async def unexpected(request: Request, exc: Exception) -> Response:
        return run_error(exc).response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Load the embedder and compile the graph before the first request, so /health
        # answers only once requests can be served promptly.
        embedder = model.embedder if model.embedder is not None else model.bank.embedder
        await asyncio.to_thread(embedder.embed, ["warm-up"])
        _ = model.graph
        the_admission()
        await write_pending(model)  # feedback recorded before a crash, not yet in the bank
        log.info("serving %r over pool %s", settings.model_name, model.pool.names)
        yield
        log.info("shutting down")

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/feedback", feedback_endpoint(model, authorize, read_json), methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: unexpected},
        lifespan=lifespan,
    )


def _cancel_on_disconnect(request: Request, task: asyncio.Task[AIMessage]) -> None:
    """Cancel the run `task` when the client disconnects; stop watching once the run ends.

    The body is read by now, so the next ASGI message is `http.disconnect`: sent when the
    client closes the connection (or, by some servers, once the response is complete).
    """

    async def watch() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the connection broke some other way: the client is gone too
            log.debug("reading the connection failed; cancelling its run", exc_info=True)
        task.cancel()

    watcher = asyncio.create_task(watch())
    task.add_done_callback(lambda _: watcher.cancel())


async def _answer(model: SMCSChatModel, chat: ChatRequest) -> AIMessage:
    """One SMCS run for a validated request (tools bound when it has any)."""
    runnable: Any = model
    if chat.tools:
        runnable = model.bind_tools(chat.tools, tool_choice=chat.tool_choice)
    result = await runnable.ainvoke(chat.messages, stop=chat.stop, **chat.overrides)
    if not isinstance(result, AIMessage):  # pragma: no cover - SMCSChatModel returns one
        raise TypeError(f"SMCS returned {type(result).__name__}, not an AIMessage")
    return result


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

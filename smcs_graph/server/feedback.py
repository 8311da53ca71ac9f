"""`POST /v1/feedback`: an outcome for a served run grows the bank (`smcs_graph.feedback`).

Body: `{"run_id": ..., "gold": ...}`, `{"run_id": ..., "correct": true}` or `{"run_id": ...,
"verdicts": {"model": true}}`, with an optional `"family"` (the grader of a gold answer). The
run id is the `smcs_run_id` field of the chat completion. The answer says which cells were set;
it comes once the outcome is committed to the run store and written to the bank, and a
recorded outcome whose bank write was cut short is written at the next start.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from smcs_graph.chat_model import SMCSChatModel
from smcs_graph.feedback import FeedbackError, apply_pending
from smcs_graph.server.errors import APIError, bad_request

__all__ = ["feedback_endpoint", "write_pending"]

log = logging.getLogger(__name__)

FIELDS = ("run_id", "gold", "correct", "verdicts", "family")


def parse_feedback(body: Any) -> dict[str, Any]:
    """The feedback call's keywords from a request body (400 naming what is wrong)."""
    if not isinstance(body, dict):
        raise bad_request(
            'the feedback body must be a JSON object: {"run_id": ..., and one of "gold", '
            '"correct", "verdicts"}'
        )
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_request(
            f"unknown feedback field(s) {unknown}; allowed: {', '.join(FIELDS)}",
            param=unknown[0],
            code="unknown_parameter",
        )
    if "run_id" not in body:
        raise bad_request(
            "missing 'run_id': send the smcs_run_id of the chat completion", param="run_id"
        )
    return {name: body.get(name) for name in FIELDS}


def feedback_endpoint(
    model: SMCSChatModel,
    authorize: Callable[[Request], None],
    read_json: Callable[[Request], Awaitable[Any]],
) -> Callable[[Request], Awaitable[Response]]:
    """The route handler, with the chat endpoint's auth and body limits."""

    async def feedback(request: Request) -> Response:
        try:
            authorize(request)
            fields = parse_feedback(await read_json(request))
            result = await model.afeedback(
                fields["run_id"],
                gold=fields["gold"],
                correct=fields["correct"],
                verdicts=fields["verdicts"],
                family=fields["family"],
            )
        except APIError as exc:
            return exc.response()
        except FeedbackError as exc:
            kind = "server_error" if exc.status >= 500 else "invalid_request_error"
            return APIError(exc.status, str(exc), type=kind, code=exc.code).response()
        return JSONResponse({"object": "smcs.feedback", **result.to_json()})

    return feedback


async def write_pending(model: SMCSChatModel) -> None:
    """Write the outcomes recorded but not yet written to the bank (a crash cut them short)."""
    try:
        await asyncio.to_thread(apply_pending, model.bank, model.runs)
    except Exception:  # serving goes on; the outcomes stay recorded for the next start
        log.exception("could not write recorded feedback to the bank")

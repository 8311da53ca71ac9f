"""Errors in OpenAI's shape (`APIError`) and the mapping of a failed SMCS run onto them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from smcs_graph.errors import BankError, InvalidQuestionError, SMCSError

log = logging.getLogger(__name__)

__all__ = ["APIError", "bad_request", "run_error", "unknown_model"]


class APIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

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


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 naming the request field at fault."""
    return APIError(400, message, param=param, code=code)


def unknown_model(name: str, served: str, hint: str = "") -> APIError:
    """A 404 for a model id this server does not serve; `hint` ends the message."""
    message = f"the model {name!r} does not exist on this server; it serves {served!r}"
    return APIError(
        404, f"{message} {hint}" if hint else message, param="model", code="model_not_found"
    )


def run_error(exc: BaseException) -> APIError:
    """Map a failed run to an HTTP error (and log what the client does not see).

    A bad question is 400, wherever the run found it bad (the error itself or its cause); a
    failed SMCS run (every model failed) 502; a bank failure or anything unexpected 500.
    """
    if isinstance(exc, APIError):
        return exc
    question = _cause(exc, InvalidQuestionError)
    if question is not None:
        return bad_request(str(question), "messages")
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


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """`exc` or the first exception of type `kind` in its chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

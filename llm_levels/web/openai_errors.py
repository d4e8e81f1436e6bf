"""OpenAI's error shape for ``/v1``: :class:`ApiError`, and the one handler every ``/v1`` failure goes through.

Whatever goes wrong in a ``/v1`` route -- an :class:`ApiError` raised on purpose, a request body that does
not validate (pydantic), a :class:`~llm_levels.core.BackendError` from the turn service, or a bug -- is
answered by :func:`error_response` as ``{"error": {"message", "type", "param", "code"}}``, the JSON the
``openai`` client turns into its own exceptions.

The handler lives on the routes (:class:`OpenAIRoute`, the router's ``route_class``), not on the app:
FastAPI routers cannot hold exception handlers, and an app-wide one would also see the Gradio page's
errors. Refused input logs one line; only a bug logs its traceback, and its answer never shows internals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from ..core import BackendError

log = logging.getLogger("llm_levels.web.openai")

#: Retry-After (seconds) sent with 503 while the model loads, and with 429/503 when the line is full or slow.
RETRY_AFTER_LOADING_S = 5
RETRY_AFTER_BUSY_S = 2
#: The pydantic error type of a validator's own refusal (see :func:`refused`).
REFUSED = "refused"


class ApiError(Exception):
    """An error answered in OpenAI's JSON shape, with its HTTP status and optional headers."""

    _TYPES = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        403: "permission_error",
        404: "invalid_request_error",
        405: "invalid_request_error",
        413: "invalid_request_error",
        429: "rate_limit_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        return self._TYPES.get(self.status, "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @classmethod
    def from_backend(cls, e: BackendError) -> ApiError:
        """A turn service error as an HTTP answer: its own status (400 bad input, 429 rate limit...)."""
        status = e.status if 400 <= e.status <= 599 else 500
        headers = {"Retry-After": str(RETRY_AFTER_BUSY_S)} if e.retryable and status in (429, 503) else None
        return cls(status, e.message, code=e.kind, headers=headers)

    @classmethod
    def from_validation(cls, errors: list[Mapping[str, Any]]) -> ApiError:
        """A pydantic validation failure as one 400 naming the first bad field (unknown fields first)."""
        unknown = sorted(_printable(e["loc"][-1]) for e in errors if e.get("type") == "extra_forbidden")
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            return cls(
                400,
                f"Unrecognized request argument supplied: {', '.join(unknown[:5])}{more}.",
                param=unknown[0],
                code="unknown_parameter",
            )
        first = errors[0]
        ctx = first.get("ctx") or {}
        loc = [part for part in first.get("loc", ()) if part != "body"]
        param = ctx.get("param") or param_name(loc) or None
        code = ctx.get("code") or ("missing_required_parameter" if first.get("type") == "missing" else None)
        message = describe(first, param_name(loc) or None)
        if first.get("type") == REFUSED and len(loc) > 1:  # e.g. one message of the list: say which
            message = f"{param_name(loc)}: {message}"
        return cls(400, message, param=param, code=code)


def refused(message: str, *, code: str | None = None, param: str | None = None) -> PydanticCustomError:
    """A validator's refusal: ``message`` is sent as is, with ``code``; ``param`` overrides the field's name."""
    return PydanticCustomError(REFUSED, "{message}", {"message": message, "code": code, "param": param})


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready: nobody reads the reply."""


def param_name(loc: list[Any]) -> str:
    """A pydantic location as OpenAI names a parameter: ``("messages", 0, "content")`` -> ``messages[0].content``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_KINDS = {
    "int_type": "a whole number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dict_type": "an object",
}


def describe(error: Mapping[str, Any], param: str | None) -> str:
    """One line for one pydantic error: the validator's own message when it wrote one, else a plain sentence."""
    kind, name = error.get("type", ""), param or "The request body"
    if kind == REFUSED:
        return str(error.get("msg"))
    if kind == "missing":
        return f"Missing required parameter: '{name}'."
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}, not {_shown(error.get('input'))}."
    return f"Invalid value for {name}: {error.get('msg', 'not valid')}."


def _printable(name: Any) -> str:
    """A field name a client sent, short and on one line (it goes to the log too)."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(name)[:40])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def error_response(request: Request, exc: Exception) -> Response:
    """The one handler: any failure of a ``/v1`` route as OpenAI's error JSON (499, unsent, for a client gone)."""
    if isinstance(exc, ClientGone):
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    who = getattr(request.state, "request_id", None) or f"{request.method} {request.url.path}"
    err = as_api_error(exc)
    if err is None:  # a bug: the traceback for the log, a plain sentence for the client
        log.error("%s: failed", who, exc_info=exc)
        err = ApiError(500, "The server failed while handling this request; see the app log.", code="internal")
    else:
        level = logging.WARNING if err.status >= 500 or err.status == 429 else logging.INFO
        shown = " ".join(err.message.split())  # one line, whatever a client put in it
        log.log(level, "%s: %d %s%s", who, err.status, shown, f" (param {_printable(err.param)})" if err.param else "")
    return err.response()


def as_api_error(exc: Exception) -> ApiError | None:
    """``exc`` as the ApiError it stands for; None for an unexpected exception (a bug)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ValidationError, RequestValidationError)):
        return ApiError.from_validation(list(exc.errors()))
    if isinstance(exc, BackendError):
        return ApiError.from_backend(exc)
    if isinstance(exc, HTTPException):
        return ApiError(exc.status_code, str(exc.detail), headers=exc.headers)
    return None


class OpenAIRoute(APIRoute):
    """A ``/v1`` route: its handler's failures, validation included, are answered by :func:`error_response`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - the one place /v1 failures become answers
                return error_response(request, exc)

        return answer

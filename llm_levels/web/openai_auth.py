"""Who may call ``/v1``: :class:`AccessCheck`, a FastAPI dependency every ``/v1`` route runs first.

With ``LOCAL_API_KEY`` set, every ``/v1`` request needs ``Authorization: Bearer <key>`` (401 otherwise;
compared in constant time). Without it, ``/v1`` is open only when the app listens on a loopback address
(127.0.0.1, ::1, localhost); on any other address it is closed (403) -- except to the app itself, which
calls its own endpoint with a random per-process key (:attr:`AppRuntime.internal_api_key`), so the
Hosted-API tab's "this app's local endpoint" works everywhere.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Request

from ..config import is_loopback, secret
from .openai_errors import ApiError


class AccessCheck:
    """The ``/v1`` access rules for one app (see the module docstring); call it with the request."""

    def __init__(self, runtime: Any) -> None:
        self.server_name = runtime.settings.server_name
        self.loopback = is_loopback(self.server_name)
        self.internal_key: str | None = getattr(runtime, "internal_api_key", None)

    def __call__(self, request: Request) -> None:
        configured = secret("LOCAL_API_KEY")  # read per request: a test or an operator may change it
        if self.loopback and not configured:
            return  # a local learner's machine: open, any key (the openai client always sends one) works
        given = bearer(request.headers.get("authorization"))
        ok = False
        for key in (configured, self.internal_key):
            # compare_digest on every configured key, so timing says nothing about which matched
            if key and given is not None and hmac.compare_digest(given.encode(), key.encode()):
                ok = True
        if ok:
            return
        if not configured:
            raise ApiError(
                403,
                "This endpoint is closed: the app listens on a non-local address "
                f"({self.server_name}) and no LOCAL_API_KEY is set. Set LOCAL_API_KEY on the "
                "server and send it as 'Authorization: Bearer <key>'.",
                code="endpoint_closed",
            )
        if given is None:
            raise ApiError(
                401,
                "Missing API key: send the server's LOCAL_API_KEY as "
                "'Authorization: Bearer <key>' (the openai client's api_key).",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise ApiError(
            401,
            "Incorrect API key: use the LOCAL_API_KEY this server was started with.",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()

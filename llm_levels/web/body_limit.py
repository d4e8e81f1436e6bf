"""A bound on the JSON bodies the page's routes read (:class:`JsonBodyLimit`, an ASGI middleware).

Gradio reads a request body whole into memory and parses it before any handler can look at it, with no
limit of its own: a few clients sending hundreds of megabytes of JSON would fill the server's memory and
hold the CPU for everyone. Every text a handler accepts is capped far lower (``MAX_PROMPT_CHARS``), so a
JSON body past :func:`page_body_limit` is refused with 413 before it reaches Gradio. ``/v1`` bounds its
own bodies (:mod:`.openai_routes`); file uploads are multipart, bounded by Gradio's ``max_file_size``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("llm_levels.web")

Scope = dict[str, Any]
Message = dict[str, Any]


def page_body_limit(max_prompt_chars: int) -> int:
    """Bytes a page request's JSON body may have: room for a few full-length texts, each character escaped
    into six bytes, and a megabyte for the rest."""
    return 4 * 6 * max_prompt_chars + (1 << 20)


class JsonBodyLimit:
    """Refuse (413) a POST body over ``max_bytes`` (by its Content-Length, or as it arrives), except uploads
    (multipart) and under the ``skip`` path prefixes. Bodies within the limit are passed on unchanged."""

    def __init__(self, app: Any, max_bytes: int, skip: tuple[str, ...] = ("/v1/",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.skip = skip

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away while sending: nobody to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: a disconnect, as the app expects

        await self.app(scope, replay, send)

    def _applies(self, scope: Scope) -> bool:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            return False
        path = scope.get("path", "")
        if any(path.startswith(prefix) for prefix in self.skip):
            return False
        kind = (_header(scope, b"content-type") or "").lower()
        return not kind.startswith("multipart/")  # uploads: Gradio's max_file_size

    async def _refuse(self, scope: Scope, send: Any) -> None:
        log.info("%s: 413 request body over %d bytes", scope.get("path", ""), self.max_bytes)
        body = json.dumps({"detail": f"The request body is too large (more than {self.max_bytes:,} bytes)."}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None

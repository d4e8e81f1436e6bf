"""The app's own OpenAI-compatible endpoint: ``/v1`` routes on the app's port, a face on the turn service.

So the Hosted-API level can be shown with no hosted key at all: the official ``openai`` client, pointed at
``http://127.0.0.1:7860/v1``, talks to the model running inside this app. A request walks one way:
this face validates it (:mod:`.openai_schema`), the turn service (:func:`llm_levels.turns.run_turn`)
checks it, loads the model, waits in the engine's line and streams the backend's answer as events, and
this face writes the events back in OpenAI's wire format (:mod:`.openai_answers`).

Routes
    ``GET /v1/models``, ``GET /v1/models/{id}``
        The local model under the id ``local`` plus its aliases and one id per engine
        (:mod:`.openai_models`).
    ``POST /v1/chat/completions``
        ``stream`` true (server-sent ``chat.completion.chunk`` events ending in ``data: [DONE]``;
        ``stream_options.include_usage`` adds a last chunk with empty ``choices`` and the usage) or false
        (one ``chat.completion`` with ``usage``); the parameters and what is refused: :mod:`.openai_schema`.
    Anything else under ``/v1``: 404 (405 for a known path with the wrong method).

Errors always have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: every route is an
:class:`~.openai_errors.OpenAIRoute`, whose one handler writes them.

Access: :mod:`.openai_auth` (``LOCAL_API_KEY``; open on a loopback bind without it), checked before the
body is read. Bodies are read up to a bound that follows ``MAX_PROMPT_CHARS`` (413 past it).

Load: a ``/v1`` request waits in the same first-come-first-served line as the tabs, the one in front of
its engine (``runtime.line(engine)``: ``LOCAL_CONCURRENCY`` llama.cpp generations at once), so ``/v1`` and
the UI never run more than that together and there is no second queue. When ``MAX_QUEUE_SIZE`` requests
already wait there, more get 429 with ``Retry-After``; each waits at most ``QUEUE_WAIT_S`` (then 503),
and a client that disconnects while waiting leaves the line. A request that arrives while the model is
loading waits for it up to ``MODEL_WAIT_S``, then gets 503 with ``Retry-After`` (the ``openai`` client
retries those by itself); see :mod:`.openai_turn`. A streamed answer's first piece is awaited before the
headers go out, so early failures keep their status code; later ones are an error event, as OpenAI does.

Each turn runs in its own worker thread (:mod:`.turn_stream`); the event loop only awaits a queue. When
the client goes away (mid-stream or while waiting), the turn is cancelled, the worker closes it (the
backend stops generating, or the request leaves the line) and the log says so (``... client went away
...; worker ended``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .openai_answers import ChunkWriter, completion
from .openai_auth import AccessCheck
from .openai_errors import ApiError, OpenAIRoute
from .openai_models import LOCAL_MODEL_ID, engine_for, model_card, model_ids, unknown_model
from .openai_schema import ChatCompletionRequest, parse_request, too_deep
from .openai_turn import all_started, collect_all, sse_events, start_turns

__all__ = ["LOCAL_MODEL_ID", "create_router"]

log = logging.getLogger("llm_levels.web.openai")

_KNOWN_PATHS = {"/v1/models": "GET", "/v1/chat/completions": "POST"}


def create_router(runtime: Any) -> APIRouter:
    """The ``/v1`` routes for ``runtime`` (an :class:`~llm_levels.runtime.AppRuntime`):
    ``app.include_router(create_router(runtime))``; the routes answer their own errors."""
    settings = runtime.settings
    router = APIRouter(prefix="/v1", route_class=OpenAIRoute, dependencies=[Depends(AccessCheck(runtime))])
    max_body = 6 * settings.max_prompt_chars + (1 << 20)  # JSON may escape a character into 6 bytes

    async def chat_body(request: Request) -> ChatCompletionRequest:
        return parse_request(await read_json(request, max_body), settings)

    @router.get("/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card(i) for i in model_ids(runtime)]})

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> JSONResponse:
        if model_id not in model_ids(runtime):
            raise unknown_model(model_id, runtime)
        return JSONResponse(model_card(model_id))

    @router.post("/chat/completions")
    async def chat_completions(request: Request, body: ChatCompletionRequest = Depends(chat_body)) -> Response:
        request_id = request.state.request_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        engine = engine_for(body.model, runtime)
        streams = start_turns(runtime, engine, body, request_id)  # one per answer asked for (n)
        model, firsts = await all_started(request, streams, settings.max_queue_size)
        log.info(
            "%s: %s stream=%s n=%d max_tokens=%d temperature=%g (%d waiting)",
            request_id,
            engine,
            bool(body.stream),
            body.choices,
            body.params.max_new_tokens,
            body.params.temperature,
            runtime.line(engine).waiting,
        )
        created = int(time.time())
        if not body.stream:
            answers = await collect_all(request, streams, firsts)
            return Response(completion(request_id, created, model, *answers), media_type="application/json")
        writer = ChunkWriter(request_id, created, model, body.include_usage)
        return StreamingResponse(
            sse_events(streams, firsts, writer),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def unknown_route(rest: str) -> Response:
        path = "/v1/" + rest
        if path in _KNOWN_PATHS:
            raise ApiError(405, f"Use {_KNOWN_PATHS[path]} for {path}.", code="method_not_allowed")
        raise ApiError(
            404,
            f"Unknown endpoint {path}: this server offers GET /v1/models and POST /v1/chat/completions.",
            code="unknown_url",
        )

    return router


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON; 413 past ``max_bytes``, 400 when it does not parse."""
    too_large = ApiError(413, f"The request body is too large (more than {max_bytes:,} bytes; see MAX_PROMPT_CHARS).")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise too_large
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > max_bytes:
            raise too_large
    try:
        return json.loads(data)
    except RecursionError:  # nested deeper than the parser goes: never a real request
        raise too_deep() from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(
            400,
            f"We could not parse the JSON body of your request ({e}). Send a JSON object with 'model' and 'messages'.",
            code="invalid_json",
        ) from None

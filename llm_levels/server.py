"""The app's own OpenAI-compatible endpoint: ``/v1`` routes on the app's port, backed by the local model.

A thin HTTP face on :class:`~llm_levels.core.Backend`, so the Hosted-API level can be shown with no
hosted key at all: the official ``openai`` client, pointed at ``http://127.0.0.1:7860/v1``, talks to
the model running inside this app.

Routes
    ``GET /v1/models``, ``GET /v1/models/{id}``
        The local model under the id ``local`` (the default engine, llama.cpp unless ``LOCAL_ENGINE``
        says otherwise) plus its aliases (the model's own name, e.g. ``SmolLM2-135M-Instruct``, and the
        ``LOCAL_MODEL`` setting when it is not a folder path), and ``local-llama.cpp`` /
        ``local-transformers`` for each engine by name (the other engine loads on first use).
    ``POST /v1/chat/completions``
        ``stream`` true (server-sent ``chat.completion.chunk`` events ending in ``data: [DONE]``;
        ``stream_options.include_usage`` adds a last chunk with empty ``choices`` and the usage) or
        false (one ``chat.completion`` with ``usage``). Parameters: ``temperature`` (default 1, as
        OpenAI), ``top_p``, ``max_tokens`` / ``max_completion_tokens`` (default and upper bound:
        ``MAX_NEW_TOKENS_CAP``), ``seed``, ``stop`` (a string or up to 4), ``n`` (only 1), and the
        extensions ``top_k`` and ``repetition_penalty`` (as vLLM accepts them), and ``logprobs`` with
        ``top_logprobs`` (0-20) in OpenAI's shape where the engine gives them (llama.cpp). Harmless OpenAI
        fields (``user``, ``metadata``, zero penalties...) are ignored; fields that would change the answer
        and are not supported here (``tools``, ``response_format`` json...) are refused with 400, and so are
        names OpenAI does not know.

Errors always have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.

Access: with ``LOCAL_API_KEY`` set, every ``/v1`` request needs ``Authorization: Bearer <key>`` (401
otherwise; compared in constant time). Without it, ``/v1`` is open only when the app listens on a
loopback address (127.0.0.1, ::1, localhost); on any other address it is closed (403) -- except to
the app itself, which calls its own endpoint with a random per-process key
(:attr:`AppRuntime.internal_api_key`), so the Hosted-API tab's "this app's local endpoint" works
everywhere.

Load: a ``/v1`` request waits in the same first-come-first-served line as the tabs, the one in front of
its engine (``runtime.line(engine)``: ``LOCAL_CONCURRENCY`` llama.cpp generations at once), so ``/v1``
and the UI never run more than that together and there is no second queue. When ``MAX_QUEUE_SIZE``
requests already wait there, more get 429 with ``Retry-After``; each waits at most
:data:`QUEUE_WAIT_S` (then 503), and a client that disconnects while waiting leaves the line. A request that
arrives while the model is loading waits for it up to :data:`MODEL_WAIT_S`, then gets 503 with
``Retry-After`` (the ``openai`` client retries those by itself).

Each generation runs in its own worker thread, which owns the backend's generator; the event loop
only awaits a queue. When the client goes away (mid-stream or while waiting), the cancel event is
set, the worker closes the generator (the backend then ends its generate thread) and the slot is
freed; the log says so (``... client went away ...; worker ended``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any, AsyncIterator, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .config import secret
from .core import Backend, BackendError, Chunk, GenParams, Message, check_conversation, messages_from_dicts
from .engine import ENGINES

log = logging.getLogger("llm_levels.server")

#: The id every client can use for the local model (its aliases are listed by ``GET /v1/models``).
LOCAL_MODEL_ID = "local"
#: ``local-<engine>``: the local model on that engine.
ENGINE_MODEL_IDS = {f"local-{e}": e for e in ENGINES}
#: How long a request waits for the local model to finish loading before it gets 503 + Retry-After.
MODEL_WAIT_S = 30.0
#: How long a request waits in the ``/v1`` queue for its turn before it gets 503 + Retry-After. Long on
#: purpose: the queue's length is bounded by MAX_QUEUE_SIZE, and a client that gives up leaves the queue.
QUEUE_WAIT_S = 300.0
#: Seconds between two looks at a waiting request's place in its engine's line.
LINE_POLL_S = 0.02
#: Retry-After (seconds) sent with 503 while the model loads, and with 429/503 when the queue is full.
RETRY_AFTER_LOADING_S = 5
RETRY_AFTER_BUSY_S = 2
#: OpenAI's default sampling temperature (used when a request gives none).
DEFAULT_TEMPERATURE = 1.0

# OpenAI chat-completions fields that do not change the answer here: accepted and ignored.
_IGNORED = frozenset({
    "user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
    "safety_identifier", "prediction", "stream_options",
})
# OpenAI fields accepted only at their "off" value; anything else would silently change the answer.
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
}
_WHY_OFF = {
    "presence_penalty": "penalties are not supported by the local model (try the repetition_penalty extension)",
    "frequency_penalty": "penalties are not supported by the local model (try the repetition_penalty extension)",
    "logit_bias": "logit_bias is not supported by this server",
    "tools": "tool calling is not supported by the local model",
    "tool_choice": "tool calling is not supported by the local model",
    "functions": "function calling is not supported by the local model",
    "function_call": "function calling is not supported by the local model",
    "modalities": "the local model produces text only",
    "audio": "the local model produces text only",
    "web_search_options": "web search is not available here",
    "reasoning_effort": "the local model is not a reasoning model",
    "verbosity": "verbosity is not supported by the local model",
}
_HANDLED = frozenset({
    "model", "messages", "stream", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "seed", "stop", "n", "response_format", "top_k", "repetition_penalty", "logprobs", "top_logprobs",
})
_KNOWN_PATHS = {"/v1/models": "GET", "/v1/chat/completions": "POST"}


# ------------------------------------------------------------------------------------------ errors
class ApiError(Exception):
    """An error answered in OpenAI's JSON shape, with its HTTP status and optional headers."""

    _TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
              404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
              429: "rate_limit_error"}

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
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
    def from_backend(cls, e: BackendError) -> "ApiError":
        status = e.status if 400 <= e.status <= 599 else 500
        headers = {"Retry-After": str(RETRY_AFTER_BUSY_S)} if e.retryable and status in (429, 503) else None
        return cls(status, e.message, code=e.kind, headers=headers)


class _ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready."""


# ----------------------------------------------------------------------------------------- the line
async def wait_in_line(ticket: Any, timeout_s: float) -> None:
    """Wait (off the event loop's back: short polls) until ``ticket``'s turn comes in its engine's line.

    Raises :class:`ApiError` 503 after ``timeout_s``; on any exit without the turn (timeout, the client
    gone) the ticket leaves the line, so a request given up never runs.
    """
    deadline = time.monotonic() + timeout_s
    try:
        while not ticket.wait(0):
            if time.monotonic() > deadline:
                raise ApiError(503, f"The local model stayed busy for {timeout_s:g} s: too many requests are "
                                    "ahead of this one. Retry later.", code="busy",
                               headers={"Retry-After": str(RETRY_AFTER_BUSY_S)})
            await asyncio.sleep(LINE_POLL_S)
    except BaseException:
        ticket.cancel()
        raise


# ------------------------------------------------------------------------------------------- worker
_END = object()


class Generation:
    """One backend stream driven by its own worker thread; the event loop reads its items.

    The worker owns the generator from start to end (a generator cannot be closed from another thread
    while it runs), so stopping is: set :attr:`cancel`; the worker sees it at the next chunk (the
    backend sees it too, inside its generate loop), closes the generator and frees the slot.
    """

    def __init__(self, backend: Backend, messages: list[Message], params: GenParams, *,
                 on_end: Any, request_id: str) -> None:
        self.backend = backend
        self.messages = messages
        self.params = params
        self.cancel = threading.Event()
        self.request_id = request_id
        self.chunks = 0
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self.thread = threading.Thread(target=self._work, name=f"v1-{request_id[-8:]}", daemon=True)

    def start(self) -> "Generation":
        self.thread.start()
        return self

    async def next(self) -> Chunk | BackendError | object:
        """The next chunk, a :class:`BackendError`, or ``_END``."""
        return await self._items.get()

    def stop(self) -> None:
        self.cancel.set()

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # loop closed
            self.cancel.set()

    def _work(self) -> None:
        t0 = time.perf_counter()
        gen = None
        try:
            gen = self.backend.stream(self.messages, self.params, self.cancel)
            for chunk in gen:
                if self.cancel.is_set():
                    break
                self.chunks += 1
                self._put(chunk)
        except BackendError as e:
            self._put(e)
        except Exception as e:  # a bug, not a user error: log it, answer 500 without internals
            log.exception("%s: generation failed", self.request_id)
            self._put(BackendError("The local model failed while answering; see the app log.",
                                   kind="internal", status=500))
        finally:
            if gen is not None:
                try:
                    gen.close()  # the backend's own cleanup: its generate thread ends here
                except Exception:  # pragma: no cover - cleanup must not hide the real outcome
                    log.exception("%s: closing the generation failed", self.request_id)
            self._on_end()
            if self.cancel.is_set():
                log.info("%s: client went away; generation stopped after %d chunk(s); worker ended %.2f s "
                         "after start", self.request_id, self.chunks, time.perf_counter() - t0)
            self._put(_END)


# ------------------------------------------------------------------------------------------- router
def create_router(runtime: Any) -> APIRouter:
    """The ``/v1`` routes for ``runtime`` (an :class:`~llm_levels.runtime.AppRuntime`)."""
    settings = runtime.settings
    loopback = is_loopback(settings.server_name)
    internal_key: str | None = getattr(runtime, "internal_api_key", None)
    max_body = 6 * settings.max_prompt_chars + (1 << 20)  # JSON may escape a character into 6 bytes
    router = APIRouter(prefix="/v1")

    def check_auth(request: Request) -> None:
        configured = secret("LOCAL_API_KEY")
        if loopback and not configured:
            return  # a local learner's machine: open, any key (the openai client always sends one) works
        given = bearer(request.headers.get("authorization"))
        ok = False
        for key in (configured, internal_key):
            # compare_digest on every configured key, so timing says nothing about which matched
            if key and given is not None and hmac.compare_digest(given.encode(), key.encode()):
                ok = True
        if ok:
            return
        if not configured:
            raise ApiError(403, "This endpoint is closed: the app listens on a non-local address "
                                f"({settings.server_name}) and no LOCAL_API_KEY is set. Set LOCAL_API_KEY on the "
                                "server and send it as 'Authorization: Bearer <key>'.", code="endpoint_closed")
        if given is None:
            raise ApiError(401, "Missing API key: send the server's LOCAL_API_KEY as "
                                "'Authorization: Bearer <key>' (the openai client's api_key).",
                           code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})
        raise ApiError(401, "Incorrect API key: use the LOCAL_API_KEY this server was started with.",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    @router.get("/models")
    async def list_models(request: Request):
        try:
            check_auth(request)
            return JSONResponse({"object": "list", "data": [model_card(i) for i in model_ids(runtime)]})
        except ApiError as e:
            return e.response()

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        try:
            check_auth(request)
            if model_id not in model_ids(runtime):
                raise unknown_model(model_id, runtime)
            return JSONResponse(model_card(model_id))
        except ApiError as e:
            return e.response()

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        request_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        gen: Generation | None = None
        try:
            check_auth(request)
            body = await read_json(request, max_body)
            req = parse_request(body, settings)
            if req.model not in model_ids(runtime):
                raise unknown_model(req.model, runtime)
            engine = ENGINE_MODEL_IDS.get(req.model, settings.local_engine)
            await until_disconnect(request, load_model(runtime, engine))
            line = runtime.line(engine)
            if line.waiting >= settings.max_queue_size:
                raise ApiError(429, f"The local model is busy: {line.waiting} request(s) are already waiting "
                                    "(MAX_QUEUE_SIZE). Retry in a few seconds.", code="queue_full",
                               headers={"Retry-After": str(RETRY_AFTER_BUSY_S)})
            ticket = line.join()
            try:
                await until_disconnect(request, wait_in_line(ticket, QUEUE_WAIT_S))
                backend = runtime.local_backend(engine=engine, slots=ticket)
                gen = Generation(backend, req.messages, req.params, request_id=request_id,
                                 on_end=ticket.cancel).start()
            except BaseException:
                ticket.cancel()  # out of the line, or the slot passed on: nothing runs for this request
                raise
            log.info("%s: %s stream=%s max_tokens=%d temperature=%g (%d waiting)", request_id, engine, req.stream,
                     req.params.max_new_tokens, req.params.temperature, line.waiting)
            created = int(time.time())
            if not req.stream:
                return JSONResponse(await until_disconnect(request, complete(gen, backend.model, created)))
            # Wait for the first chunk before sending headers, so early failures keep their status code.
            first = await until_disconnect(request, gen.next())
            if isinstance(first, BackendError):
                raise ApiError.from_backend(first)
            return StreamingResponse(
                sse_events(gen, first, backend.model, created, req.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        except _ClientGone:
            if gen is not None:
                gen.stop()
            else:
                log.info("%s: client went away while waiting", request_id)
            return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
        except ApiError as e:
            if gen is not None:
                gen.stop()
            if e.status >= 500 or e.status == 429:
                log.warning("%s: %d %s", request_id, e.status, e.message)
            return e.response()
        except BackendError as e:
            if gen is not None:
                gen.stop()
            return ApiError.from_backend(e).response()
        except Exception:  # a bug: log it, answer in OpenAI's shape without internals
            log.exception("%s: failed", request_id)
            if gen is not None:
                gen.stop()
            return ApiError(500, "The server failed while handling this request; see the app log.",
                            code="internal").response()

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
    async def unknown_route(rest: str, request: Request):
        try:
            check_auth(request)
            path = "/v1/" + rest
            if path in _KNOWN_PATHS:
                raise ApiError(405, f"Use {_KNOWN_PATHS[path]} for {path}.", code="method_not_allowed")
            raise ApiError(404, f"Unknown endpoint {path}: this server offers GET /v1/models and "
                                "POST /v1/chat/completions.", code="unknown_url")
        except ApiError as e:
            return e.response()

    return router


# --------------------------------------------------------------------------------------- pieces
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    def __init__(self, model: str, messages: list[Message], params: GenParams, stream: bool,
                 include_usage: bool) -> None:
        self.model = model
        self.messages = messages
        self.params = params
        self.stream = stream
        self.include_usage = include_usage


def parse_request(body: Any, settings: Any) -> ChatRequest:
    """Validate an OpenAI chat-completions body against what the local backend supports."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    unknown = sorted(k for k in body if k not in _HANDLED and k not in _IGNORED and k not in _OFF_VALUES)
    if unknown:
        raise ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown)}.", param=unknown[0],
                       code="unknown_parameter")
    for name, allowed in _OFF_VALUES.items():
        if name in body and not _is_off(body[name], allowed):
            raise ApiError(400, f"{name}={json.dumps(body[name])[:60]} is not supported: {_WHY_OFF[name]}.",
                           param=name, code="unsupported_parameter")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise ApiError(400, "response_format is not supported: the local model cannot be constrained to JSON; "
                            "leave it out (or use {\"type\": \"text\"}).", param="response_format",
                       code="unsupported_parameter")

    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"You must provide a model parameter (e.g. \"{LOCAL_MODEL_ID}\").", param="model",
                       code="missing_model")

    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise ApiError(400, f"n={json.dumps(n)[:20]} is not supported: this server returns one choice per request "
                            "(n=1); send several requests instead.", param="n", code="unsupported_parameter")

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false.", param="stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise ApiError(400, "stream_options must be an object like {\"include_usage\": true}.",
                       param="stream_options")
    include_usage = bool((opts or {}).get("include_usage"))

    messages = parse_messages(body.get("messages"), settings.max_prompt_chars)

    cap = settings.max_new_tokens_cap
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):
        raw = body.get(name)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise ApiError(400, f"{name} must be a whole number of at least 1.", param=name)
        if raw > cap:
            raise ApiError(400, f"{name}={raw} is more than this server allows: at most {cap} "
                                "(MAX_NEW_TOKENS_CAP). Ask for fewer tokens.", param=name)
        if max_tokens is not None and raw != max_tokens:
            raise ApiError(400, "max_tokens and max_completion_tokens disagree: send only one.", param=name)
        max_tokens = raw

    values: dict[str, Any] = {"max_new_tokens": max_tokens or cap, "temperature": DEFAULT_TEMPERATURE}
    for name in ("temperature", "top_p", "seed", "top_k", "repetition_penalty"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, f"{name} must be a number, not {json.dumps(value)[:40]}.", param=name)
        values[name] = value
    if body.get("stop") is not None:
        values["stop"] = body["stop"]
    values.update(_logprobs(body))
    try:
        params = GenParams.from_dict(values)
    except BackendError as e:
        bad = next((n for n in ("temperature", "top_p", "seed", "stop", "top_k", "repetition_penalty")
                    if n in e.message), None)
        raise ApiError(400, e.message, param=bad) from e
    return ChatRequest(model, messages, params, bool(stream), include_usage)


def _logprobs(body: Mapping[str, Any]) -> dict[str, Any]:
    """``logprobs`` / ``top_logprobs`` as GenParams values (OpenAI's rules: top_logprobs needs logprobs)."""
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ApiError(400, "logprobs must be true or false.", param="logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise ApiError(400, "top_logprobs must be a whole number between 0 and 20.", param="top_logprobs")
    if top is not None and not logprobs:
        raise ApiError(400, "top_logprobs needs logprobs set to true.", param="top_logprobs")
    return {"top_logprobs": top or 0} if logprobs else {}


def openai_logprobs(chunks: Any) -> dict[str, Any] | None:
    """Per-token probabilities (:class:`~llm_levels.core.TokenLogprob`) in OpenAI's ``choice.logprobs`` shape."""
    items = list(chunks)
    if not items:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(t.token, t.logprob), "top_logprobs": [entry(a, lp) for a, lp in t.top]}
                        for t in items], "refusal": None}


def parse_messages(raw: Any, max_chars: int) -> list[Message]:
    """OpenAI ``messages`` -> :class:`Message` list, refusing what a text-only chat model cannot read."""
    if raw is None:
        raise ApiError(400, "Missing required parameter: 'messages' (a list of {\"role\", \"content\"} objects).",
                       param="messages", code="missing_required_parameter")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty list of {\"role\", \"content\"} objects.",
                       param="messages")
    items = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object with a role and a content.",
                           param=f"messages[{i}]")
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            m = {**m, "role": "system"}
        elif role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
            raise ApiError(400, f"messages[{i}]: tool messages are not supported (the local model has no tools).",
                           param=f"messages[{i}]", code="unsupported_parameter")
        content = m.get("content")
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"messages[{i}]: only text content parts are supported (got {kind!r}); "
                                        "the local model reads text only.", param=f"messages[{i}].content",
                                   code="unsupported_content")
        items.append(m)
    try:
        messages = messages_from_dicts(items)
        check_conversation(messages, max_chars=max_chars)
    except BackendError as e:
        raise ApiError(400, e.message, param="messages") from e
    return messages


async def read_json(request: Any, max_bytes: int) -> Any:
    """The request body as JSON; 413 past ``max_bytes``, 400 when it does not parse."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, f"The request body is too large (more than {max_bytes:,} bytes; see MAX_PROMPT_CHARS).")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > max_bytes:
            raise ApiError(413, f"The request body is too large (more than {max_bytes:,} bytes; "
                                "see MAX_PROMPT_CHARS).")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"We could not parse the JSON body of your request ({e}). Send a JSON object with "
                            "'model' and 'messages'.", code="invalid_json") from None


def _is_off(value: Any, allowed: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of the "feature off" values (same type, or both plain numbers)."""
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return any((type(value) is type(v) or (num(value) and num(v))) and value == v for v in allowed)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (the default bind, 127.0.0.1)."""
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def model_ids(runtime: Any) -> list[str]:
    """Ids accepted for the local model: ``local``, one per engine, its name, and ``LOCAL_MODEL`` unless that
    is a path."""
    ids = [LOCAL_MODEL_ID, *ENGINE_MODEL_IDS]
    for name in (_model_name(runtime), runtime.settings.local_model):
        if name and name not in ids and not _looks_like_path(name):
            ids.append(name)
    return ids


def _model_name(runtime: Any) -> str | None:
    """The default local model's own id (e.g. ``SmolLM2-135M-Instruct``), loaded or not, without loading it."""
    try:
        loaded = runtime.models.peek()
        if loaded is not None and loaded.model_id:
            return loaded.model_id
        from .models import resolve  # cheap: finds files or checks the id, never loads

        return resolve(runtime.settings.local_model, runtime.settings).model_id or None
    except Exception:  # informative only: never fail a request on it
        return None


def _looks_like_path(name: str) -> bool:
    # A folder path would tell strangers about the server's disk; Hub ids have exactly one "/".
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def model_card(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "llm-levels"}


def unknown_model(model: str, runtime: Any) -> ApiError:
    return ApiError(404, f"The model {model[:80]!r} does not exist on this server. Use one of: "
                         f"{', '.join(model_ids(runtime))}.", param="model", code="model_not_found")


async def load_model(runtime: Any, engine: str) -> Any:
    """The local model on ``engine``, waiting (off the event loop) up to :data:`MODEL_WAIT_S` for it to load."""
    import anyio

    def get() -> Any:
        return runtime.models.get(engine=engine)

    try:
        with anyio.fail_after(MODEL_WAIT_S):
            # abandon_on_cancel: if we stop waiting, the load goes on in its thread (it is shared and cached)
            return await anyio.to_thread.run_sync(get, abandon_on_cancel=True)
    except TimeoutError:
        status = _safe_status(runtime, engine)
        raise ApiError(503, f"The local model is still loading{status}. Retry in a few seconds.",
                       code="model_loading", headers={"Retry-After": str(RETRY_AFTER_LOADING_S)}) from None
    except BackendError as e:
        raise ApiError(e.status if e.status >= 500 else 503,
                       f"The local model is not available: {e.message}", code=e.kind) from e


def _safe_status(runtime: Any, engine: str | None = None) -> str:
    """`` (42%, Loading the weights)`` from the model manager's status, or nothing."""
    try:
        st = runtime.models.status(engine=engine)
    except Exception:  # informative only
        return ""
    parts = []
    if isinstance(getattr(st, "fraction", None), (int, float)):
        parts.append(f"{st.fraction:.0%}")
    if getattr(st, "message", ""):
        parts.append(str(st.message))
    return f" ({', '.join(parts)})" if parts else ""


async def until_disconnect(request: Any, awaitable: Any) -> Any:
    """Await ``awaitable``, but raise :class:`_ClientGone` (cancelling it) if the client disconnects first.

    Only used before a response starts (the body is already read, so ``receive`` can only report a
    disconnect); once streaming, Starlette itself cancels the body iterator on disconnect.
    """
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watcher.cancel()
        raise
    if task in done:
        watcher.cancel()
        return task.result()
    task.cancel()
    try:
        await task  # let it clean up (e.g. leave the queue) before we answer
    except BaseException:
        pass
    raise _ClientGone()


async def _disconnected(request: Any) -> None:
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


async def complete(gen: Generation, model: str, created: int) -> dict[str, Any]:
    """Drain a generation into one ``chat.completion`` object."""
    parts: list[str] = []
    tokens: list[Any] = []
    usage = None
    finish = None
    try:
        while True:
            item = await gen.next()
            if item is _END:
                break
            if isinstance(item, BackendError):
                raise ApiError.from_backend(item)
            assert isinstance(item, Chunk)
            parts.append(item.text)
            tokens.extend(item.logprobs)
            usage = item.usage or usage
            finish = item.finish_reason or finish
    except BaseException:
        gen.stop()
        raise
    return {
        "id": gen.request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(parts), "refusal": None},
            "logprobs": openai_logprobs(tokens),
            "finish_reason": _finish(finish),
        }],
        "usage": _usage(usage),
    }


async def sse_events(gen: Generation, first: Any, model: str, created: int,
                     include_usage: bool) -> AsyncIterator[bytes]:
    """The server-sent events of one streamed answer; stops the generation if the client goes away."""
    base = {"id": gen.request_id, "object": "chat.completion.chunk", "created": created, "model": model}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = ()) -> bytes:
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": openai_logprobs(logprobs),
                                          "finish_reason": finish}], **extra})

    usage = None
    finish = None
    ended = False
    item = first
    try:
        yield chunk({"role": "assistant", "content": ""})
        while item is not _END:
            if isinstance(item, BackendError):
                # Headers are sent: report it the way OpenAI does mid-stream (the openai client raises APIError).
                err = ApiError.from_backend(item)
                yield _sse(err.body())
                ended = True
                return
            assert isinstance(item, Chunk)
            if item.text or item.logprobs:
                yield chunk({"content": item.text}, logprobs=item.logprobs)
            usage = item.usage or usage
            finish = item.finish_reason or finish
            item = await gen.next()
        yield chunk({}, _finish(finish))
        if include_usage:
            yield _sse({**base, "choices": [], "usage": _usage(usage)})
        yield b"data: [DONE]\n\n"
        ended = True
    finally:
        if not ended:
            gen.stop()  # the client went away (Starlette cancelled us): the worker closes the backend stream


def _sse(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _finish(reason: str | None) -> str:
    return reason if reason in ("stop", "length") else "stop"


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens}

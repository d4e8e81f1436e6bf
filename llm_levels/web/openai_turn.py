"""One ``/v1`` request's walk through the turn service: into the engine's line, to the model, and back.

:func:`start_turn` refuses a request when the line is full (429), then starts the turn (``run_turn``
checks it once: a bad one raises before anything happens). :func:`until_ready` reads its events until the
answer starts, answering 503 + ``Retry-After`` when the model loads for longer than :data:`MODEL_WAIT_S`
or the line moves too slowly (:data:`QUEUE_WAIT_S`), and 429 when the line filled up while the model
loaded. A request for ``n`` answers is ``n`` such turns side by side (:func:`start_turns`, :func:`all_started`).
Then :func:`collect_all` (one ``chat.completion``) or :func:`sse_events` (server-sent chunks, each naming its
answer's index) write the answers. :func:`guarded` stops the turn when the client goes away before the answer,
so a request given up leaves the line or stops its generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request

from ..core import PARAM_SPECS, BackendError, GenParams
from ..turns import Delta, Done, Event, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from .openai_answers import ChunkWriter, sse_error
from .openai_errors import RETRY_AFTER_BUSY_S, RETRY_AFTER_LOADING_S, ApiError, ClientGone
from .openai_schema import ChatCompletionRequest
from .turn_stream import END, TurnStream

log = logging.getLogger("llm_levels.web.openai")
T = TypeVar("T")

#: How long a request waits for the local model to finish loading before it gets 503 + Retry-After.
MODEL_WAIT_S = 30.0
#: How long a request waits in its engine's line before it gets 503 + Retry-After. Long on purpose: the
#: line's length is bounded by MAX_QUEUE_SIZE, and a client that gives up leaves the line.
QUEUE_WAIT_S = 300.0
#: Seconds between two looks at a waiting request (how soon a client gone is taken out of the line).
LINE_POLL_S = 0.1
#: Seeds wrap around below this (``seed + i`` for the ``i``-th of ``n`` answers stays a valid seed).
SEED_LIMIT = int(PARAM_SPECS["seed"].maximum or 2**31 - 1) + 1


def start_turn(
    runtime: Any, engine: str, body: ChatCompletionRequest, request_id: str, params: GenParams | None = None
) -> TurnStream:
    """Start the turn for a validated request on ``engine`` (with ``params`` instead of the body's when given):
    its events are read from the returned stream."""
    line = runtime.line(engine)
    if line.waiting >= runtime.settings.max_queue_size:
        raise queue_full(line.waiting)
    stream = TurnStream(request_id)
    # No browser session: the per-session rate limit is the UI's; /v1 is bounded by its engine's line.
    turn = TurnRequest(
        runtime.local_option(engine), body.conversation, params or body.params, session_id=None, engine=engine
    )
    return stream.start(run_turn(runtime, turn, cancel=stream.cancel, poll_s=LINE_POLL_S))


def start_turns(runtime: Any, engine: str, body: ChatCompletionRequest, request_id: str) -> list[TurnStream]:
    """One turn per answer asked for (``n``), side by side in the engine's slots. With a seed, answer ``i``
    uses ``seed + i``: the answers differ from each other, and the same request gives them all again."""
    p = body.params
    streams: list[TurnStream] = []
    try:
        for i in range(body.choices):
            seed = None if p.seed is None else (p.seed + i) % SEED_LIMIT
            streams.append(start_turn(runtime, engine, body, request_id, p if i == 0 else p.with_(seed=seed)))
    except BaseException:
        stop_all(streams, "a later answer of the request was refused")
        raise
    return streams


async def all_started(request: Request, streams: list[TurnStream], max_queue_size: int) -> tuple[str, list[Event]]:
    """Wait until every answer has started (a failure before that is the request's HTTP error): the model's name
    and each stream's first event after :class:`Started`. Any failure, or the client leaving, stops them all."""
    model, firsts = "", []
    try:
        for stream in streams:
            model, first = await guarded(request, stream, until_ready(stream, max_queue_size))
            firsts.append(first)
    except BaseException as e:
        stop_all(streams, f"ended by {type(e).__name__}")
        raise
    return model, firsts


async def collect_all(request: Request, streams: list[TurnStream], firsts: list[Event]) -> list[Done]:
    """Every answer, finished, in order (they run side by side); any failure stops them all."""
    answers: list[Done] = []
    try:
        for stream, first in zip(streams, firsts):
            answers.append(await guarded(request, stream, collect(stream, first)))
    except BaseException as e:
        stop_all(streams, f"ended by {type(e).__name__}")
        raise
    return answers


def stop_all(streams: list[TurnStream], why: str) -> None:
    for stream in streams:
        stream.stop(why)


async def until_ready(stream: TurnStream, max_queue_size: int) -> tuple[str, Event]:
    """Read events until the answer starts: the model's name and the first event after :class:`Started`."""
    loading_since = waiting_since = None
    model = None
    while True:
        event = await stream.next()
        now = time.monotonic()
        if isinstance(event, Loading):
            loading_since = now if loading_since is None else loading_since
            if now - loading_since > MODEL_WAIT_S:
                raise still_loading(event)
        elif isinstance(event, Waiting):
            if waiting_since is None and event.ahead >= max_queue_size:
                raise queue_full(event.ahead)  # the line filled up while the model was loading
            waiting_since = now if waiting_since is None else waiting_since
            if now - waiting_since > QUEUE_WAIT_S:
                raise ApiError(
                    503,
                    f"The local model stayed busy for {QUEUE_WAIT_S:g} s: too many requests are "
                    "ahead of this one. Retry later.",
                    code="busy",
                    headers={"Retry-After": str(RETRY_AFTER_BUSY_S)},
                )
        elif isinstance(event, Started):
            model = event.model
        elif isinstance(event, Failed) and model is None:
            e = event.error
            raise ApiError(
                e.status if e.status >= 500 else 503, f"The local model is not available: {e.message}", code=e.kind
            )
        elif event is END:
            raise ApiError(500, "The answer ended before it began; see the app log.", code="internal")
        else:
            return model or "", event


async def collect(stream: TurnStream, first: Event) -> Done:
    """Read the rest of the answer (its text comes whole with :class:`Done`)."""
    event: Event | object = first
    while not isinstance(event, Done):
        if isinstance(event, Failed):
            raise ApiError.from_backend(event.error)
        if event is END:
            raise ApiError(500, "The answer ended before it was complete; see the app log.", code="internal")
        event = await stream.next()
    return event


async def sse_events(streams: list[TurnStream], firsts: list[Event], writer: ChunkWriter) -> AsyncIterator[bytes]:
    """The server-sent events of the streamed answers (one, or ``n`` side by side: each chunk names its answer's
    index, as OpenAI's do); stops every turn if the client goes away or one answer fails."""
    events: asyncio.Queue[tuple[int, Event | object]] = asyncio.Queue()

    async def pump(index: int, stream: TurnStream, event: Event | object) -> None:
        while True:
            await events.put((index, event))
            if isinstance(event, (Done, Failed)) or event is END:
                return
            event = await stream.next()

    pumps = [asyncio.ensure_future(pump(i, s, f)) for i, (s, f) in enumerate(zip(streams, firsts))]
    answers: dict[int, Done] = {}
    ended = False
    try:
        for i in range(len(streams)):
            yield writer.role(i)
        while not ended:
            i, event = await events.get()
            if isinstance(event, Delta):
                yield writer.text(event.text, event.tokens, index=i)
            elif isinstance(event, Done):
                answers[i] = event
                yield writer.finish(event, index=i)
                if len(answers) == len(streams):
                    ended = True
                    yield writer.close(answers[k] for k in sorted(answers))
            elif isinstance(event, Failed) or event is END:
                ended = True  # headers are sent: report it the way OpenAI does mid-stream
                error = (
                    event.error
                    if isinstance(event, Failed)
                    else BackendError("The answer ended before it was complete; see the app log.", kind="internal")
                )
                yield sse_error(ApiError.from_backend(error).body())
    except Exception:  # a bug while writing: the log has it, the client gets an error event
        ended = True
        log.exception("%s: streaming the answer failed", streams[0].request_id)
        yield sse_error(ApiError(500, "The server failed while streaming; see the app log.", code="internal").body())
    finally:
        for task in pumps:
            task.cancel()
        if not ended or len(answers) < len(streams):
            stop_all(streams, "client went away" if not ended else "another answer of the request failed")


async def guarded(request: Request, stream: TurnStream, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; if the client disconnects first, stop the turn and raise :class:`ClientGone`.
    Any other failure stops the turn too (a request answered with an error never runs on).

    Only used before a response starts (the body is already read, so ``receive`` can only report a
    disconnect); once streaming, Starlette itself closes the body iterator on disconnect.
    """
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            raise ClientGone()
        return task.result()
    except ClientGone:
        stream.stop("client went away")
        raise
    except BaseException as e:
        stream.stop(f"answered {e.status}" if isinstance(e, ApiError) else f"ended by {type(e).__name__}")
        raise
    finally:
        task.cancel()
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


def queue_full(waiting: int) -> ApiError:
    return ApiError(
        429,
        f"The local model is busy: {waiting} request(s) are already waiting (MAX_QUEUE_SIZE). Retry in a few seconds.",
        code="queue_full",
        headers={"Retry-After": str(RETRY_AFTER_BUSY_S)},
    )


def still_loading(event: Loading) -> ApiError:
    parts = ([f"{event.fraction:.0%}"] if event.fraction is not None else []) + (
        [event.message] if event.message else []
    )
    status = f" ({', '.join(parts)})" if parts else ""
    return ApiError(
        503,
        f"The local model is still loading{status}. Retry in a few seconds.",
        code="model_loading",
        headers={"Retry-After": str(RETRY_AFTER_LOADING_S)},
    )

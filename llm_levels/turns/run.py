"""``run_turn``: any turn, for any face, as one stream of typed events (see :mod:`.events`)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import Backend, BackendError, GenParams, Message, TokenLogprob, check_message_count
from ..metrics import Measured, measure
from ..text_clean import clean_text, clean_value
from .events import Delta, Done, Event, Failed, Started
from .opener import BackendOpener

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import AppRuntime

log = logging.getLogger(__name__)

#: Seconds between two looks at a waiting turn's place in line (also how soon Stop takes it out of the line).
WAIT_POLL_S = 0.25
#: Longest stop string: each one is looked for in the answer at every token.
MAX_STOP_CHARS = 500


@dataclass(frozen=True)
class TurnRequest:
    """What a face asks for: a backend (a picker id, or one it built itself), the conversation, the settings.

    ``option_id`` is a picker id (``local``, ``local:<engine>``, ``hosted:<name>``, ``app-endpoint``);
    ``spec`` and ``engine`` pick another local model or engine (the Local tab's); ``backend`` is a backend
    the face built itself, or a function that builds one (the Hosted API tab, with the model and base URL a
    user typed): a function is called after the checks, in the turn's opener, once the local model is
    loaded when ``option_id`` is the app's own endpoint; a BackendError it raises is the turn's Failed.
    ``params`` may be raw values from a form or a request body: they are checked with the conversation, once.
    """

    option_id: str
    messages: Sequence[Message]
    params: GenParams | Mapping[str, Any] | None = None
    session_id: str | None = None
    api_key: str | None = None
    spec: str | None = None
    engine: str | None = None
    backend: Backend | Callable[[], Backend] | None = None


def run_turn(
    runtime: AppRuntime, request: TurnRequest, *, cancel: threading.Event | None = None, poll_s: float = WAIT_POLL_S
) -> Iterator[Event]:
    """Check ``request`` now (a bad one raises :class:`BackendError` before anything happens), then return the
    turn's events: :class:`Loading`/:class:`Waiting` while the backend gets ready, :class:`Started`,
    :class:`Delta` per piece, and :class:`Done` or :class:`Failed` last.

    Every text in ``request`` is made valid first (:func:`cleaned`), and a conversation of more than
    ``MAX_MESSAGES`` messages is refused before anything looks at them one by one.

    Closing the iterator (a face's Stop) or setting ``cancel`` stops the work: a turn still in line
    leaves it and never starts, a running one makes its backend stop generating.
    """
    request, params = checked(runtime, request)
    return _events(runtime, request, params, cancel, poll_s)


def checked(runtime: AppRuntime, request: TurnRequest) -> tuple[TurnRequest, GenParams]:
    """``request`` made valid (:func:`cleaned`) and its settings checked with the conversation, once (it counts
    against the session's request limit); raises :class:`BackendError` for a request that cannot run."""
    request = cleaned(request)
    # The cheap bound first: how many messages the template and the fitting will have to walk through.
    check_message_count(len(request.messages), runtime.settings.max_messages)
    params = runtime.check_request(request.session_id, list(request.messages), request.params)
    if any(len(s) > MAX_STOP_CHARS for s in params.stop):
        raise BackendError(
            f"A stop string is too long (the limit is {MAX_STOP_CHARS} characters): shorten it.",
            kind="bad_request",
            status=400,
        )
    return request, params


def cleaned(request: TurnRequest) -> TurnRequest:
    """``request`` with every text from outside made valid (:func:`~llm_levels.text_clean.clean_text`): a lone
    surrogate or a NUL would otherwise fail far away, in a tokenizer, a log line or a JSON encoder."""
    messages = request.messages
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, Message) for m in messages):
        raise BackendError("The conversation must be a list of messages.", kind="bad_request", status=400)
    changes: dict[str, Any] = {}
    texts = [clean_text(m.content) for m in messages]
    if any(text is not m.content for text, m in zip(texts, messages)):
        changes["messages"] = tuple(Message(m.role, text) for text, m in zip(texts, messages))
    params = request.params
    if isinstance(params, GenParams) and params.stop:
        stop = tuple(clean_text(s) for s in params.stop)
        if stop != params.stop:
            changes["params"] = params.with_(stop=stop)
    elif isinstance(params, Mapping):
        changes["params"] = {k: clean_value(v) for k, v in params.items()}
    return dataclasses.replace(request, **changes) if changes else request


def answer_text(events: Iterator[Event], on_event: Callable[[Event], None] | None = None) -> str:
    """Read a turn to its end and return the answer's text (for faces that want only the answer: the Lab,
    the ``icl`` command); a failed turn raises its :class:`BackendError`; a stopped one returns "".
    ``on_event`` sees every other event (progress, the backend that started)."""
    try:
        for event in events:
            if isinstance(event, Done):
                return event.text
            if isinstance(event, Failed):
                raise event.error
            if on_event is not None:
                on_event(event)
    finally:
        close = getattr(events, "close", None)
        if callable(close):
            close()
    return ""


def _events(
    runtime: AppRuntime, request: TurnRequest, params: GenParams, shared: threading.Event | None, poll_s: float
) -> Iterator[Event]:
    # The caller's event may be shared by several turns (Compare): only a turn's own event is set when it ends.
    cancel = shared or threading.Event()
    opener: BackendOpener | None = None
    measured: Measured | None = None
    try:
        backend = request.backend
        if not isinstance(backend, Backend):
            opener = BackendOpener(
                runtime, request.option_id, request.api_key, spec=request.spec, engine=request.engine, build=backend
            )
            while not opener.wait(poll_s):  # each event is also a point where the face can stop the turn
                if cancel.is_set():
                    return
                yield opener.progress_event()
            backend = opener.result()
        yield Started(backend)
        measured = measure(
            backend.stream(list(request.messages), params, cancel), backend=backend.name, model=backend.model
        )
        truncated = 0
        tokens: list[TokenLogprob] = []
        for chunk in measured:
            if isinstance(chunk.raw, dict) and chunk.raw.get("truncated_turns"):
                truncated = int(chunk.raw["truncated_turns"])
            if chunk.text or chunk.logprobs:
                tokens.extend(chunk.logprobs)
                yield Delta(chunk.text, chunk.logprobs)
        yield Done(
            measured.text,
            measured.metrics,
            measured.reply.finish_reason,
            truncated,
            tuple(tokens),
            note=measured.reply.note,
        )
    except BackendError as e:
        partial = (measured.text if measured is not None else "") or e.partial_text
        yield Failed(e, partial, measured.metrics if measured is not None else None)
    except Exception as e:  # a bug, not a backend failure: one line for the user, the traceback in the log
        log.exception("turn on %s failed", request.option_id)
        partial = measured.text if measured is not None else ""
        yield Failed(
            BackendError(
                f"The app failed while answering ({type(e).__name__}); see the server log.",
                kind="internal",
                partial_text=partial,
            ),
            partial,
        )
    finally:
        if shared is None:
            cancel.set()
        # Stop (the face closed this generator) lands here too: closing the stream makes the backend stop.
        if measured is not None:
            measured.close()
        if opener is not None:
            opener.close()  # out of the line if it was still waiting: a stopped turn never starts

"""``run_choices``: several answers to one prompt in one request, as a hosted API gives them (OpenAI's ``n``).

Level 2 of the seed article asks the API for ``n=5`` answers at once; the sampling columns and talk steps do
the same against a hosted backend. The request is checked and its backend opened exactly as for
:func:`~llm_levels.turns.run.run_turn`; the events are :class:`Started`, then one :class:`Done` per answer in
the server's order, or one :class:`Failed`. The answers are not streamed (``n`` answers arrive together).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..core import Backend, BackendError, Chunk, GenParams
from ..metrics import TurnMetrics
from .events import Done, Event, Failed, Started
from .opener import BackendOpener
from .run import WAIT_POLL_S, TurnRequest, checked

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import AppRuntime

log = logging.getLogger(__name__)


def run_choices(
    runtime: AppRuntime,
    request: TurnRequest,
    n: int,
    *,
    cancel: threading.Event | None = None,
    poll_s: float = WAIT_POLL_S,
) -> Iterator[Event]:
    """Check ``request`` now (as :func:`run_turn` does), then return its events: ``n`` answers from one
    request to a backend that gives several (``answers(messages, params, n, cancel)``: the hosted one).
    A backend without it fails the turn with a message saying so."""
    request, params = checked(runtime, request)
    return _events(runtime, request, params, n, cancel or threading.Event(), poll_s)


def _events(
    runtime: AppRuntime, request: TurnRequest, params: GenParams, n: int, cancel: threading.Event, poll_s: float
) -> Iterator[Event]:
    opener: BackendOpener | None = None
    try:
        backend = request.backend
        if not isinstance(backend, Backend):
            opener = BackendOpener(
                runtime, request.option_id, request.api_key, spec=request.spec, engine=request.engine, build=backend
            )
            while not opener.wait(poll_s):
                if cancel.is_set():
                    return
                yield opener.progress_event()
            backend = opener.result()
        answers = getattr(backend, "answers", None)
        if not callable(answers):
            raise BackendError(f"{backend.name} gives one answer per request: ask it {n} times.", kind="bad_request")
        yield Started(backend)
        t0 = time.perf_counter()
        chunks: list[Chunk] = answers(list(request.messages), params, n, cancel)
        total_s = time.perf_counter() - t0
        prompt = chunks[0].usage.input_tokens if chunks and chunks[0].usage else None
        for chunk in chunks:
            yield Done(
                chunk.text, _metrics(backend, chunk, prompt, total_s), chunk.finish_reason, tokens=chunk.logprobs
            )
    except BackendError as e:
        yield Failed(e)
    except Exception as e:  # a bug, not a backend failure: one line for the user, the traceback in the log
        log.exception("%d answers on %s failed", n, request.option_id)
        yield Failed(
            BackendError(f"The app failed while answering ({type(e).__name__}); see the server log.", kind="internal")
        )
    finally:
        if opener is not None:
            opener.close()


def _metrics(backend: Backend, chunk: Chunk, prompt_tokens: int | None, total_s: float) -> TurnMetrics:
    """One answer's numbers: the request's time (the answers arrive together, so no time to the first token),
    the prompt's tokens, and the answer's own tokens when they are known (counted from its per-token
    probabilities; a server counts only the request's total)."""
    return TurnMetrics(
        ttft_s=None,
        total_s=total_s,
        tokens_per_s=None,
        input_tokens=prompt_tokens,
        output_tokens=len(chunk.logprobs) if chunk.logprobs else None,
        finish_reason=chunk.finish_reason,
        backend=backend.name,
        model=backend.model,
    )

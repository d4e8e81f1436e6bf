"""Getting a turn's backend ready: the local model loaded, and a place in its engine's line taken.

:class:`BackendOpener` does this in a worker thread, so a face can keep reporting what is happening
("the model is loading (NN%)", "N ahead of you") and can stop the turn at any moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..core import Backend, BackendError
from ..runtime import APP_ENDPOINT
from ..slots import SlotTicket
from .events import Loading, Waiting

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import AppRuntime


class BackendOpener:
    """Gets the backend for a picker id ready in a worker thread: poll :meth:`wait`, then :meth:`result`,
    and call :meth:`close` when the request ends (normally, on an error, or on Stop).

    Ready means built and, for the local model, at the front of the line for a generation slot:

    - building may mean waiting for the local model to load (tens of seconds on a CPU); for the app's
      own endpoint the model is made ready first, so the HTTP request does not time out while it loads;
    - then (local model, ``take_turn``) the opener takes a place in ``runtime.local_slots`` and builds
      the backend with that :class:`~llm_levels.slots.SlotTicket`: while it waits,
      :meth:`progress_title`/:meth:`progress_text` say how many requests are ahead ("⏳ Waiting for the
      local model — 2 ahead of you"), and once :meth:`wait` is True the backend's stream starts at once
      and frees the slot when its generation ends.

    The wait is a phase of its own, before the stream, because a backend's stream yields only text
    (``core.Chunk``): the caller polls between two screen updates instead of blocking in the stream,
    which is also where Gradio's Stop can close its generator; :meth:`close` then takes the ticket out
    of the line at once (a request stopped while it waits never starts). Hosted backends never queue
    here. ``spec`` picks a local model other than ``LOCAL_MODEL`` (the Local tab's); ``take_turn=False``
    only builds (for a backend used to render a prompt, not to generate).
    """

    def __init__(
        self,
        runtime: AppRuntime,
        option_id: str,
        api_key: str | None = None,
        *,
        spec: str | None = None,
        take_turn: bool = True,
        engine: str | None = None,
        build: Callable[[], Backend] | None = None,
    ) -> None:
        self.runtime = runtime
        self.option_id = option_id
        self.spec = spec or runtime.spec_of(option_id)  # a picker id may name a model (a saved adapter)
        #: The local engine this request runs on (None for a hosted backend).
        self.engine = engine or runtime.engine_of(option_id)
        self._take_turn = take_turn
        self._api_key = api_key
        #: Builds a hosted backend the face configured itself (its own model, base URL, stream flag).
        self._build = build
        self._backend: Backend | None = None
        self._error: BaseException | None = None
        self._built = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        #: This request's place in the local model's line (local model only, once it is loaded).
        self.ticket: SlotTicket | None = None
        threading.Thread(target=self._run, name=f"open-{option_id}", daemon=True).start()

    def _run(self) -> None:
        try:
            if self.engine is not None:
                # Load first: the line is for generating, not loading.
                self.runtime.models.get(self.spec, engine=self.engine)
                ticket = self.runtime.line(self.engine).join() if self._take_turn else None
                with self._lock:
                    if self._closed and ticket is not None:
                        ticket.cancel()  # the request already ended: do not keep a place for it
                    self.ticket = ticket
                try:
                    self._backend = self.runtime.local_backend(self.spec, engine=self.engine, slots=ticket)
                except BaseException:
                    if ticket is not None:
                        ticket.cancel()
                    raise
            else:
                if self.option_id == APP_ENDPOINT:
                    self.runtime.models.get()  # the endpoint serves this model: have it loaded first
                if self._build is not None:
                    self._backend = self._build()
                else:
                    self._backend = self.runtime.backend(self.option_id, api_key=self._api_key)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread by result()
            self._error = e
        finally:
            self._built.set()

    def wait(self, timeout: float) -> bool:
        """True once ready: built (or failed) and, with a ticket, its turn came (or it left the line)."""
        t0 = time.monotonic()
        if not self._built.wait(timeout):
            return False
        ticket = self.ticket
        if ticket is None or self._error is not None:
            return True
        return ticket.wait(max(0.0, timeout - (time.monotonic() - t0)))

    def ahead(self) -> int | None:
        """How many requests are before this one in the local model's line; None when not in line."""
        ticket = self.ticket
        return ticket.ahead if ticket is not None else None

    def progress_event(self) -> Loading | Waiting:
        """What the turn is waiting for now: its place in the engine's line, or the model's loading."""
        ahead = self.ahead()
        if ahead is not None:
            return Waiting(ahead, self.runtime.line(self.engine).limit)
        if self.engine is not None or self.option_id == APP_ENDPOINT:
            status = self.runtime.models.status(self.spec if self.engine else None, engine=self.engine)
            if getattr(status, "state", "") == "loading":
                return Loading(float(status.fraction), str(status.message or ""))
            return Loading(None, "Getting the local model ready…")
        return Loading(None, "Connecting…")

    def progress_title(self) -> str:
        """A short title for a "please wait" note (see :func:`llm_levels.ui.shared.wait_title`)."""
        from ..ui.shared import wait_title

        return wait_title(self.progress_event())

    def progress_text(self) -> str:
        from ..ui.shared import wait_text

        return wait_text(self.progress_event())

    def result(self) -> Backend:
        """The backend, or the BackendError that building it raised (other errors wrapped in one)."""
        self._built.wait()
        if isinstance(self._error, BackendError):
            raise self._error
        if self._error is not None:
            raise BackendError(
                f"Could not prepare this backend: {type(self._error).__name__}: {self._error}", kind="internal"
            ) from self._error
        assert self._backend is not None
        return self._backend

    def close(self) -> None:
        """The request is over: leave the line if still in it, or pass on a slot the stream never took.
        (A slot the stream took is given back by the backend when its generation really ends.)"""
        with self._lock:
            self._closed = True
            ticket = self.ticket
        if ticket is not None:
            ticket.cancel()

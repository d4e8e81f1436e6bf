"""Per-session state and small helpers shared between tabs (created once inside the Blocks).

- :class:`SessionState`: the Gradio ``State`` components several tabs read (the session's API key).
- :func:`local_queue`: the queue lane for events that run the local model, so users waiting for it
  see their position in Gradio's queue.
- :class:`BackendOpener`: builds a backend in a worker thread so a tab can show "the model is
  loading (NN%)" instead of freezing while the local model loads.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..core import Backend, BackendError
from ..runtime import APP_ENDPOINT, LOCAL, SESSION_HOSTED, AppRuntime

#: The Gradio concurrency id of every event that generates with the local model.
LOCAL_QUEUE_ID = "local-model"


@dataclass
class SessionState:
    """Gradio State components that several tabs read.

    ``api_key``: a key the user typed in the Hosted-API tab. It lives only in this browser session's
    server-side state (``gr.State`` is never sent to the page) and is used by Chat and Compare too.
    """

    api_key: gr.State


def create_session_state() -> SessionState:
    return SessionState(api_key=gr.State(None))


def local_queue(runtime: AppRuntime) -> dict[str, Any]:
    """Event keyword arguments that put an event in the local model's queue lane.

    Gradio runs at most ``LOCAL_CONCURRENCY`` of these at once (all events sharing the id count
    together) and shows everyone else their place in the queue.
    """
    return {"concurrency_id": LOCAL_QUEUE_ID, "concurrency_limit": runtime.settings.local_concurrency}


def checked_slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """A ``gr.Slider`` whose value, when it comes through the API rather than the slider, is checked
    with a one-line message that names the setting and its range.

    Gradio's own check fails on a non-number with a multi-line "Could not preprocess input component"
    text and a ``TypeError``; here ``"abc"``, ``None``, ``NaN`` or ``1e9`` get e.g. "Longest answer
    (tokens) must be a number between 1 and 1024, not 'abc'." Numeric strings ("12") are accepted.
    (The check replaces the instance's ``preprocess``: a subclass would make Gradio write a ``.pyi``
    file next to this module at import time.)
    """
    slider = gr.Slider(*args, **kwargs)
    original = slider.preprocess
    name = slider.label or "This setting"
    lo, hi = slider.minimum, slider.maximum

    def preprocess(payload: Any) -> float:
        shown = repr(payload) if len(repr(payload)) <= 40 else repr(payload)[:37] + "..."
        bad = gr.Error(f"{name} must be a number between {lo:g} and {hi:g}, not {shown}.")
        if isinstance(payload, bool):
            raise bad
        try:
            num = float(payload)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if not math.isfinite(num) or num < lo or num > hi:
            raise bad
        return original(num)

    slider.preprocess = preprocess  # type: ignore[method-assign]
    return slider


# --------------------------------------------------------------------------------- backend choices
SESSION_LABEL = "Hosted API · OpenAI (with the key you enter in the Hosted API tab)"


def backend_choices(runtime: AppRuntime) -> list[tuple[str, str]]:
    """(label, id) pairs for a backend picker: the runtime's options, plus "OpenAI with your own key"
    when no hosted endpoint is configured (a key typed in the Hosted API tab then makes it work)."""
    choices = [(o.label, o.id) for o in runtime.backend_options()]
    if not runtime.hosted_endpoints():
        choices.insert(1, (SESSION_LABEL, SESSION_HOSTED))
    return choices


def uses_local_model(option_id: str) -> bool:
    """Whether a picker id ends up generating with this app's local model."""
    return option_id in (LOCAL, APP_ENDPOINT)


def is_usable(runtime: AppRuntime, option_id: str, api_key: str | None) -> bool:
    """Whether a backend can be expected to answer: local ones always; a hosted one when it has a key
    (configured or this session's) or a base URL of its own (a local server may need no key)."""
    if uses_local_model(option_id):
        return True
    if option_id == SESSION_HOSTED:
        return bool(api_key)
    name = option_id.split(":", 1)[-1]
    for ep in runtime.hosted_endpoints():
        if ep.name == name:
            return bool(api_key or ep.api_key() or ep.base_url)
    return False


def short_label(option_id: str) -> str:
    """A few words for a picker id, for table rows and chart bars."""
    if option_id == LOCAL:
        return "Local model"
    if option_id == APP_ENDPOINT:
        return "App endpoint (/v1)"
    if option_id == SESSION_HOSTED:
        return "OpenAI (your key)"
    return option_id.split(":", 1)[-1]


# ------------------------------------------------------------------------------------ model status
def model_status_fields(status: Any) -> dict[str, Any]:
    """The fields of ``runtime.models.status()`` this UI uses, read defensively."""
    state = str(getattr(status, "state", "") or "")
    frac = getattr(status, "fraction", None)
    try:
        frac = None if frac is None else max(0.0, min(1.0, float(frac)))
    except (TypeError, ValueError):
        frac = None
    return {
        "state": state,
        "fraction": frac,
        "message": str(getattr(status, "message", "") or ""),
        "error": str(getattr(status, "error", "") or ""),
        "display": str(getattr(status, "display", "") or getattr(status, "display_name", "") or ""),
    }


def model_loading_percent(runtime: AppRuntime) -> int | None:
    """How far the local model's load is (0-100) while it loads, else None."""
    f = model_status_fields(runtime.models.status())
    if f["state"] != "loading":
        return None
    return round((f["fraction"] or 0.0) * 100)


def model_loading_text(runtime: AppRuntime) -> str | None:
    """"The model is loading (NN%): …" while the local model loads, else None."""
    f = model_status_fields(runtime.models.status())
    if f["state"] != "loading":
        return None
    pct = f" ({f['fraction'] * 100:.0f}%)" if f["fraction"] is not None else ""
    detail = f": {f['message']}" if f["message"] else ""
    return f"The local model is loading{pct}{detail}. Your message will be answered as soon as it is ready."


class BackendOpener:
    """Builds the backend for a picker id in a worker thread; poll :meth:`wait`, then :meth:`result`.

    For the local model this may mean waiting for it to load (tens of seconds on a CPU); for the app's
    own endpoint the model is made ready first, so the HTTP request does not time out while it loads.
    """

    def __init__(self, runtime: AppRuntime, option_id: str, api_key: str | None = None) -> None:
        self.runtime = runtime
        self.option_id = option_id
        self._api_key = api_key
        self._backend: Backend | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name=f"open-{option_id}", daemon=True).start()

    def _run(self) -> None:
        try:
            if self.option_id == APP_ENDPOINT:
                self.runtime.models.get()  # the endpoint serves this model: have it loaded first
            self._backend = self.runtime.backend(self.option_id, api_key=self._api_key)
        except BaseException as e:  # handed to the caller's thread by result()
            self._error = e
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """True once the backend is built (or failed)."""
        return self._done.wait(timeout)

    def progress_title(self) -> str:
        """A short title for a "please wait" note: the loading percentage when the model loads."""
        pct = model_loading_percent(self.runtime) if uses_local_model(self.option_id) else None
        return f"⏳ The model is loading ({pct}%)" if pct is not None else "⏳ Please wait"

    def progress_text(self) -> str:
        if uses_local_model(self.option_id):
            return model_loading_text(self.runtime) or "Getting the local model ready…"
        return "Connecting…"

    def result(self) -> Backend:
        """The backend, or the BackendError that building it raised (other errors wrapped in one)."""
        self._done.wait()
        if isinstance(self._error, BackendError):
            raise self._error
        if self._error is not None:
            raise BackendError(f"Could not prepare this backend: {type(self._error).__name__}: {self._error}",
                               kind="internal") from self._error
        assert self._backend is not None
        return self._backend

"""Per-session state and small helpers shared between tabs (created once inside the Blocks).

- :class:`SessionState`: the Gradio ``State`` components several tabs read (the session's API key).
- :func:`lane`: the Gradio queue lane (concurrency id and limit) of each tab's generation events.
- :func:`chat_panel`: the conversation controls of the Hosted API and Local tabs.
- :func:`price_table`: the price table of the tabs that estimate costs (Hosted API, Compare).
- :func:`wait_title` / :func:`wait_text`: what a turn that is not answering yet says (the model loading,
  its place in the engine's line), from the turn service's Loading / Waiting events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from ..core import BackendError, GenParams
from ..pricing import PriceTable
from ..runtime import APP_ENDPOINT, LOCAL, LOCAL_PREFIX, SESSION_HOSTED, AppRuntime
from ..turns.events import Loading, Waiting
from ..web.gradio_compat import checked_slider  # noqa: F401 - the tabs' sliders (it reaches into Gradio)

log = logging.getLogger(__name__)

#: The Gradio concurrency id of the Local tab's model loads.
LOCAL_QUEUE_ID = "local-model"

#: How many events of each tab's generation lane Gradio runs at once; more wait in Gradio's queue
#: (MAX_QUEUE_SIZE) with their rank. One lane per tab, so a slow or hanging request in one tab never
#: takes another tab's turn, whichever backend it uses. A lane is not the local model's limit: local
#: generations wait in the app's own line (``runtime.local_slots``: LOCAL_CONCURRENCY at once for every
#: tab and /v1 together), where a Chat or Local-tab request shows "N ahead of you" and holds no worker
#: thread between two looks at its place. So a lane mostly bounds how many of a tab's requests may sit
#: blocked on a hosted server at once, each holding one of Gradio's 40 worker threads: 16 for Chat (the
#: level a whole class uses at the same time), 8 for the Local tab, 4 Compare runs (each asks every
#: ticked backend, from threads of its own), 2 Lab runs (each a long series of requests). With the
#: Hosted-API tab's 8 (ui/api.py) and the model loads (LOCAL_CONCURRENCY) that stays within the 40.
LANE_LIMITS = {"chat": 16, "local-tab": 8, "compare": 4, "lab": 2}

#: Seconds between two looks at a request's place in line (also how soon Stop takes it out of the line).
WAIT_POLL_S = 0.25

#: The title of the note a request shows while it waits for a local generation slot.
LOCAL_WAIT_TITLE = "⏳ Waiting for the local model"


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
    """Event keyword arguments for the Local tab's model loads: ``LOCAL_CONCURRENCY`` at once."""
    return {"concurrency_id": LOCAL_QUEUE_ID, "concurrency_limit": runtime.settings.local_concurrency}


def lane(tab: str) -> dict[str, Any]:
    """Event keyword arguments that put a tab's generation events in its own Gradio lane (see
    :data:`LANE_LIMITS`); whether they use the local model or a hosted one does not matter here."""
    return {"concurrency_id": tab, "concurrency_limit": LANE_LIMITS[tab]}


def local_wait_title(ahead: int) -> str:
    """ "⏳ Waiting for the local model — N ahead of you"."""
    return f"{LOCAL_WAIT_TITLE} — {ahead} ahead of you"


def local_wait_text(ahead: int, limit: int) -> str:
    """What a request waiting for a local slot is told (``ahead`` requests are in line before it)."""
    at_once = "one request at a time" if limit == 1 else f"{limit} requests at a time"
    first = "You are next" if ahead == 0 else f"{ahead} request(s) are in line before yours"
    return (
        f"{first}: the local model answers {at_once} on this server, and yours starts as soon as a "
        "slot is free. Stop takes it out of the line."
    )


class ChatPanel(NamedTuple):
    """The conversation controls of a level tab, from :func:`chat_panel` (unpack it or read fields)."""

    chatbot: gr.Chatbot
    textbox: gr.Textbox
    send_btn: gr.Button
    stop_btn: gr.Button
    retry_btn: gr.Button
    undo_btn: gr.Button
    clear_btn: gr.Button
    metrics_md: gr.Markdown
    extra_buttons: list[gr.Button]


def chat_panel(prefix: str, *, label: str, placeholder: str, extra_buttons: Sequence[str] = ()) -> ChatPanel:
    """Build the conversation controls of the Hosted API and Local tabs in the current column.

    The Chatbot (``label``, ``placeholder`` shown while empty), the message box with Send and Stop, a row
    of Retry, Undo, Clear and one small button per label in ``extra_buttons``, and the one-line turn
    metrics. Elem ids: ``{prefix}-chat``, ``{prefix}-input``, ``{prefix}-send``, ``{prefix}-metrics``.
    """
    chatbot = gr.Chatbot(
        label=label, height=460, buttons=["copy", "copy_all"], elem_id=f"{prefix}-chat", placeholder=placeholder
    )
    with gr.Row(equal_height=True):
        textbox = gr.Textbox(
            show_label=False,
            placeholder="Message… (Enter sends)",
            lines=1,
            max_lines=8,
            scale=8,
            elem_id=f"{prefix}-input",
        )
        send_btn = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id=f"{prefix}-send")
        stop_btn = gr.Button("Stop", variant="stop", scale=1, min_width=90)
    with gr.Row():
        retry_btn = gr.Button("↻ Retry", size="sm")
        undo_btn = gr.Button("↶ Undo", size="sm")
        clear_btn = gr.Button("🗑 Clear", size="sm")
        extra = [gr.Button(text, size="sm") for text in extra_buttons]
    metrics_md = gr.Markdown("", elem_classes="turn-metrics", elem_id=f"{prefix}-metrics")
    return ChatPanel(chatbot, textbox, send_btn, stop_btn, retry_btn, undo_btn, clear_btn, metrics_md, extra)


# --------------------------------------------------------------------------------- backend choices
SESSION_LABEL = "Hosted API · OpenAI (with the key you enter in the Hosted API tab)"


def price_table(runtime: AppRuntime) -> PriceTable:
    """The price table for cost estimates: built-in prices plus PRICE_FILE.

    A broken PRICE_FILE is logged and the built-in table used instead, so the tab still opens.
    """
    try:
        return PriceTable.load(runtime.settings.price_file)
    except BackendError as e:
        log.warning("prices: %s (using the built-in table)", e)
        return PriceTable.load(None)


def backend_choices(runtime: AppRuntime) -> list[tuple[str, str]]:
    """(label, id) pairs for a backend picker: the runtime's options, plus "OpenAI with your own key"
    when no hosted endpoint is configured (a key typed in the Hosted API tab then makes it work)."""
    choices = [(o.label, o.id) for o in runtime.backend_options()]
    if not runtime.hosted_endpoints():
        choices.insert(1, (SESSION_LABEL, SESSION_HOSTED))
    return choices


def uses_local_model(option_id: str) -> bool:
    """Whether a picker id ends up generating with this app's local model (on either engine)."""
    return option_id in (LOCAL, APP_ENDPOINT) or option_id.startswith(LOCAL_PREFIX)


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
    if option_id.startswith(LOCAL_PREFIX):
        return f"Local model · {option_id[len(LOCAL_PREFIX) :]}"
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


def form_params(raw: dict[str, Any]) -> GenParams:
    """A form's values as GenParams; a bad value is an input error (gr.Error): nothing on screen changes."""
    try:
        return GenParams.from_dict(raw)
    except BackendError as e:
        raise gr.Error(str(e)) from e


def wait_title(event: Loading | Waiting) -> str:
    """A short title for a "please wait" note: the place in line, or the loading percentage."""
    if isinstance(event, Waiting):
        return local_wait_title(event.ahead)
    if event.fraction is not None:
        return f"⏳ The model is loading ({event.fraction * 100:.0f}%)"
    return "⏳ Please wait"


def wait_text(event: Loading | Waiting) -> str:
    """The sentence under :func:`wait_title`."""
    if isinstance(event, Waiting):
        return local_wait_text(event.ahead, event.limit)
    if event.fraction is not None:
        detail = f": {event.message}" if event.message else ""
        return (
            f"The local model is loading ({event.fraction * 100:.0f}%){detail}. Your message will be answered "
            "as soon as it is ready."
        )
    return event.message or "Please wait…"

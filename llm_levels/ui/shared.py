"""Per-session state and small helpers shared between tabs (created once inside the Blocks).

- :class:`SessionState`: the Gradio ``State`` components several tabs read (the session's API key).
- :func:`lane`: the Gradio queue lane (concurrency id and limit) of each tab's generation events.
- :func:`chat_panel`: the conversation controls of the Hosted API and Local tabs.
- :func:`price_table`: the price table of the tabs that estimate costs (Hosted API, Compare).
- :func:`wait_title` / :func:`wait_text`: what a turn that is not answering yet says (the model loading,
  its place in the engine's line), from the turn service's Loading / Waiting events.
- :func:`remembered` / :func:`remember_conversation`: a value, or a tab's conversation, kept in the
  browser's localStorage (``gr.BrowserState``) so that it survives a page reload. Never a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

import gradio as gr

from .. import history as H
from ..core import PARAM_SPECS, BackendError, GenParams
from ..pricing import PriceTable
from ..runtime import APP_ENDPOINT, LOCAL, LOCAL_PREFIX, SESSION_HOSTED, AppRuntime
from ..text_clean import clean_text
from ..turns.events import Loading, Waiting
from ..web.gradio_compat import checked_slider  # the tabs' sliders (it reaches into Gradio)

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
    """Gradio State components that several tabs read, and the page they are on.

    ``api_key``: a key the user typed in the Hosted-API tab. It lives only in this browser session's
    server-side state (``gr.State`` is never sent to the page) and is used by Chat and Compare too; it is
    never put in a :func:`remembered` value. ``page``: the Blocks being built (its ``load`` event restores
    what :func:`remember_conversation` kept in the browser).
    """

    api_key: gr.State
    page: gr.Blocks | None = None


def create_session_state(page: gr.Blocks | None = None) -> SessionState:
    """The shared State components; ``page`` defaults to the Blocks being built now. Call it at the page's
    top level: it also creates the values each tab keeps in the browser (:data:`BROWSER_KEYS`) there."""
    page = page or gr.context.Context.root_block
    if page is not None:
        _PAGE_STORES[page] = {key: _browser_state(key, None) for key in BROWSER_KEYS}
    return SessionState(api_key=gr.State(None), page=page)


# ------------------------------------------------------------------------------ kept in the browser
#: The prefix of this app's localStorage keys (one key per remembered value).
STORAGE_PREFIX = "llm-levels:"
#: The most characters of a conversation kept in the browser: localStorage holds about 5 MB per site, for
#: every tab's conversation together; the oldest messages of a longer one are not kept.
BROWSER_HISTORY_CHARS = 500_000


#: The values kept in the browser, one per tab. They are created at the page's top level: a BrowserState
#: inside a tab reads localStorage only when the tab is first opened, too late for the page's load event.
BROWSER_KEYS = ("chat", "api", "local", "compare")
_PAGE_STORES: WeakKeyDictionary[gr.Blocks, dict[str, gr.BrowserState]] = WeakKeyDictionary()


def _browser_state(key: str, default: Any) -> gr.BrowserState:
    if "api_key" in key.lower().replace("-", "_"):
        raise ValueError("an API key is never kept in the browser")
    return gr.BrowserState(default, storage_key=STORAGE_PREFIX + key)


def remembered(key: str, default: Any = None) -> gr.BrowserState:
    """A value kept in this browser's localStorage under ``llm-levels:<key>`` (a ``gr.BrowserState``): an
    event that outputs to it stores the value, and an event that reads it (the page's ``load``, say) gets
    what was stored, also after a page reload. For a key of :data:`BROWSER_KEYS` it is the one created at
    the page's top level by :func:`create_session_state`. Never for a secret such as an API key: the page
    holds the secret that decrypts it."""
    page = gr.context.Context.root_block
    store = _PAGE_STORES.get(page, {}).get(key) if page is not None else None
    if store is None:
        return _browser_state(key, default)
    store.default_value = default
    return store


def for_browser(hist: Any, limit: int = BROWSER_HISTORY_CHARS) -> list[dict[str, Any]]:
    """The conversation to keep in the browser: plain dicts, no "please wait" notes, and only the newest
    messages when the whole one is longer than ``limit`` characters."""
    out = H.without_pending(H.plain(hist))
    total = 0
    for i in range(len(out) - 1, -1, -1):
        total += len(out[i]["content"])
        if total > limit:
            return out[i + 1 :]
    return out


def restored(saved: Any) -> list[dict[str, Any]]:
    """A conversation read back from the browser, made safe to show and send: only what :func:`for_browser`
    would keep (text and note titles made valid), whatever the browser handed back."""
    if not isinstance(saved, list):
        return []
    out = for_browser(saved)
    for m in out:
        m["content"] = clean_text(m["content"])
        if "metadata" in m:
            m["metadata"] = {k: clean_text(str(v)) for k, v in m["metadata"].items() if k in ("title", "log")}
    return out


def remember_conversation(
    session: SessionState | None, key: str, chatbot: gr.Chatbot, state: gr.State
) -> gr.BrowserState:
    """Keep a tab's conversation in the browser: each change of ``state`` (the exact history) is stored under
    ``key``, and when the page (re)loads, ``chatbot`` and ``state`` show the stored one. Returns the
    BrowserState (an event that outputs ``[]`` to it forgets the conversation)."""
    saved = remembered(key, [])
    quiet: dict[str, Any] = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
    # Only the newest change is stored while a streamed answer changes the history many times a second.
    state.change(for_browser, inputs=[state], outputs=[saved], trigger_mode="always_last", **quiet)
    page = session.page if session is not None else gr.context.Context.root_block
    if page is not None:
        page.load(lambda value: (restored(value),) * 2, inputs=[saved], outputs=[chatbot, state], **quiet)
    return saved


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


def param_slider(name: str, *, label: str | None = None, elem_id: str | None = None, **given: Any) -> gr.Slider:
    """A checked slider for the generation setting ``name``: its range, default, step and description from
    :data:`~llm_levels.core.PARAM_SPECS`, unless ``given`` (``minimum``, ``maximum``, ``value``, ``step``)."""
    spec = PARAM_SPECS[name]
    return checked_slider(
        spec.minimum if given.get("minimum") is None else given["minimum"],
        spec.maximum if given.get("maximum") is None else given["maximum"],
        value=given.get("value", spec.default),
        step=given.get("step", spec.step),
        label=label or name,
        info=spec.description,
        elem_id=elem_id,
    )

"""Everything this app does inside Gradio's internals, in one module, checked against the Gradio it was written for.

Written against **Gradio 6.31.x** (:data:`GRADIO_SERIES`). :func:`check_gradio_version` runs at start-up
(``web.app.create_app``): on any other version, or when an attribute used below is gone, it logs an
ERROR that names the hooks to re-check, and :func:`install_lean_sessions` leaves Gradio's own session
state in place (the app keeps working; a session then costs Gradio's ~0.35 MB instead of ~20 KB).
``tests/test_gradio_compat.py`` fails on any other version and proves, on this one, that each hook
still does its job (and that Gradio still has the problem the hook is for).

What Gradio's public API covers is used instead (``llm_levels/sessions.py``): how many sessions Gradio
keeps (``state_session_capacity``, a ``launch()`` setting), how long a session's ``gr.State`` values live
(``gr.State(time_to_live=...)``, emptied by Gradio's own expiry loop) and clean-up when they go
(``delete_callback``). What remains here, and why (measured in bench/LOAD.md, "Memory over time"):

1. :class:`LeanSessionState` — Gradio builds, for every new session, a copy of the config of all ~200
   components (``SessionState.config_values``: ~0.33 MB and ~13 ms of the event loop per session) and
   refreshes entries at every streamed update (about half of Gradio's work per update of the Local tab).
   Only "deep links" read it, which this app does not offer. No public setting turns it off.
2. The same class never files a component copy under the copy's own id. When an event yields an
   update (``gr.skip()``/``gr.update()``, or a dict that leaves an output out) and later a value for
   that component, Gradio 6.31 files the session's copy under the copy's new id too, where nothing
   reads or removes it: two dead copies per Chat message (10-20 KB) for as long as the session lives.
   (Before, a 30-s sweep removed them; now they are never stored.)
3. ``SESSION_CLOSED_TTL_S``: Gradio keeps a closed page's ``gr.State`` values for a fixed hour
   (``SessionState.STATE_TTL_WHEN_CLOSED``); the lean state takes the configured value instead.
4. Gradio's queue keeps an empty set per session that ever queued an event
   (``Queue.pending_event_ids_session``), also after the session is gone: the holder drops those of
   sessions it no longer keeps (~0.3 KB each, forever, otherwise).
5. :func:`checked_slider` — a one-line error for a non-numeric slider value sent through the API.
   Gradio's own check raises a multi-line ``TypeError`` before any validator (``validator=`` receives
   already preprocessed values), and a ``gr.Slider`` subclass makes Gradio write a ``.pyi`` file next to
   its module at import time, so the instance's ``preprocess`` is wrapped. (It still lives in
   ``ui/shared.py`` too; moving it here is proposed.)
6. :func:`install_input_guard` — every event's input is made valid before any handler sees it (a lone
   surrogate typed or sent through the API becomes U+FFFD, NUL goes: :func:`~llm_levels.text_clean.clean_text`).
   Otherwise the text reaches a ``gr.State`` and Gradio's JSON encoder fails on it at every later update
   of that session. Gradio has no hook on an event's raw input; ``Blocks.process_api`` receives it.
7. The same guard makes a refusal one log line. Gradio prints the traceback of every ``gr.Error`` a
   handler raises unless it was built with ``print_exception=False`` (``queueing.py``, ``routes.py``);
   here a ``gr.Error`` is a refused input (a bug raises anything else, and keeps its traceback). Input
   Gradio itself cannot preprocess (a wrong type through the API), a list sent to a one-value dropdown
   (which Gradio passes on) and event data missing for a handler that takes it (``gr.SelectData``: Gradio
   fails building it) are refused the same way.
8. :func:`install_checked_routes` — an event id the app does not have (``fn_index`` 999, -1) is a 404,
   not a ``KeyError`` with a traceback and a 500; a session id longer than any Gradio makes is refused
   before Gradio keeps a session under it (a megabyte-long id per request would be kept, up to
   ``MAX_SESSIONS`` of them). Gradio's routes all find an event through ``route_utils.get_fn``.

Removed (no longer needed): the ``SessionJanitor`` sweep (forgetting whole sessions by TTL, sweeping dead
copies, pruning on a timer) and the run-time swap of a live ``StateHolder``'s class: the lean holder is
a new instance put in place of Gradio's (still empty) one right after mounting.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import typing
from typing import Any

import gradio as gr
from fastapi import HTTPException
from gradio import route_utils
from gradio.state_holder import SessionState, StateHolder

from ..text_clean import clean_value

log = logging.getLogger(__name__)
#: Where a refused page event is logged (one line each).
refusal_log = logging.getLogger("llm_levels.ui")

#: The Gradio release series these hooks were written and tested against.
GRADIO_SERIES = (6, 31)
#: What each hook relies on: (object, attribute). Checked at start-up with the version.
_RELIED_ON = (
    (SessionState, "__setitem__"),
    (SessionState, "_update_config"),
    (SessionState, "_update_value_in_config"),
    (StateHolder, "set_blocks"),
    (StateHolder, "update"),
    (StateHolder, "delete_state"),
    (gr.Blocks, "process_api"),
    (gr.Blocks, "preprocess_data"),
    (route_utils, "get_fn"),
)
_RELIED_ON_INSTANCE = (
    "blocks_config",
    "config_values",
    "state_data",
    "_state_ttl",
    "is_closed",
    "STATE_TTL_WHEN_CLOSED",
)
HOOKS = (
    "LeanSessionState (no per-session config copy; no dead component copies; closed TTL)",
    "LeanStateHolder (lean sessions; drops the queue's empty per-session sets)",
    "checked_slider (one-line error for a non-numeric slider value)",
    "install_input_guard (valid text into every event; a refusal is one log line)",
    "install_checked_routes (unknown event ids are a 404; over-long session ids are refused)",
)


def _series(version: str) -> tuple[int, int] | None:
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def compat_problems(version: str | None = None) -> list[str]:
    """Why the hooks may not fit the installed Gradio (empty when they do)."""
    version = version or gr.__version__
    problems = []
    if not hasattr(route_utils, "FnIndexInferError"):
        problems.append("gradio route_utils.FnIndexInferError is gone")
    if _series(version) != GRADIO_SERIES:
        problems.append(
            f"Gradio {version} is installed; the hooks were written for {'.'.join(map(str, GRADIO_SERIES))}.x"
        )
    for owner, name in _RELIED_ON:
        if not callable(getattr(owner, name, None)):
            problems.append(f"gradio {owner.__name__}.{name} is gone")
    return problems


def check_gradio_version(version: str | None = None) -> bool:
    """Log an ERROR (once per call) when the installed Gradio is not the one the hooks were written for.

    Returns True when the hooks may be installed. Called at start-up by ``web.app.create_app``."""
    problems = compat_problems(version)
    if problems:
        log.error(
            "GRADIO UPGRADE: %s. The hooks in llm_levels/web/gradio_compat.py are OFF (%s): sessions use "
            "Gradio's own state, which costs more memory. Re-check each hook against the new Gradio, run "
            "tests/test_gradio_compat.py, then update GRADIO_SERIES.",
            "; ".join(problems),
            "; ".join(HOOKS),
        )
    return not problems


# ------------------------------------------------------------------------------ 1-3: lean session state
class LeanSessionState(SessionState):
    """Gradio's ``SessionState`` without its config copy and without dead component copies (hooks 1-3).

    Everything a live session is served from stays Gradio's own: its ``gr.State`` values (``state_data``,
    with their time to live) and its component table (``blocks_config``). ``closed_ttl_s`` replaces
    Gradio's fixed hour for the values of a closed page (None: Gradio's).
    """

    def __init__(self, blocks: Any, closed_ttl_s: float | None = None) -> None:
        # Gradio's own __init__ sets every attribute; given no component ids, it copies no configs.
        super().__init__(_WithoutComponentIds(blocks))
        if closed_ttl_s is not None:
            self.STATE_TTL_WHEN_CLOSED = closed_ttl_s
        # With gr.render, components come and go per session: then every id is kept, as Gradio does.
        self._fixed_layout = not self.blocks_config.renderables

    def __setitem__(self, key: int, value: Any) -> None:
        # SessionState.__setitem__ without its last step (recomputing the component's config copy), and
        # without filing a component under an id the session's table does not have (a dead copy).
        from gradio.components import State

        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, datetime.datetime.now())
            self.state_data[key] = value
        elif block is not None or not self._fixed_layout:
            self.blocks_config.blocks[key] = value

    def _update_config(self, key: int) -> None:
        """No config copy to refresh."""

    def _update_value_in_config(self, key: int, value: Any) -> None:
        """No config copy to record a value in."""


class _WithoutComponentIds:
    """What ``SessionState.__init__`` reads from a Blocks, with no component ids to copy configs for."""

    def __init__(self, blocks: Any) -> None:
        self.default_config = blocks.default_config
        self.blocks: dict[int, Any] = {}


class LeanStateHolder(StateHolder):
    """Gradio's ``StateHolder`` that starts new sessions as :class:`LeanSessionState` (hook 4 too)."""

    #: Prune the queue's leftovers once it holds this many more sessions than the holder.
    PRUNE_SLACK = 256

    def __init__(self, closed_ttl_s: float | None = None) -> None:
        super().__init__()
        self.closed_ttl_s = closed_ttl_s

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = LeanSessionState(self.blocks, self.closed_ttl_s)
            self.prune_queue_leftovers()
        return super().__getitem__(session_id)

    def prune_queue_leftovers(self, force: bool = False) -> int:
        """Drop the queue's empty per-session sets of sessions this holder no longer keeps; how many."""
        pending = getattr(getattr(self.blocks, "_queue", None), "pending_event_ids_session", None)
        if not isinstance(pending, dict) or (not force and len(pending) <= len(self.session_data) + self.PRUNE_SLACK):
            return 0
        with self.lock:
            live = set(self.session_data)
        dropped = 0
        for session_id, ids in list(pending.items()):
            if not ids and session_id not in live and not pending.get(session_id, True):  # still empty
                pending.pop(session_id, None)
                dropped += 1
        return dropped


def install_lean_sessions(app: Any, blocks: Any, *, closed_ttl_s: float | None = None) -> LeanStateHolder:
    """Put a :class:`LeanStateHolder` in place of the one ``gr.mount_gradio_app`` gave ``blocks``.

    Call it right after mounting, before serving (the replaced holder must hold no session yet);
    ``app`` is the FastAPI app Gradio was mounted on. Raises RuntimeError if Gradio's app is not found.
    """
    old = blocks.state_holder
    mounted = [getattr(r, "app", None) for r in getattr(app, "routes", [])]
    gradio_app = next((a for a in mounted if getattr(a, "state_holder", None) is old), None)
    if gradio_app is None or type(old) is not StateHolder:
        raise RuntimeError(
            "Gradio's mounted app (with its StateHolder) was not found: call this right after gr.mount_gradio_app, once"
        )
    if old.session_data:
        raise RuntimeError("sessions already started: install the lean state before serving")
    probe = LeanSessionState(blocks)
    missing = [a for a in _RELIED_ON_INSTANCE if not hasattr(probe, a)]
    if missing:
        raise RuntimeError(f"Gradio's SessionState has no {', '.join(missing)}")
    holder = LeanStateHolder(closed_ttl_s)
    holder.set_blocks(blocks)  # Gradio's own wiring: blocks.state_holder, and the session cap from the Blocks
    gradio_app.state_holder = holder
    return holder


# ------------------------------------------------------------------------------ 5: checked slider
def checked_slider(*args: Any, **kwargs: Any) -> gr.Slider:
    """A ``gr.Slider`` whose value, when it comes through the API rather than the slider, is checked
    with a one-line message that names the setting and its range (hook 5).

    Gradio's own check fails on a non-number with a multi-line "Could not preprocess input component"
    text and a ``TypeError``; here ``"abc"``, ``None``, ``NaN`` or ``1e9`` get e.g. "Longest answer
    (tokens) must be a number between 1 and 1024, not 'abc'." Numeric strings ("12") are accepted.
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


# ------------------------------------------------------------------------------ 6-7: input guard
def install_input_guard(blocks: gr.Blocks) -> None:
    """Clean every event's input and log each refusal as one line (hooks 6 and 7; see the module docstring).

    Call it once, before serving. ``blocks.process_api`` and ``blocks.preprocess_data`` are replaced on
    this instance only."""
    process_api, preprocess_data = blocks.process_api, blocks.preprocess_data

    async def guarded_process_api(block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        new = kwargs.get("iterator") is None and (len(args) < 3 or args[2] is None)  # not the next step of one
        if new:
            inputs = clean_value(inputs)
        try:
            if new:
                _check_event_data(blocks, block_fn, kwargs.get("event_data"))
            return await process_api(block_fn, inputs, *args, **kwargs)
        except gr.Error as e:
            e.print_exception = False
            refusal_log.info("%s: refused: %s", _event_name(blocks, block_fn), _one_line(e))
            raise

    async def checked_preprocess_data(block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        for block, value in zip(getattr(block_fn, "inputs", ()), inputs or ()):
            # Gradio lets a one-value dropdown take a list of its choices (an empty list too): handlers break.
            if isinstance(block, gr.Dropdown) and not block.multiselect and isinstance(value, (list, dict)):
                raise gr.Error(f"{block.label or 'This choice'} takes one value, not {type(value).__name__}.")
        try:
            return await preprocess_data(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError) as e:  # Gradio could not read what the client sent: bad input
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise gr.Error(f"The request's input was not understood: {first}", print_exception=False) from None

    blocks.process_api = guarded_process_api  # type: ignore[method-assign]
    blocks.preprocess_data = checked_preprocess_data  # type: ignore[method-assign]


def _check_event_data(blocks: Any, block_fn: Any, event_data: Any) -> None:
    """Refuse an event whose handler takes event data (``gr.SelectData``...) the client did not send in the
    shape Gradio builds it from: Gradio would fail with a ``TypeError`` inside its own call."""
    fn = getattr(blocks.fns.get(block_fn) if isinstance(block_fn, int) else block_fn, "fn", None)
    for kind in _event_data_kinds(fn) if callable(fn) else ():
        try:
            kind(getattr(event_data, "target", None), getattr(event_data, "_data", None))
        except (TypeError, KeyError, ValueError, AttributeError):
            raise gr.Error("This event needs the data of the action that triggers it (event_data).") from None


@functools.lru_cache(maxsize=1024)
def _event_data_kinds(fn: Any) -> tuple[type, ...]:
    """The ``gr.EventData`` subclasses ``fn`` takes (read from its type hints, as Gradio does)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - hints that cannot be read: Gradio cannot read them either
        return ()
    return tuple(
        h for h in hints.values() if isinstance(h, type) and issubclass(h, gr.EventData) and h is not gr.EventData
    )


def _event_name(blocks: Any, block_fn: Any) -> str:
    if isinstance(block_fn, int):
        block_fn = blocks.fns.get(block_fn)
    return str(getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "event")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(getattr(error, "message", None) or error).split())
    return text if len(text) <= 300 else text[:299] + "…"


# ------------------------------------------------------------------------------ 8: checked routes
#: Longest session id accepted (Gradio's own page and client make ids of about a dozen characters).
MAX_SESSION_HASH_CHARS = 128


def install_checked_routes() -> None:
    """Make Gradio's event lookup refuse bad ids with a 4xx instead of failing with a 500 (hook 8).

    Replaces ``gradio.route_utils.get_fn`` for the whole process (every route calls it through the module);
    calling it again changes nothing."""
    original = route_utils.get_fn
    if getattr(original, "checked_by_llm_levels", False):
        return

    def get_fn(blocks: Any, api_name: str | None, body: Any) -> Any:
        session = getattr(body, "session_hash", None)
        if isinstance(session, str) and len(session) > MAX_SESSION_HASH_CHARS:
            raise HTTPException(400, f"session_hash is too long (at most {MAX_SESSION_HASH_CHARS} characters).")
        try:
            return original(blocks, api_name, body)
        except (KeyError, route_utils.FnIndexInferError):
            which = f"api_name {api_name!r}" if api_name else f"fn_index {str(getattr(body, 'fn_index', None))[:20]}"
            raise HTTPException(404, f"This app has no event with {which[:80]}.") from None

    get_fn.checked_by_llm_levels = True  # type: ignore[attr-defined]
    route_utils.get_fn = get_fn

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

Removed (no longer needed): the ``SessionJanitor`` sweep (forgetting whole sessions by TTL, sweeping dead
copies, pruning on a timer) and the run-time swap of a live ``StateHolder``'s class: the lean holder is
a new instance put in place of Gradio's (still empty) one right after mounting.
"""

from __future__ import annotations

import datetime
import logging
import math
from typing import Any

import gradio as gr
from gradio.state_holder import SessionState, StateHolder

log = logging.getLogger(__name__)

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

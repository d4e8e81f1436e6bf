"""Keeps the memory Gradio holds per browser session bounded: forgets old sessions, drops stale copies.

Gradio (6.31, pinned in requirements.txt) keeps one ``SessionState`` per session hash in its
``StateHolder`` (``blocks.state_holder.session_data``). Measured on this app (bench/LOAD.md, "Memory
over time"), two things in it grow without a useful bound:

1. **Sessions are never forgotten.** A session's ``SessionState`` (its ``gr.State`` values — the
   conversation, a typed key — plus a per-session copy of every component's config, several hundred
   KB for this UI) stays in memory after its page is closed; Gradio only empties its ``gr.State``
   values an hour later and drops a whole session only when ``state_session_capacity`` (default
   10,000) newer sessions have come. Every page load and every API call without a session makes a
   new one, so a public Space would grow to gigabytes before that cap.
2. **Stale component copies pile up inside a live session.** When an event returns a property
   update (``gr.skip()``/``gr.update(...)``) for a component, Gradio stores a fresh copy of the
   component (with a fresh id) for that session; when a later output of the same event sets that
   component's value, Gradio files the copy under the copy's *own* new id as well. The copy filed
   under the original id is replaced each time; the one filed under its own id is never used or
   removed. The Chat tab's send (textbox and metrics line) leaves two of these per message (10-20
   KB), for as long as the session lives.

:class:`SessionJanitor` fixes both without changing how Gradio serves a live session:

- ``blocks.state_session_capacity`` is set to ``MAX_SESSIONS`` (Gradio then drops the least recently
  used session beyond it) — call :meth:`SessionJanitor.configure` before the Blocks is mounted;
- :meth:`SessionJanitor.sweep` (every ``SESSION_SWEEP_S`` seconds, on the server's event loop, like
  Gradio's own expired-state cleanup) forgets sessions whose page was closed and that have had no
  event for ``SESSION_CLOSED_TTL_S``, and any session idle for ``SESSION_IDLE_TTL_S`` (API clients
  never "close"); sessions with an event queued or running are kept. It also removes, from every
  session, component copies filed under ids that are not components of the app.

:func:`use_lean_session_state` removes a third cost: Gradio builds, for every new session, a copy of the
config of all ~200 components (13 ms of the server's event loop and ~320 KB per session, measured), and
refreshes parts of it at every streamed update (about half of Gradio's ~5 ms per update of the Local tab).
That copy exists only for Gradio's "deep links" (``/gradio_api/deep_link`` saves it to share a session's
component values), which this app does not offer; a :class:`LeanSessionState` keeps everything else.

A forgotten session that comes back simply starts fresh (an empty chat), as after a page reload.
(Gradio marks a session closed when its page's heartbeat connection ends and never unmarks it, even if
the page reconnects after a network blip; hence the closed TTL defaults to Gradio's own hour.)
Only Gradio's attributes named above are used; ``tests/test_sessions.py`` checks them against the
installed Gradio, so an upgrade that changes them fails a test instead of silently leaking.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any, Callable

from gradio.state_holder import SessionState, StateHolder

log = logging.getLogger(__name__)

#: Seconds between two sweeps. A stale copy or an expired session lives at most this much longer.
SWEEP_EVERY_S = 30.0


@dataclass(frozen=True)
class SweepResult:
    """What one :meth:`SessionJanitor.sweep` did."""

    sessions_dropped: int = 0
    copies_dropped: int = 0
    sessions_left: int = 0


class SessionJanitor:
    """Bounds Gradio's per-session memory for one Blocks app (see the module docstring).

    ``blocks`` is the app's ``gr.Blocks``; its ``state_holder`` (set when the Blocks is mounted) is
    read at each sweep. ``clock`` returns "now" as Gradio records it (naive local ``datetime``);
    injectable for tests.
    """

    def __init__(
        self,
        blocks: Any,
        *,
        max_sessions: int,
        idle_ttl_s: float,
        closed_ttl_s: float,
        clock: Callable[[], datetime.datetime] = datetime.datetime.now,
    ) -> None:
        self.blocks = blocks
        self.max_sessions = int(max_sessions)
        self.idle_ttl_s = float(idle_ttl_s)
        self.closed_ttl_s = float(closed_ttl_s)
        self._clock = clock

    @classmethod
    def for_settings(cls, blocks: Any, settings: Any) -> "SessionJanitor":
        return cls(blocks, max_sessions=settings.max_sessions, idle_ttl_s=settings.session_idle_ttl_s,
                   closed_ttl_s=settings.session_closed_ttl_s)

    def configure(self) -> None:
        """Set Gradio's own session cap. Must run before ``gr.mount_gradio_app``/``launch``: Gradio
        copies ``state_session_capacity`` into its ``StateHolder`` when it builds the server app."""
        self.blocks.state_session_capacity = self.max_sessions

    # ------------------------------------------------------------------ sweeping
    def sweep(self) -> SweepResult:
        """Forget expired sessions and drop stale component copies; safe to call at any time."""
        holder = getattr(self.blocks, "state_holder", None)
        if holder is None:  # not mounted yet
            return SweepResult()
        now = self._clock()
        busy = self._busy_sessions()
        dropped = 0
        with holder.lock:
            items = list(holder.session_data.items())
            last_used = dict(holder.time_last_used)
        for session_id, state in items:
            if session_id in busy:
                continue
            used = last_used.get(session_id)
            idle_s = (now - used).total_seconds() if used is not None else float("inf")
            ttl = self.closed_ttl_s if getattr(state, "is_closed", False) else self.idle_ttl_s
            if idle_s > ttl:
                self._forget(holder, session_id)
                dropped += 1
        # Beyond the cap (e.g. sessions made before the cap was lowered): least recently used first.
        with holder.lock:
            extra = len(holder.session_data) - self.max_sessions
            oldest = [s for s in holder.session_data if s not in busy][:max(0, extra)]
        for session_id in oldest:
            self._forget(holder, session_id)
            dropped += 1
        copies = self._drop_stale_copies(holder)
        self._drop_empty_pending(holder)
        with holder.lock:
            left = len(holder.session_data)
        return SweepResult(sessions_dropped=dropped, copies_dropped=copies, sessions_left=left)

    def _busy_sessions(self) -> set[str]:
        """Sessions with an event queued or running: never forgotten under their feet."""
        queue = getattr(self.blocks, "_queue", None)
        pending = getattr(queue, "pending_event_ids_session", None) or {}
        return {s for s, ids in list(pending.items()) if ids}

    @staticmethod
    def _forget(holder: Any, session_id: str) -> None:
        try:
            holder.delete_state(session_id)  # runs gr.State delete callbacks, as Gradio's own expiry does
        except Exception:  # a failing callback must not keep the session (or stop the sweep)
            log.exception("deleting a session's state failed")
        with holder.lock:
            holder.session_data.pop(session_id, None)
            holder.time_last_used.pop(session_id, None)

    def _drop_empty_pending(self, holder: Any) -> None:
        """Gradio's queue keeps an (empty) set of pending event ids for every session that ever queued
        an event; drop those of sessions it no longer holds (an empty set means nothing is queued)."""
        pending = getattr(getattr(self.blocks, "_queue", None), "pending_event_ids_session", None)
        if not isinstance(pending, dict):
            return
        with holder.lock:
            live = set(holder.session_data)
        for session_id in [s for s, ids in list(pending.items()) if not ids and s not in live]:
            if not pending.get(session_id, True):  # still empty
                pending.pop(session_id, None)

    def _drop_stale_copies(self, holder: Any) -> int:
        """Remove component copies filed under ids that are not the app's components (see above).

        Only for apps without ``gr.render``: there, every legitimate id of a session is one of the
        Blocks' own, so anything else is a stale copy. With dynamic rendering, nothing is touched.
        """
        default = getattr(self.blocks, "default_config", None)
        if default is None or getattr(default, "renderables", None):
            return 0
        known = set(default.blocks)
        with holder.lock:
            states = list(holder.session_data.values())
        dropped = 0
        for state in states:
            config = getattr(state, "blocks_config", None)
            if config is None:
                continue
            for key in [k for k in list(config.blocks) if k not in known]:
                if config.blocks.pop(key, None) is not None:
                    dropped += 1
                state.config_values.pop(key, None)
        return dropped

    # ------------------------------------------------------------------ running
    async def run(self, every_s: float) -> None:
        """Sweep every ``every_s`` seconds until cancelled (run it as a task on the server's loop)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                result = self.sweep()
            except Exception:  # never let a bug here stop the server; say so in the log
                log.exception("session sweep failed")
                continue
            if result.sessions_dropped or result.copies_dropped:
                log.info("session sweep: forgot %d session(s), dropped %d stale component copies; %d left",
                         result.sessions_dropped, result.copies_dropped, result.sessions_left)


# ------------------------------------------------------------------------------ lean session state
class LeanSessionState(SessionState):
    """Gradio's ``SessionState`` without ``config_values``, its per-session copy of every component's config.

    Gradio reads that copy only to save a deep link (``SessionState.components``); it builds it for every
    new session and recomputes entries whenever an event sets a value or updates a property. Here it stays
    empty, so a deep link of this app saves no component values (nor a key typed into a password box).
    Everything the session serves from is Gradio's own code: the ``gr.State`` values (``state_data``,
    with their time-to-live) and the session's components (``blocks_config``).
    """

    def __init__(self, blocks: Any) -> None:
        # Gradio's own __init__ sets every attribute; given no component ids to copy, it copies none.
        super().__init__(_WithoutComponentIds(blocks))

    def __setitem__(self, key: int, value: Any) -> None:
        # SessionState.__setitem__ without its last step (recomputing the component's config copy).
        from gradio.components import State

        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, datetime.datetime.now())
            self.state_data[key] = value
        else:
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


class _LeanStateHolder(StateHolder):
    """Gradio's ``StateHolder`` that starts new sessions as :class:`LeanSessionState`."""

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = LeanSessionState(self.blocks)
        return super().__getitem__(session_id)


def use_lean_session_state(blocks: Any) -> None:
    """Make the mounted ``blocks`` start every new session as a :class:`LeanSessionState`.

    Call it after ``gr.mount_gradio_app``: mounting gives the Blocks a new ``StateHolder`` (sessions
    started before keep Gradio's own state)."""
    holder = blocks.state_holder
    if type(holder) is not StateHolder and not isinstance(holder, _LeanStateHolder):
        raise TypeError(f"unexpected Gradio state holder {type(holder).__name__}")
    holder.__class__ = _LeanStateHolder

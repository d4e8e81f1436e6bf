"""Keeps the memory Gradio holds per browser session bounded, with Gradio's public API where it has one.

Gradio keeps one session state per session hash: its ``gr.State`` values (the conversation, a typed
key, a Lab run) and its table of the session's components. Measured on this app (bench/LOAD.md,
"Memory over time"), without limits it keeps every session ever opened (up to 10,000) and never
empties a live session's values. Three settings bound it:

- ``MAX_SESSIONS`` → ``state_session_capacity`` (the ``launch()`` setting; ``gr.mount_gradio_app`` has no
  parameter for it, so it is set on the Blocks, where ``launch()`` puts it, before mounting): Gradio
  drops the least recently used session beyond it.
- ``SESSION_IDLE_TTL_S`` → ``gr.State(time_to_live=...)``: Gradio's own expiry loop (every second)
  empties a ``gr.State`` value that has not been set for that long, and calls its ``delete_callback``.
  A tab may pass its own; every ``gr.State`` built without one gets this one (:meth:`SessionLimits.apply`).
  A conversation is set at every message, so it lives while it is used; a key typed into the Hosted
  API tab lives this long after it was typed.
- ``SESSION_CLOSED_TTL_S``: how long the values of a closed page are kept (Gradio's fixed hour,
  replaced in :mod:`llm_levels.web.gradio_compat`).

What the public API cannot do lives in :mod:`llm_levels.web.gradio_compat` (version-checked at
start-up): sessions without Gradio's per-session copy of every component's config, no dead component
copies, the queue's per-session leftovers. A session whose values expired starts afresh (an empty chat),
as after a page reload; what stays of it until ``MAX_SESSIONS`` newer ones come is ~20 KB.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLimits:
    """The session settings (``MAX_SESSIONS``, ``SESSION_IDLE_TTL_S``, ``SESSION_CLOSED_TTL_S``)."""

    max_sessions: int
    idle_ttl_s: float
    closed_ttl_s: float

    @classmethod
    def from_settings(cls, settings: Any) -> SessionLimits:
        return cls(int(settings.max_sessions), float(settings.session_idle_ttl_s), float(settings.session_closed_ttl_s))

    def apply(self, blocks: Any) -> int:
        """Before mounting: the session cap, a time to live for every ``gr.State`` that has none, and a log
        line whenever Gradio frees one of their values.

        Returns how many ``gr.State`` components got the default time to live."""
        import gradio as gr

        blocks.state_session_capacity = self.max_sessions  # Gradio copies it when it builds its server app
        given = 0
        for block in list(blocks.blocks.values()):
            if isinstance(block, gr.State):
                if math.isinf(block.time_to_live):
                    block.time_to_live = self.idle_ttl_s
                    given += 1
                block.delete_callback = _logged_expiry(block.delete_callback, block.time_to_live)
        return given

    def install(self, app: Any, blocks: Any, *, lean: bool = True) -> GradioSessions:
        """After mounting: the lean session state (:mod:`.web.gradio_compat`) when ``lean`` (the installed
        Gradio is the one it was written for); else Gradio's own, with a logged error."""
        from .web.gradio_compat import install_lean_sessions

        installed = False
        if lean:
            try:
                install_lean_sessions(app, blocks, closed_ttl_s=self.closed_ttl_s)
                installed = True
            except RuntimeError as e:
                log.error("lean Gradio sessions not installed (%s): sessions use Gradio's own state", e)
        return GradioSessions(blocks, self, installed)


def _logged_expiry(callback: Any, ttl_s: float) -> Any:
    """``callback`` (a ``gr.State``'s ``delete_callback``), plus one log line each time Gradio frees a
    session's value: the operator sees sessions go when they go, and nothing when none does."""

    def expired(value: Any) -> None:
        # The value's type only: a value may be a key typed into the page.
        log.info("session value freed: a %s, unused for %.0f s (or its page closed)", type(value).__name__, ttl_s)
        callback(value)

    return expired


@dataclass(frozen=True)
class GradioSessions:
    """What :meth:`SessionLimits.install` did (``app.state.sessions``): the Blocks, its limits, lean or not."""

    blocks: Any
    limits: SessionLimits
    lean: bool

    def held(self) -> int:
        """How many sessions Gradio holds now."""
        holder = getattr(self.blocks, "state_holder", None)
        return len(holder.session_data) if holder is not None else 0

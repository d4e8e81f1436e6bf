"""Per-session state shared between tabs (created once inside the Blocks, passed to every tab)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


@dataclass
class SessionState:
    """Gradio State components that several tabs read.

    ``api_key``: a key the user typed in the Hosted-API tab. It lives only in this browser session's
    server-side state (``gr.State`` is never sent to the page) and is used by Chat and Compare too.
    """

    api_key: gr.State


def create_session_state() -> SessionState:
    return SessionState(api_key=gr.State(None))

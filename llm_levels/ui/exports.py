"""Each conversation tab's Export / import panel (:mod:`.export_panel`), told how that tab's conversation
was made: the Hosted API tab from its request form, the Local tab from its engine and sliders, Chat from its
backend picker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from ..core import BackendError
from ..runtime import AppRuntime
from . import export_panel
from .export_panel import Made


def api_export(runtime: AppRuntime, state: gr.State, chatbot: gr.Chatbot, form: Sequence[Any]) -> None:
    """The Hosted API tab's panel: the request form (in ``Form`` order) says endpoint, model and settings."""
    from .api_panels import Form

    def made(*values: Any) -> Made:
        f = Form(*values).cleaned()
        try:
            params = f.params()
        except gr.Error as e:
            raise BackendError(str(e), kind="bad_request") from None
        option = f.option_id or ""
        return Made(option, f.model_id, params, system=f.system or None, base_url=f.url or None)

    export_panel.build(runtime, "api", state, [chatbot], made, list(form))

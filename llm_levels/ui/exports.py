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


def _model_name(runtime: AppRuntime, option_id: str) -> str:
    """The model behind a picker id, for the transcript."""
    if runtime.engine_of(option_id) is not None:
        return runtime.spec_of(option_id) or runtime.planned_model_name()  # an adapter: adapter:<name>
    name = option_id.removeprefix("hosted:")
    endpoint = next((e for e in runtime.hosted_endpoints() if e.name == name), None)
    return endpoint.model if endpoint else ("local" if option_id == "app-endpoint" else option_id)


def chat_export(runtime: AppRuntime, state: gr.State, chatbot: gr.Chatbot, backend: Any, max_tokens: Any) -> None:
    """The Chat tab's panel: the backend picker and the answer length (Chat is greedy)."""
    from ..core import GenParams
    from .chat import chat_params

    def made(option_id: str, max_new: Any) -> Made:
        option = option_id or runtime.default_chat_backend()
        engine = runtime.engine_of(option)
        params = GenParams.from_dict(chat_params(max_new or 256))
        return Made(option, _model_name(runtime, option), params, engine=engine)

    export_panel.build(runtime, "chat", state, [chatbot], made, [backend, max_tokens])


def local_export(
    runtime: AppRuntime, state: gr.State, chatbot: gr.Chatbot, engine: Any, spec: Any, sampling: Sequence[Any]
) -> None:
    """The Local tab's panel: the engine, the model and the sampling settings (in ``sampling_section`` order)."""
    from ..core import GenParams
    from .local_panels import params_from

    def made(engine_name: str, spec_value: str, *values: Any) -> Made:
        system, do_sample, temp, topk, topp, rep, max_new, seed = values
        raw = params_from(do_sample, temp, topk, topp, rep, max_new, seed)
        params = GenParams.from_dict(raw)  # a bad value: the panel says so in a toast
        option = runtime.local_option(engine_name or None)
        model = spec_value or runtime.planned_model_name()
        return Made(option, model, params, system=(system or "").strip() or None, engine=engine_name or None)

    export_panel.build(runtime, "local", state, [chatbot], made, [engine, spec, *sampling])

"""The Local tab's model handlers: the engine an event asked for, Load, Show the prompt and the model line.

A mixin of :class:`~llm_levels.ui.local.LocalTab` (it uses the tab's components and its ``_panels``), kept
apart so each module stays small. Events and API names: see :mod:`llm_levels.ui.local`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError
from ..engine import ENGINES
from .local_panels import describe_loaded, keeps_polling, model_info, params_from, under_the_hood
from .shared import form_params

Updates = dict[Any, Any]


class ModelHandlers:
    """Load, Show the prompt and the model line's refresh (handlers returning ``{component: value}``)."""

    runtime: Any
    spec_state: gr.State
    model_info: gr.Markdown
    info_timer: gr.Timer

    def _panels(self, hood: Any) -> Updates:  # pragma: no cover - the tab's own
        raise NotImplementedError

    def engine_of(self, value: Any) -> str:
        """The engine an event asked for; left out (an API client from before the engine existed): the default."""
        engine = (value or "").strip() if isinstance(value, str) else ""
        if not engine:
            return self.runtime.settings.local_engine
        if engine not in ENGINES:
            raise gr.Error(f"Unknown engine {engine!r}: pick {' or '.join(ENGINES)}.")
        return engine

    def load(self, spec_text: str, engine: Any, progress: gr.Progress = gr.Progress()) -> Updates:
        """Load a model (embedded, folder or Hub id) on the chosen engine for this session; shows progress
        while it loads."""
        spec_text = (spec_text or "").strip()
        if not spec_text:
            raise gr.Error("Type a model: 'embedded', a folder or a Hub id.")
        engine = self.engine_of(engine)
        progress(0.0, desc=f"Loading {spec_text} on {engine}")
        try:
            self.runtime.models.get(spec_text, progress=lambda f, msg: progress(f, desc=msg), engine=engine)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        return {self.spec_state: spec_text, self.model_info: model_info(self.runtime, spec_text, engine)}

    def render(
        self,
        text: str,
        spec: str,
        system_prompt: str,
        sample: bool,
        temp: float,
        topk: float,
        topp: float,
        repp: float,
        max_tokens: float,
        seed_value: Any,
        engine: Any,
        hist: list,
        progress: gr.Progress = gr.Progress(),
    ) -> Updates:
        """The prompt the model would read for this conversation plus the text box (nothing is generated),
        on the chosen engine (loading the model there first if needed, with its progress)."""
        engine = self.engine_of(engine)
        base = H.without_pending(hist or [])
        if not H.is_blank(text):
            base = base + [H.user(text)]
        messages = H.to_messages(base, system=system_prompt)
        if not messages:
            raise gr.Error("Type a message first: the prompt is built from the conversation.")
        params = form_params(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        try:
            self.runtime.models.get(spec, progress=lambda f, msg: progress(f, desc=msg), engine=engine)
            # Only renders: no place in the engine's line is taken (a backend takes one when it streams).
            backend = self.runtime.local_backend(spec, engine=engine)
            hood = under_the_hood(backend, messages, params, self.runtime.settings)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        return {**self._panels(hood), self.model_info: describe_loaded(backend.loaded)}

    def refresh_info(self, spec: str, engine: Any) -> Updates:
        """The model line on the engine picked now (the timer keeps polling only while that can change)."""
        engine = engine if engine in ENGINES else self.runtime.settings.local_engine
        return {
            self.model_info: model_info(self.runtime, spec, engine),
            self.info_timer: gr.Timer(active=keeps_polling(self.runtime, spec, engine)),
        }

"""The next-token explorer (Local tab): the ~20 most likely next tokens as bars, for the conversation or any
point of an answer, and what temperature, top-k and top-p do to them.

"Read the next tokens" asks the local model for its distribution of the next token after the conversation
(up to its last message; before anything was sent, the message typed in the box) and "Answer so far"
(:func:`llm_levels.tokens.next_token_distribution`: one forward pass, no generation). The sliders then
reshape the bars at once, without the model (:func:`llm_levels.tokens.reshape`, in the engine's own order):
a dashed outline is the model's own probability, the solid bar the chance to be drawn with these settings,
and the tokens top-k or top-p cut are struck through. Temperature 0 (greedy) is one bar at 100 %. "Sample"
draws one token with a seed that it shows (the same seed and settings draw the same token).

Events (``api_name``): ``next_token`` (answer so far, temperature, top_k, top_p, message, system prompt,
engine -> the bars, and JSON: the distribution and the reshaped bars); ``next_token_sample``.
"""

from __future__ import annotations

import html
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError, Message
from ..text_clean import clean_text
from ..tokens import MAX_TOKENS, Distribution, Reshaped, next_token_distribution, reshape, sample, visible
from .shared import checked_slider
from .token_view import BarRow, bars_html, empty_html, percent

Updates = dict[Any, Any]

INTRO = (
    "The model's probabilities for the **next token**, before any sampling setting, and what temperature, "
    "top-k and top-p make of them. It reads the conversation up to your last message (before you send "
    "anything: the message in the box) and then *Answer so far*. Nothing is generated."
)
_CUTS = {"top_k": "cut by top-k", "top_p": "cut by top-p", "greedy": "not drawn (greedy)"}


def explorer_html(dist: Distribution, shaped: Reshaped, drawn: int | None = None, context: str = "") -> str:
    """The bars: the model's probability (dashed) and the chance to be drawn (solid); cuts struck through."""
    rows = []
    for i, b in enumerate(shaped.bars):
        label = visible(b.token) + (" (ends the answer)" if b.special else "")
        if b.cut:
            text = f"{percent(b.raw)} · {_CUTS.get(b.cut, b.cut)}"
        else:
            text = f"{percent(b.raw)} → {percent(b.probability)}"
        classes = " ".join(c for c, on in (("cut", b.cut is not None), ("picked", i == drawn)) if on)
        rows.append(BarRow(label, b.probability, text, behind=b.raw, classes=classes))
    order = (
        "temperature first, then top-k and top-p (as transformers does)"
        if shaped.order == "temperature_first"
        else "top-k and top-p first, then temperature (as llama.cpp does)"
    )
    title = f"Next token {context} · {dist.model} on {dist.engine}".replace("  ", " ")
    footer = (
        f"Dashed: the model's own probability; solid: the chance to be drawn at temperature {shaped.temperature:g}, "
        f"top-k {shaped.top_k or 'off'}, top-p {shaped.top_p:g} ({order}). The {len(dist.tokens)} tokens shown; all "
        f"others together: {percent(dist.other)} (left out of the bars)."
    )
    return bars_html(rows, title=title, footer=footer)


@dataclass(frozen=True)
class Reading:
    """A distribution read from the model, and where in the conversation (for the chart's title)."""

    dist: Distribution
    context: str


def context_of(messages: Sequence[Message]) -> str:
    """Where the next token goes, in words: after the started answer, or at the start of the answer to the
    last message."""
    last = messages[-1]
    if last.role == "assistant":
        return f"after “…{last.content[-50:]}”"
    return f"at the start of the answer to “{last.content[:50]}{'…' if len(last.content) > 50 else ''}”"


def _number(value: Any, name: str, cast: type = float) -> Any:
    try:
        return cast(float(value)) if cast is int else cast(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number.") from None


@dataclass
class Explorer:
    """The explorer's components and handlers (each returns ``{component: value}`` updates)."""

    runtime: Any
    accordion: gr.Accordion
    prefix: gr.Textbox
    read_btn: gr.Button
    temperature: gr.Slider
    top_k: gr.Slider
    top_p: gr.Slider
    chart: gr.HTML
    seed: gr.Textbox
    sample_btn: gr.Button
    drawn: gr.Markdown
    dist: gr.State  # the last Reading (the sliders reshape its distribution without the model)
    json: gr.JSON  # hidden: the API's output
    #: The Local tab's components the reading depends on (set by :func:`wire`).
    context: tuple[Any, ...] = ()

    @property
    def sliders(self) -> list[Any]:
        return [self.temperature, self.top_k, self.top_p]

    # ------------------------------------------------------------------ handlers
    def read(
        self,
        prefix: str,
        temperature: Any,
        top_k: Any,
        top_p: Any,
        message: str,
        system: str,
        spec: str,
        engine: Any,
        hist: list,
        request: gr.Request | None = None,
    ) -> Updates:
        """Ask the local model for the most likely next tokens, then show them with the sliders' settings."""
        messages = self.messages(hist, message, system, prefix)
        engine = self._engine(engine)
        try:
            self.runtime.check_request(request.session_hash if request else None, messages, {"max_new_tokens": 1})
            backend = self.runtime.local_backend(spec or None, engine=engine)
            dist = next_token_distribution(backend, messages, MAX_TOKENS)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        reading = Reading(dist, context_of(messages))
        return {**self._show(reading, temperature, top_k, top_p), self.dist: reading}

    def messages(self, hist: list, message: str, system: str, prefix: str) -> list[Message]:
        """The conversation up to its last user message (or the typed message), then the answer so far."""
        base = H.for_retry(H.without_pending(hist or []))
        text = clean_text(message or "")
        if not base and not H.is_blank(text):
            base = [H.user(text)]
        if not base:
            raise gr.Error("Type a message first (or send one): the explorer reads what the model would write next.")
        messages = H.to_messages(base, system=clean_text(system or ""))
        prefix = clean_text(prefix or "")
        return messages + [Message("assistant", prefix)] if prefix else messages

    def _engine(self, engine: Any) -> str | None:
        value = engine.strip() if isinstance(engine, str) else ""
        return value or None

    def reshaped(self, reading: Any, temperature: Any, top_k: Any, top_p: Any) -> Updates:
        """The sliders moved: the same distribution, reshaped (no model call)."""
        if not isinstance(reading, Reading):
            return {self.chart: gr.skip()}
        return self._show(reading, temperature, top_k, top_p)

    def draw(self, reading: Any, temperature: Any, top_k: Any, top_p: Any, seed: Any) -> Updates:
        """Draw one token with these settings and a seed (a random one, shown, when the box is empty)."""
        if not isinstance(reading, Reading):
            raise gr.Error("Read the next tokens first.")
        text = str(seed).strip() if seed is not None else ""
        value = random.SystemRandom().randrange(2**31) if not text else _number(text, "The seed", int)
        dist = reading.dist
        shaped = self._reshape(dist, temperature, top_k, top_p)
        bar = sample(shaped, value)
        drawn = shaped.bars.index(bar)
        line = (
            f"🎲 Drew **{html.escape(visible(bar.token))}** ({percent(bar.probability)} with these settings) "
            "with seed "
            f"**{value}**: the same seed and settings always draw the same token."
        )
        payload = {**self._payload(dist, shaped), "drawn": {"index": drawn, "token": bar.token, "seed": value}}
        return {self.chart: explorer_html(dist, shaped, drawn, reading.context), self.drawn: line, self.json: payload}

    # ------------------------------------------------------------------ views
    def _reshape(self, dist: Distribution, temperature: Any, top_k: Any, top_p: Any) -> Reshaped:
        t, k, p = _number(temperature, "temperature"), _number(top_k, "top_k", int), _number(top_p, "top_p")
        try:
            return reshape(dist, t, k, p)
        except BackendError as e:
            raise gr.Error(str(e)) from e

    def _show(self, reading: Reading, temperature: Any, top_k: Any, top_p: Any) -> Updates:
        shaped = self._reshape(reading.dist, temperature, top_k, top_p)
        return {
            self.chart: explorer_html(reading.dist, shaped, context=reading.context),
            self.json: self._payload(reading.dist, shaped),
            self.drawn: "",
        }

    @staticmethod
    def _payload(dist: Distribution, shaped: Reshaped) -> dict[str, Any]:
        return {"distribution": dist.to_json(), "reshaped": shaped.to_json(), "drawn": None}

    def open_accordion(self) -> gr.Accordion:
        return gr.Accordion(open=True)

    def read_event(self) -> dict[str, Any]:
        """The reading as keyword arguments of an event (``.then(**explorer.read_event())``)."""
        return {
            "fn": self.read,
            "inputs": [self.prefix, *self.sliders, *self.context],
            "outputs": [self.chart, self.json, self.drawn, self.dist],
            "api_visibility": "private",
            "concurrency_id": "next-token",
            "concurrency_limit": 2,
            "show_progress": "minimal",
        }


def build(runtime: Any, *, open: bool = False) -> Explorer:
    """The explorer's components, inside the current layout."""
    with gr.Accordion("Next-token explorer", open=open, elem_id="local-nt") as accordion:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=True):
            prefix = gr.Textbox(
                label="Answer so far",
                placeholder="empty = the start of the answer",
                lines=1,
                max_lines=4,
                scale=4,
                elem_id="local-nt-prefix",
            )
            read_btn = gr.Button("Read the next tokens", variant="primary", scale=1, elem_id="local-nt-read")
        with gr.Row():
            temperature = checked_slider(0, 2, value=1.0, step=0.05, label="explorer temperature", info="0 = greedy")
            top_k = checked_slider(0, MAX_TOKENS, value=0, step=1, label="explorer top-k", info="0 = off")
            top_p = checked_slider(0, 1, value=1.0, step=0.01, label="explorer top-p", info="1 = off")
        chart = gr.HTML(empty_html("Press “Read the next tokens”."), elem_id="local-nt-bars")
        with gr.Row(equal_height=True):
            seed = gr.Textbox(label="seed", placeholder="empty = random", scale=2, elem_id="local-nt-seed")
            sample_btn = gr.Button("🎲 Sample one token", scale=1, elem_id="local-nt-sample")
        drawn = gr.Markdown("", elem_id="local-nt-drawn")
        dist, json = gr.State(None), gr.JSON(None, visible=False)
    return Explorer(
        runtime, accordion, prefix, read_btn, temperature, top_k, top_p, chart, seed, sample_btn, drawn, dist, json
    )


def wire(explorer: Explorer, *, message: Any, system: Any, spec: Any, engine: Any, state: Any) -> None:
    """The explorer's events; ``message`` … ``state``: the Local tab's message box, system prompt, model,
    engine and conversation."""
    e = explorer
    e.context = (message, system, spec, engine, state)
    read = e.read_event()
    gr.on([e.read_btn.click, e.prefix.submit], **{**read, "api_visibility": "private"})
    gr.on([], **{**read, "api_visibility": "public", "api_name": "next_token"})
    quick: dict[str, Any] = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
    gr.on([s.change for s in e.sliders], e.reshaped, [e.dist, *e.sliders], [e.chart, e.json, e.drawn], **quick)
    gr.on(
        [e.sample_btn.click],
        e.draw,
        [e.dist, *e.sliders, e.seed],
        [e.chart, e.drawn, e.json],
        api_name="next_token_sample",
        queue=False,
        show_progress="hidden",
    )

"""The "Token probabilities" panel under a tab's chat (Local, Hosted API, Chat): the last answer as tokens shaded
by probability; a click on a token shows its alternatives as bars. Continuing from a token (Local tab only)
is :mod:`.token_branch`; the data come from :mod:`llm_levels.tokens`.

A tab asks for the probabilities only while its "Show token probabilities" box is ticked (they cost a little
on every engine, and some hosted servers refuse them): :func:`top_logprobs` turns the box and the
"alternatives" slider into ``GenParams.top_logprobs``. When a turn ends, the tab merges :func:`finished` into its
last update: the panel shows the answer's tokens (or why there are none: ``turns.Done.note``) and keeps them
in the session as an :class:`AnswerTokens`.

Events: ``<api_name>`` (``token_probabilities`` for the Local tab): the last answer's per-token data as JSON
(:meth:`AnswerTokens.to_json`); selecting a token (a click on it, or its number typed in "Token #").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import history as H
from ..core import GenParams, Message, TokenLogprob
from ..params import PARAM_SPECS
from ..tokens import token_table, visible
from ..turns import Done
from .shared import checked_slider
from .token_view import SELECT_JS, alternatives_html, empty_html, note_html, tokens_html

Updates = dict[Any, Any]

#: Alternatives per token asked for when the box is ticked, unless the slider says otherwise.
DEFAULT_ALTERNATIVES = 5
#: What the panel shows before an answer with probabilities.
PLACEHOLDER = (
    "Tick “Show token probabilities” and send a message: the answer shows here as tokens, shaded by how "
    "likely the model found each one."
)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (Gradio hashes a State's value)
class AnswerTokens:
    """The last answer of a session with its tokens, and what is needed to continue it from one of them.

    ``base``: the chat before the answer (ending with the user's message); ``shown``: the chat as the answer
    left it; ``messages``: what the model was given. ``engine`` is the local engine that answered (None for a
    hosted backend: no continuing). ``original`` is the answer before its first branch (for Restore), with
    ``branch`` saying what was changed.
    """

    tokens: tuple[TokenLogprob, ...]
    text: str
    base: tuple[dict[str, Any], ...] = ()
    shown: tuple[dict[str, Any], ...] = ()
    messages: tuple[Message, ...] = ()
    engine: str | None = None
    model: str = ""
    params: GenParams | None = None
    note: str | None = None
    branch: str | None = None
    original: AnswerTokens | None = None

    def token(self, index: Any) -> TokenLogprob:
        """Token ``index`` (any number-like value); a gr.Error names the valid range."""
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise gr.Error("Pick a token: click one in the answer, or type its number.") from None
        if not 0 <= i < len(self.tokens):
            raise gr.Error(f"There is no token {i}: this answer has tokens 0 to {len(self.tokens) - 1}.")
        return self.tokens[i]

    def to_json(self) -> dict[str, Any]:
        """What the ``token_probabilities`` API returns: :func:`~llm_levels.tokens.token_table` (each token, its
        probability and alternatives, the mean probability and perplexity) with the answer's text, model,
        engine (None: hosted), the note saying why probabilities are missing, and the branch, if any."""
        return {
            **token_table(self.tokens),
            "text": self.text,
            "model": self.model,
            "engine": self.engine,
            "note": self.note,
            "branch": self.branch,
        }


def no_answer_json() -> dict[str, Any]:
    """``token_probabilities`` before any answer with probabilities."""
    return {**token_table(()), "text": None, "model": None, "engine": None, "note": PLACEHOLDER, "branch": None}


def top_logprobs(show: Any, alternatives: Any) -> int | None:
    """``GenParams.top_logprobs`` for the panel's box and slider: None (off) unless ``show``."""
    if not show or str(show).lower() in ("false", "0"):
        return None
    spec = PARAM_SPECS["top_logprobs"]
    try:
        k = int(float(alternatives)) if alternatives not in (None, "") else DEFAULT_ALTERNATIVES
    except (TypeError, ValueError):
        raise gr.Error(f"Alternatives per token must be a number from 1 to {spec.maximum}.") from None
    if not 1 <= k <= spec.maximum:
        raise gr.Error(f"Alternatives per token must be from 1 to {spec.maximum} (got {k}).")
    return k


def with_top_logprobs(params: Any, show: Any, alternatives: Any) -> Any:
    """``params`` (GenParams or a dict of form values) asking for the probabilities when ``show``."""
    k = top_logprobs(show, alternatives)
    if isinstance(params, GenParams):
        return params.with_(top_logprobs=k)
    return {**dict(params or {}), "top_logprobs": k}


def default_alternative(token: TokenLogprob) -> int:
    """The alternative offered first: the most likely one that is not the answer's own token."""
    return next((a for a, (text, _) in enumerate(token.top) if text != token.token), 0)


@dataclass
class TokenPanel:
    """One tab's panel: its components and handlers. ``local``: the Local tab's (bars can be picked to continue
    with; :mod:`.token_branch` adds the continue, restore and explore buttons)."""

    prefix: str
    show: gr.Checkbox
    alternatives: gr.Slider
    answer: gr.HTML
    index: gr.Number
    chart: gr.HTML
    data: gr.State  # AnswerTokens | None
    json: gr.JSON  # hidden: the API's output
    local: bool = False
    #: The tab's send and retry output only :attr:`data`; the rest follows its change event (Chat: so its API
    #: results are what they were).
    via_state: bool = False
    alt: gr.Number | None = None
    continue_btn: gr.Button | None = None
    restore_btn: gr.Button | None = None
    explore_btn: gr.Button | None = None

    @property
    def inputs(self) -> list[Any]:
        """The tab's send and retry take these last: the box and the slider."""
        return [self.show, self.alternatives]

    @property
    def outputs(self) -> list[Any]:
        """What a finished turn updates (:meth:`done`)."""
        out = [self.answer, self.index, self.chart, self.data]
        if self.local:
            out += [self.alt, self.continue_btn, self.restore_btn]
        return out

    @property
    def turn_outputs(self) -> list[Any]:
        """What the tab's send and retry output (see :attr:`via_state`)."""
        return [self.data] if self.via_state else self.outputs

    def render(self, data: Any) -> Updates:
        """Every output but the data, showing ``data`` (its change event, :attr:`via_state`)."""
        shown = self.view(data if isinstance(data, AnswerTokens) else None)
        return {c: v for c, v in shown.items() if c is not self.data}

    # ------------------------------------------------------------------ a turn's end
    def done(
        self,
        base: Sequence[Any],
        messages: Sequence[Message],
        done: Done,
        params: Any = None,
        *,
        engine: str | None = None,
        model: str = "",
    ) -> Updates:
        """The panel after a turn: the answer's tokens (every output, so an API client's final result has them)."""
        if params is None:  # not known here: asked for when the turn reports tokens or why there are none
            asked = bool(done.tokens or done.note) or None
        elif isinstance(params, dict):
            asked = params.get("top_logprobs")
        else:
            asked = getattr(params, "top_logprobs", None)
        if asked is None:
            return self.cleared()
        data = AnswerTokens(
            tuple(done.tokens),
            done.text,
            base=tuple(base),
            shown=tuple(H.ended(list(base), done.text, done.finish_reason)),
            messages=tuple(messages),
            engine=engine if self.local else None,
            model=model,
            params=params if isinstance(params, GenParams) else None,
            note=done.note or (None if done.tokens or not done.text else "The backend sent no token probabilities."),
        )
        return self.view(data)

    def view(self, data: AnswerTokens | None, index: int | None = None, alt: int | None = None) -> Updates:
        """Every output showing ``data``, with token ``index`` selected (its alternatives charted)."""
        if data is None:
            return self.cleared()
        body = tokens_html(data.tokens, selected=index, hint=self.hint) if data.tokens else ""
        if data.note:
            body += note_html(data.note)
        if data.branch:
            body += note_html("🔀 " + data.branch)
        out: Updates = {
            self.answer: body or empty_html("The answer was empty."),
            self.index: index,
            self.chart: self.chart_html(data, index, alt),
            self.data: data,
        }
        if self.local:
            token = data.tokens[index] if index is not None else None
            out[self.alt] = alt
            out[self.continue_btn] = gr.Button(value=continue_label(token, alt), interactive=token is not None)
            out[self.restore_btn] = gr.Button(visible=data.original is not None)
        return out

    def cleared(self) -> Updates:
        """Every output empty (Clear, Undo, an answer without probabilities)."""
        out: Updates = {self.answer: empty_html(PLACEHOLDER), self.index: None, self.chart: "", self.data: None}
        if self.local:
            out[self.alt] = None
            out[self.continue_btn] = gr.Button(value=continue_label(None, None), interactive=False)
            out[self.restore_btn] = gr.Button(visible=False)
        return out

    @property
    def hint(self) -> str:
        return "click a token for its alternatives" + (" and to continue from it" if self.local else "")

    def chart_html(self, data: AnswerTokens, index: int | None, alt: int | None) -> str:
        if index is None or not data.tokens:
            return empty_html("Click a token in the answer to see the alternatives the model had there.")
        return alternatives_html(data.tokens[index], index, picked=alt, clickable=self.local)

    # ------------------------------------------------------------------ handlers
    def select(self, data: Any, evt: gr.SelectData) -> Updates:
        """A click on a token: its alternatives, the first other one picked (Local)."""
        return self.pick_token(data, evt.index)

    def pick_token(self, data: Any, index: Any) -> Updates:
        """Token ``index`` selected (typed in "Token #")."""
        if not isinstance(data, AnswerTokens) or not data.tokens:
            raise gr.Error(
                "No answer with token probabilities yet: tick “Show token probabilities” and send a message."
            )
        token = data.token(index)
        i = int(index)
        return self.view(data, i, default_alternative(token) if self.local else None)

    def pick_alternative(self, data: Any, index: Any, evt: gr.SelectData) -> Updates:
        """A click on a bar of the chart: that alternative is the one to continue with."""
        if not isinstance(data, AnswerTokens) or not data.tokens:
            return {self.alt: gr.skip()}
        data.token(index)
        return self.view(data, int(index), int(evt.index))

    def pick_alternative_typed(self, data: Any, index: Any, alt: Any) -> Updates:
        """Alternative ``alt`` of token ``index`` typed in "Alternative #"."""
        if not isinstance(data, AnswerTokens) or not data.tokens:
            return {self.alt: gr.skip()}
        token = data.token(index)
        try:
            a = int(alt)
        except (TypeError, ValueError):
            raise gr.Error("Type the alternative's number (0: the most likely).") from None
        if not 0 <= a < len(token.top):
            raise gr.Error(f"Token {int(index)} has alternatives 0 to {len(token.top) - 1}.")
        return self.view(data, int(index), a)

    def api_data(self, data: Any) -> dict[str, Any]:
        """The last answer's per-token data as JSON (see :meth:`AnswerTokens.to_json`)."""
        return data.to_json() if isinstance(data, AnswerTokens) else no_answer_json()


def continue_label(token: TokenLogprob | None, alt: int | None) -> str:
    """The continue button's text: which token goes in."""
    if token is None or alt is None or not 0 <= alt < len(token.top):
        return "▶ Continue from the token with an alternative"
    text, lp = token.top[alt]
    return f"▶ Continue with {visible(text)} ({math.exp(lp) * 100:.1f}%) in place of {visible(token.token)}"


def build_panel(prefix: str, *, local: bool = False, open: bool = True, via_state: bool = False) -> TokenPanel:
    """The panel's components, inside the current layout (an accordion); see :class:`TokenPanel`."""
    spec = PARAM_SPECS["top_logprobs"]
    with gr.Accordion("Token probabilities", open=open, elem_id=f"{prefix}-tok"):
        with gr.Row(equal_height=True):
            show = gr.Checkbox(
                value=False,
                label="Show token probabilities",
                info="Each answer token's probability and its most likely alternatives (off: nothing asked for).",
                elem_id=f"{prefix}-tok-show",
            )
            alternatives = checked_slider(
                1, spec.maximum, value=DEFAULT_ALTERNATIVES, step=1, label="alternatives per token (top_logprobs)"
            )
        answer = gr.HTML(empty_html(PLACEHOLDER), js_on_load=SELECT_JS, elem_id=f"{prefix}-tok-answer")
        with gr.Row(equal_height=True):
            index = gr.Number(
                None, label="Token #", precision=0, minimum=0, elem_id=f"{prefix}-tok-index", scale=1, min_width=90
            )
            alt = None
            if local:
                alt = gr.Number(
                    None,
                    label="Alternative #",
                    precision=0,
                    minimum=0,
                    elem_id=f"{prefix}-tok-alt",
                    scale=1,
                    min_width=90,
                )
                continue_btn = gr.Button(
                    continue_label(None, None),
                    interactive=False,
                    variant="primary",
                    size="sm",
                    scale=3,
                    elem_id=f"{prefix}-tok-continue",
                )
        chart = gr.HTML("", js_on_load=SELECT_JS if local else None, elem_id=f"{prefix}-tok-alts")
        data = gr.State(None)
        json = gr.JSON(None, visible=False)
        panel = TokenPanel(
            prefix, show, alternatives, answer, index, chart, data, json, local=local, alt=alt, via_state=via_state
        )
        if local:
            panel.continue_btn = continue_btn
            with gr.Row():
                panel.restore_btn = gr.Button(
                    "↺ Restore the original answer", visible=False, size="sm", elem_id=f"{prefix}-tok-restore"
                )
                panel.explore_btn = gr.Button(
                    "🔎 Next-token explorer from here", size="sm", elem_id=f"{prefix}-tok-explore"
                )
    return panel


def wire_panel(panel: TokenPanel, *, api_name: str, clear_on: Sequence[Any] = ()) -> None:
    """The panel's own events: selecting a token or an alternative, the API's data, emptied by ``clear_on``."""
    quick: dict[str, Any] = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
    panel.answer.select(panel.select, [panel.data], panel.outputs, **quick)
    panel.index.submit(panel.pick_token, [panel.data, panel.index], panel.outputs, **quick)
    if panel.local:
        panel.chart.select(panel.pick_alternative, [panel.data, panel.index], panel.outputs, **quick)
        panel.alt.submit(panel.pick_alternative_typed, [panel.data, panel.index, panel.alt], panel.outputs, **quick)
    gr.on([], panel.api_data, [panel.data], [panel.json], api_name=api_name, queue=False)
    if clear_on:
        gr.on(list(clear_on), panel.cleared, None, panel.outputs, **quick)
    if panel.via_state:
        shown = [c for c in panel.outputs if c is not panel.data]
        panel.data.change(panel.render, [panel.data], shown, **quick)


def wire_chat_panel(panel: TokenPanel, chat: Any, api_name: str) -> None:
    """:func:`wire_panel` for a tab's :class:`~llm_levels.ui.shared.ChatPanel` ``chat``: its Clear and Undo empty
    the panel."""
    wire_panel(
        panel,
        api_name=api_name,
        clear_on=[chat.clear_btn.click, chat.chatbot.clear, chat.undo_btn.click, chat.chatbot.undo],
    )


def finished(panel: TokenPanel | None, *args: Any, **kwargs: Any) -> Updates:
    """:meth:`TokenPanel.done` (what the tab's turn outputs of it) for a tab that may have no panel: nothing."""
    if panel is None:
        return {}
    keep = {id(c) for c in panel.turn_outputs}
    return {c: v for c, v in panel.done(*args, **kwargs).items() if id(c) in keep}


def outputs_of(panel: TokenPanel | None) -> list[Any]:
    """The panel's outputs for a tab's send and retry (none without a panel)."""
    return panel.turn_outputs if panel is not None else []


def inputs_of(panel: TokenPanel | None) -> list[Any]:
    """The panel's inputs for a tab's send and retry (none without a panel)."""
    return panel.inputs if panel is not None else []

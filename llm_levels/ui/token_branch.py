"""Continue an answer from one of its tokens (the Local tab): the answer is cut at the token, an alternative
goes in its place, and the model writes the rest, so a learner sees how one choice changes everything after
it. The model is not sent a new message: the started answer is given to it as the beginning of its own turn
(:func:`llm_levels.tokens.continue_with`), and it streams only what comes after; the chat shows the whole.

The branch replaces the answer in the conversation (what follows builds on it) with a "🔀 Branch" note
under it (the model never sees notes); Restore puts the original answer back while the branch is still the
last answer. A continuation runs as the tab's turn (:class:`~llm_levels.ui.running.Turns`): Stop ends it with
what came, Clear and Undo drop it, and a second one meanwhile is refused.

Events (``api_name``): ``local_continue`` (token number, alternative number, engine-independent: it runs on
the engine that wrote the answer), ``local_restore``; "Next-token explorer from here" fills the explorer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError, TokenLogprob
from ..tokens import continue_with, visible
from ..turns import Delta, Done, Failed, Loading, TurnRequest, Waiting, run_turn
from .running import BUSY, Turn, for_page
from .shared import wait_text, wait_title
from .token_panel import AnswerTokens, TokenPanel, wire_panel

Updates = dict[Any, Any]

#: Title of the note under a branched answer.
BRANCH_TITLE = "🔀 Branch"
# An alternative that is a special end token (llama.cpp shows one as "", transformers by its name).
_END_TOKEN = re.compile(r"<\|?/?[\w.-]*(end|eos|eot)[\w.-]*\|?>|</s>", re.IGNORECASE)


def ends_answer(token: str) -> bool:
    """Whether an alternative is an end token: picking it ends the answer there."""
    return not token or bool(_END_TOKEN.fullmatch(token))


def describe(data: AnswerTokens, index: int, alt: int) -> str:
    """The branch in words: which token was replaced by which, with their probabilities."""
    old, (new, lp) = data.tokens[index], data.tokens[index].top[alt]
    new_p = TokenLogprob(new, lp).probability
    return (
        f"Token #{index} {visible(old.token)} ({old.probability * 100:.1f}%) was replaced by {visible(new)} "
        f"({new_p * 100:.1f}%); the model wrote the rest."
    )


@dataclass
class Branching:
    """The Local tab's continue and restore handlers (``tab``: its :class:`~llm_levels.ui.local.LocalTab`)."""

    tab: Any
    panel: TokenPanel

    def continue_from(
        self, index: Any, alt: Any, spec: str, data: Any, hist: list, request: gr.Request | None = None
    ) -> Iterator[Updates]:
        """Cut the answer at token ``index``, put alternative ``alt`` in its place, and stream the rest."""
        data, i, a = self._checked(data, index, alt, hist)
        chosen_text, chosen_lp = data.tokens[i].top[a]
        chosen = TokenLogprob(chosen_text, chosen_lp, data.tokens[i].top)
        continued = continue_with(data.messages, data.tokens, i, a)
        prefix = continued[-1].content
        branched = replace(data, original=data.original or data, branch=describe(data, i, a), note=None)
        if ends_answer(chosen_text):  # the answer ends at this token: nothing for the model to write
            yield self._finished(branched, data.tokens[:i], "".join(t.token for t in data.tokens[:i]), "stop", None)
            return
        params = data.params.with_(max_new_tokens=max(1, data.params.max_new_tokens - i - 1))
        session = request.session_hash if request else None
        turn = self.tab.turns.begin(session)
        if turn is None:
            raise gr.Error(BUSY)
        runtime = self.tab.runtime
        try:
            option = runtime.local_option(data.engine)
            request_ = TurnRequest(option, continued, params, session_id=session, spec=spec, engine=data.engine)
            events = run_turn(runtime, request_, cancel=turn.cancel)
        except BaseException as e:
            self.tab.turns.end(session, turn)
            if isinstance(e, BackendError):
                raise gr.Error(str(e)) from e
            raise
        updates = self._stream(branched, (*data.tokens[:i], chosen), prefix, events, turn)
        yield from self.tab.turns.guarded(session, turn, updates, self.tab.chatbot, self.tab.state)

    def _checked(self, data: Any, index: Any, alt: Any, hist: list) -> tuple[AnswerTokens, int, int]:
        """The answer, token and alternative to continue with; a gr.Error says what is missing."""
        if not isinstance(data, AnswerTokens) or not data.tokens:
            raise gr.Error(
                "No answer with token probabilities yet: tick “Show token probabilities” and send a message."
            )
        if data.engine is None or data.params is None:
            raise gr.Error("Continuing from a token needs an answer of the local model.")
        token = data.token(index)
        try:
            a = int(alt)
        except (TypeError, ValueError):
            raise gr.Error("Pick the token to continue with: click one of the bars.") from None
        if not 0 <= a < len(token.top):
            raise gr.Error(f"Token {int(index)} has alternatives 0 to {len(token.top) - 1}.")
        if H.for_retry(H.without_pending(hist or [])) != list(data.base):
            raise gr.Error("The conversation changed since this answer: continue from a token of the last answer.")
        return data, int(index), a

    def _stream(
        self, data: AnswerTokens, kept: tuple[TokenLogprob, ...], prefix: str, events: Iterator[Any], turn: Turn
    ) -> Iterator[Updates]:
        base, chat, state = list(data.base), self.tab.chatbot, self.tab.state
        yield {chat: base + [H.assistant(prefix)], state: base + [H.assistant(prefix)]}
        text, ended = "", False
        with closing(events), self.tab.runtime.pacer.streaming() as pace:
            for event in events:
                if isinstance(event, (Loading, Waiting)):
                    note = H.note(wait_text(event), title=wait_title(event), pending=True)
                    yield {chat: base + [H.assistant(prefix), note]}
                elif isinstance(event, Delta):
                    text += event.text
                    if pace.due():
                        shown = base + [H.assistant(prefix + text)]
                        yield {chat: shown, state: shown}
                elif isinstance(event, Done):
                    ended = True
                    new = replace(data, note=event.note)
                    yield self._finished(new, (*kept, *event.tokens), prefix + event.text, event.finish_reason, event)
                elif isinstance(event, Failed):
                    ended = True
                    failed = H.failure(base, str(event.error), event.error.kind, prefix + event.partial)
                    yield {chat: failed, state: failed, self.tab.metrics_md: f"not continued ({event.error.kind})"}
        if not ended and turn.stopped:
            stopped = H.ended(base, prefix + text, "cancelled")
            yield {chat: stopped, state: stopped}

    def _finished(
        self, data: AnswerTokens, tokens: tuple[TokenLogprob, ...], text: str, reason: str | None, done: Done | None
    ) -> Updates:
        """The chat with the branched answer (and its note), the panel showing its tokens."""
        shown = H.ended(list(data.base), text, reason) + [H.note(data.branch or "", title=BRANCH_TITLE)]
        new = replace(data, tokens=tokens, text=text, shown=tuple(shown))
        line = "🔀 branched answer" + (f" · {done.metrics.summary()}" if done is not None else " (no model call)")
        return {
            self.tab.chatbot: shown,
            self.tab.state: shown,
            self.tab.metrics_md: line,
            **self.panel.view(new),
        }

    def restore(self, data: Any, hist: list) -> Updates:
        """Put the original answer back (while the branch is still the last answer)."""
        if not isinstance(data, AnswerTokens) or data.original is None:
            raise gr.Error("Nothing to restore: this answer is not a branch.")
        if H.without_pending(hist or []) != list(data.shown):
            raise gr.Error(
                "The conversation went on after the branch: Restore works while the branch is the last answer."
            )
        original = data.original
        return {
            self.tab.chatbot: list(original.shown),
            self.tab.state: list(original.shown),
            **self.panel.view(original),
        }

    def explore_from(self, data: Any, index: Any) -> str:
        """The answer before token ``index``: the explorer's "Answer so far"."""
        if not isinstance(data, AnswerTokens) or not data.tokens:
            raise gr.Error(
                "No answer with token probabilities yet: tick “Show token probabilities” and send a message."
            )
        if index is None:
            return ""
        data.token(index)
        return "".join(t.token for t in data.tokens[: int(index)])


def wire_local(tab: Any, panel: TokenPanel, explorer: Any, lane: dict[str, Any], clear_on: list[Any]) -> Branching:
    """The Local tab's panel events: select, continue, restore, explore from here, the API's data; ``clear_on``:
    the tab's Clear and Undo triggers (the panel empties)."""
    wire_panel(panel, api_name="token_probabilities", clear_on=clear_on)
    branching = Branching(tab, panel)
    outputs = [tab.chatbot, tab.state, tab.metrics_md, *panel.outputs]
    inputs = [panel.index, panel.alt, tab.spec_state, panel.data, tab.state]
    gr.on([], branching.continue_from, inputs, outputs, api_name="local_continue", **lane)
    page = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "multiple", **lane}
    panel.continue_btn.click(for_page(branching.continue_from, tab.chatbot, tab.state), inputs, outputs, **page)
    panel.restore_btn.click(
        branching.restore,
        [panel.data, tab.state],
        [tab.chatbot, tab.state, *panel.outputs],
        api_name="local_restore",
        queue=False,
        show_progress="hidden",
    )
    if explorer is not None:
        panel.explore_btn.click(
            branching.explore_from, [panel.data, panel.index], [explorer.prefix], queue=False, api_visibility="private"
        ).success(explorer.open_accordion, None, [explorer.accordion], queue=False, api_visibility="private").then(
            **explorer.read_event()
        )
    return branching


def attach_local(tab: Any, panel: TokenPanel, explorer: Any, sampling: list[Any], buttons: Any) -> Branching:
    """Hook the panel and the next-token explorer into the Local tab (after :func:`~.local_layout.wire`):
    ``sampling``: the tab's sampling inputs (the system prompt first), ``buttons``: its buttons."""
    from . import next_token_panel
    from .shared import lane

    if explorer is not None:
        next_token_panel.wire(
            explorer, message=tab.textbox, system=sampling[0], spec=tab.spec_state, engine=tab.engine, state=tab.state
        )
    clear_on = [buttons.clear.click, tab.chatbot.clear, buttons.undo.click, tab.chatbot.undo]
    return wire_local(tab, panel, explorer, lane("local-tab"), clear_on)

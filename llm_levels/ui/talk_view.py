"""What the presenter view shows for a step: the prompt, the answers as cards side by side, the Lab table,
and the request in Python for a level-2 step. Pure functions from a step (and its view) to text/HTML."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from ..snippets import openai_snippet
from ..talks.format import Step
from ..talks.runner import Column, StepView, plan, step_messages
from .token_view import tokens_html

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import AppRuntime

CSS = """
#talk-presenter { border: 2px solid var(--color-accent); border-radius: 14px; padding: 18px 22px;
  background: var(--block-background-fill); }
#talk-presenter, #talk-presenter .prose { font-size: 1.35rem; }
#talk-header h2 { font-size: 2.1rem !important; margin: 0 0 6px 0; }
#talk-prompt { font-size: 1.45rem; }
.talk-cards { display: grid; gap: 14px; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
.talk-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 14px; }
.talk-card .talk-label { font-weight: 600; font-size: 1.05rem; color: var(--body-text-color-subdued); }
.talk-card .talk-text { white-space: pre-wrap; font-size: 1.4rem; line-height: 1.5; margin: 8px 0; }
.talk-card .talk-detail { font-size: 0.95rem; color: var(--body-text-color-subdued); }
.talk-card.failed { border-color: var(--error-border-color, #ef4444); }
.talk-card.recorded { border: 2px dashed #d97706; }
.talk-card .talk-recorded { color: #b45309; font-weight: 700; font-size: 1rem; }
"""

LAB_HEADERS = ["k (examples in the prompt)", "weighted F1", "accuracy", "rows", "Flan-T5, the article"]

_STATE_MARK = {"waiting": "⏳", "answering": "✍️", "done": "✅", "failed": "⚠️", "recorded": "📼"}


def header_md(talk_header: str) -> str:
    return f"## {html.escape(talk_header)}"


def prompt_md(step: Step) -> str:
    """The step's prompt and its settings, as the audience should read them."""
    if step.tab == "lab":
        shots = ", ".join(str(k) for k in step.shots)
        return f"**Lab:** sentiment of financial news, scored at k = {shots} examples in the prompt."
    p = step.params
    settings = [f"temperature {p.temperature:g}", f"max tokens {p.max_new_tokens}"]
    if step.temperatures:
        settings[0] = "temperatures " + " / ".join(f"{t:g}" for t in step.temperatures)
    if p.seed is not None:
        settings.append(f"seed {p.seed}")
    if step.n > 1:
        settings.append(f"n = {step.n}")
    lines = []
    if step.system:
        lines.append(f"**System:** {html.escape(step.system)}")
    for user, assistant in step.examples:
        lines.append(f"**User:** {html.escape(user)} → **Assistant:** {html.escape(assistant)}")
    lines.append(f"**Prompt:** {html.escape(step.prompt)}")
    lines.append(f"<sub>{' · '.join(settings)}</sub>")
    return "\n\n".join(lines)


def cards_html(view: StepView | None) -> str:
    """The answers as cards; a recorded one carries its "recorded at rehearsal" label."""
    if view is None:
        return '<div class="talk-cards"><div class="talk-card idle">Press → (or Run) to run this step.</div></div>'
    return '<div class="talk-cards">' + "".join(_card(c) for c in view.columns) + "</div>"


def _card(c: Column) -> str:
    body = tokens_html(c.tokens) if c.tokens and c.state == "done" else html.escape(c.text or "…")
    recorded = f'<div class="talk-recorded">📼 {html.escape(c.detail)}</div>' if c.state == "recorded" else ""
    detail = "" if c.state == "recorded" else f'<div class="talk-detail">{html.escape(c.detail)}</div>'
    return (
        f'<div class="talk-card {c.state}"><div class="talk-label">{_STATE_MARK.get(c.state, "")} '
        f'{html.escape(c.label)}</div>{recorded}<div class="talk-text">{body}</div>{detail}</div>'
    )


def status_md(view: StepView | None) -> str:
    if view is None or not view.status:
        return ""
    return f"<sub>{html.escape(view.status)}</sub>"


def lab_rows(view: StepView | None) -> list[list[Any]]:
    return [list(r) for r in view.table] if view is not None else []


def request_code(runtime: AppRuntime, step: Step) -> str:
    """A level-2 step's first request as Python with the ``openai`` client (empty for other tabs)."""
    if step.tab != "api":
        return ""
    first = plan(step)[0]
    p = first.params
    request: dict[str, Any] = {
        "model": first.model or "local",
        "messages": [m.to_dict() for m in step_messages(step)],
        "temperature": p.temperature,
        "max_tokens": p.max_new_tokens,
    }
    if p.top_p != 1.0:
        request["top_p"] = p.top_p
    if p.seed is not None:
        request["seed"] = p.seed
    if first.together:
        request["n"] = step.n
    app = first.option_id == "app-endpoint"
    return openai_snippet(request, base_url=runtime.app_endpoint_url if app else None, app_endpoint=app)

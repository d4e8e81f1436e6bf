"""Talk mode's components: the presenter panel (above the tabs) and the Talk tab's starter controls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ..talks import STEP_FIELDS
from .talk_view import LAB_HEADERS


@dataclass
class TalkLayout:
    """Talk mode's components; the starter's are filled in by :func:`starter_layout`."""

    state: gr.State
    panel: gr.Column
    header: gr.Markdown
    prompt: gr.Markdown
    answer: gr.HTML
    status: gr.Markdown
    table: gr.Dataframe
    code_box: gr.Accordion
    code: gr.Code
    note: gr.Markdown
    back_btn: gr.Button
    next_btn: gr.Button
    rerun_btn: gr.Button
    stop_btn: gr.Button
    leave_btn: gr.Button
    picker: Any = field(default=None)
    source: Any = field(default=None)
    check: Any = field(default=None)
    present_btn: Any = field(default=None)
    check_btn: Any = field(default=None)
    rehearse_btn: Any = field(default=None)

    @property
    def presenter_outputs(self) -> list[Any]:
        """Every component a step's display updates (the tabs are added by the caller)."""
        return [
            self.state,
            self.panel,
            self.header,
            self.prompt,
            self.answer,
            self.status,
            self.table,
            self.code_box,
            self.code,
            self.note,
        ]


def presenter_layout() -> TalkLayout:
    """The presenter panel, hidden until a talk opens."""
    state = gr.State(None)
    with gr.Column(visible=False, elem_id="talk-presenter") as panel:
        header = gr.Markdown(elem_id="talk-header")
        prompt = gr.Markdown(elem_id="talk-prompt")
        answer = gr.HTML(elem_id="talk-answer")
        status = gr.Markdown(elem_id="talk-status")
        table = gr.Dataframe(headers=LAB_HEADERS, visible=False, interactive=False, wrap=True, elem_id="talk-lab")
        with gr.Accordion("The request in Python (openai client)", open=False, visible=False) as code_box:
            code = gr.Code(language="python", interactive=False)
        with gr.Accordion("Speaker note", open=False, elem_id="talk-note-box"):
            note = gr.Markdown(elem_id="talk-note")
        with gr.Row():
            back_btn = gr.Button("← Back", elem_id="talk-back", size="sm")
            next_btn = gr.Button("Run / next →", variant="primary", elem_id="talk-next", size="sm")
            rerun_btn = gr.Button("R · Re-run", elem_id="talk-rerun", size="sm")
            stop_btn = gr.Button("S · Stop", variant="stop", elem_id="talk-stop", size="sm")
            leave_btn = gr.Button("Esc · Leave", elem_id="talk-leave", size="sm")
        gr.Markdown("<sub>Keys: → run the next step · ← back · R re-run · S stop · Esc leave</sub>")
    return TalkLayout(
        state, panel, header, prompt, answer, status, table, code_box, code, note,
        back_btn, next_btn, rerun_btn, stop_btn, leave_btn,
    )  # fmt: skip


def starter_layout(ui: TalkLayout, names: list[str]) -> None:
    """The Talk tab: pick a talk, read or edit its file, check it, rehearse it, present it."""
    gr.Markdown(
        "**Talk mode** runs a presentation step by step: each step switches to its tab and runs a prompt with "
        "its settings. Open one here, or with the address `/?talk=default`. **Rehearse** runs every step once "
        "and records the answers: during the talk, a step whose backend fails (no Wi-Fi, no key, a 429) shows "
        "the recorded answer, labelled so, and the talk goes on."
    )
    with gr.Row():
        ui.picker = gr.Dropdown(names, value=names[0] if names else None, label="Talk", scale=2)
        ui.present_btn = gr.Button("🎤 Present", variant="primary", elem_id="talk-present")
        ui.rehearse_btn = gr.Button("🎬 Rehearse (record every answer)", elem_id="talk-rehearse-btn")
        ui.check_btn = gr.Button("Check the file", elem_id="talk-check-btn")
    ui.check = gr.Markdown(elem_id="talk-check")
    ui.source = gr.Code(
        language="yaml",
        label="Talk file (edit to present your own version in this session; empty: the talk picked above)",
        interactive=True,
        lines=14,
        elem_id="talk-source",
    )
    with gr.Accordion("Talk file fields", open=False):
        gr.Markdown("\n".join(f"- `{k}`: {v}" for k, v in STEP_FIELDS.items()))


def keys_js() -> str:
    """The presenter's keys, installed once per page: they click the presenter's buttons (never while typing)."""
    return """
() => {
  if (window.__llmLevelsTalkKeys) return;
  window.__llmLevelsTalkKeys = true;
  const keys = {ArrowRight: 'talk-next', ArrowLeft: 'talk-back', r: 'talk-rerun', R: 'talk-rerun',
                s: 'talk-stop', S: 'talk-stop', Escape: 'talk-leave'};
  document.addEventListener('keydown', (e) => {
    const panel = document.getElementById('talk-presenter');
    if (!panel || panel.offsetParent === null) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const id = keys[e.key];
    const btn = id && document.getElementById(id);
    if (btn) { e.preventDefault(); btn.click(); }
  });
}
"""

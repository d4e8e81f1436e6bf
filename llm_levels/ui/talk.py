"""Talk mode: a presentation that runs itself, step by step, from a talk file (see :mod:`llm_levels.talks`).

The presenter panel sits above the tabs, in large type: the header "Step 3 of 12 — <title>", the prompt,
the answers side by side, the speaker note folded. Keys: → run the next step (it switches to the step's
tab, fills that tab's own prompt box and settings with the step's, and runs), ← back, R re-run, S stop,
Esc leave. ``/?talk=default`` opens the shipped talk, ``/?talk=NAME`` another; the Talk tab picks, checks
(line-numbered errors) and rehearses talks. A step whose backend fails shows the answer recorded at
rehearsal, labelled so, and the talk goes on.

Events (``api_name``): ``talk_open``, ``talk_next``, ``talk_back``, ``talk_rerun``, ``talk_leave``,
``talk_check``, ``talk_rehearse``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from ..runtime import AppRuntime
from ..talks import RehearsalStore, Talk, TalkError, load_talk, parse_talk, talk_names
from ..talks.runner import Column, StepView, plan, run_step
from . import talk_view as V
from .talk_fill import TabWidgets
from .talk_layout import TalkLayout, keys_js, presenter_layout, starter_layout

Updates = dict[Any, Any]

#: Gives up the focus a text box took, when talk mode is showing (so the presenter's keys work at once).
BLUR_JS = """() => {
  const panel = document.getElementById('talk-presenter');
  const a = document.activeElement;
  if (panel && panel.offsetParent !== null && a && a !== document.body) a.blur();
}"""


def _fresh(talk: Talk | None = None) -> dict[str, Any]:
    """A session's talk state: the talk, the step shown, whether it ran, and each step's last view."""
    return {"talk": talk, "index": 0, "ran": False, "views": {}}


@dataclass
class TalkMode:
    """Talk mode's components and handlers (each returns ``{component: value}`` updates)."""

    runtime: AppRuntime
    store: RehearsalStore
    ui: TalkLayout
    tabs: gr.Tabs
    #: The tabs' own widgets that show a step's prompt and settings when it switches there.
    fill: TabWidgets = field(default_factory=TabWidgets)

    @property
    def talks_dir(self) -> Any:
        return _talks_dir(self.runtime)

    def _talk(self, name: str, source: str) -> Talk:
        """The text in the editor when there is any (this session's own talk), else the named talk."""
        name = name if isinstance(name, str) else ""
        if isinstance(source, str) and source.strip():
            return parse_talk(source, f"{name or 'talk'}.yaml")
        return load_talk(name, self.talks_dir)

    def _show(self, st: dict[str, Any], *, view: Any = None, select: bool = False) -> Updates:
        """The presenter showing step ``st["index"]`` (and ``view``, or its last one)."""
        talk: Talk = st["talk"]
        i = st["index"]
        step = talk.steps[i]
        view = view if view is not None else st["views"].get(i)
        out: Updates = {
            self.ui.state: st,
            self.ui.panel: gr.Column(visible=True),
            self.ui.header: V.header_md(talk.header(i)),
            self.ui.prompt: V.prompt_md(step),
            self.ui.answer: V.cards_html(view),
            self.ui.status: V.status_md(view),
            self.ui.note: step.note or "(no note for this step)",
            self.ui.table: gr.Dataframe(value=V.lab_rows(view), visible=step.tab == "lab"),
            self.ui.code: gr.Code(value=V.request_code(self.runtime, step)),
            self.ui.code_box: gr.Accordion(visible=step.tab == "api"),
        }
        if select:  # the step's tab, its own widgets showing the step's prompt and settings
            out[self.tabs] = gr.Tabs(selected=step.tab)
            out.update(self.fill.updates(step))
        return out

    def open(self, name: str, source: str) -> Updates:
        """Open a talk in presenter mode: a shipped/operator talk by name, or the text in the editor."""
        try:
            talk = self._talk(name, source)
        except TalkError as e:
            return {self.ui.check: f"❌ {e}", self.ui.panel: gr.Column(visible=False)}
        return {**self._show(_fresh(talk), select=True), self.ui.check: f"✅ {talk.title}: {len(talk.steps)} steps."}

    def open_from_url(self, request: gr.Request) -> Updates:
        """``/?talk=NAME`` opens that talk in presenter mode; no parameter changes nothing."""
        name = (request.query_params.get("talk") if request else None) or ""
        if not name:
            return {self.ui.panel: gr.skip()}
        try:
            talk = load_talk(name, self.talks_dir)
        except TalkError as e:
            gr.Warning(str(e))
            return {self.ui.panel: gr.skip()}
        return {**self._show(_fresh(talk), select=True), self.ui.picker: talk.name, self.ui.source: ""}

    def _run(self, st: dict[str, Any], request: gr.Request | None) -> Iterator[Updates]:
        st = {**st, "ran": True, "views": dict(st["views"])}
        i = st["index"]
        placeholder = StepView(tuple(Column(p.label) for p in plan(st["talk"].steps[i])))
        yield self._show(st, view=placeholder, select=True)
        session = request.session_hash if request else None
        for view in run_step(self.runtime, st["talk"], i, store=self.store, session_id=session):
            out = {self.ui.answer: V.cards_html(view), self.ui.status: V.status_md(view), **self._table(st, view)}
            if view.finished:
                # The last answers and the state that says so in one update, the event's last: the page can
                # take the next → as soon as it shows them (a press while the event still runs is dropped).
                st["views"][i] = view
                out[self.ui.state] = st
                # The model again: switching the Hosted API tab's endpoint resets its model box to its default.
                out.update(self.fill.updates(st["talk"].steps[i], only=("api.model",)))
            yield out

    def _table(self, st: dict[str, Any], view: Any) -> Updates:
        step = st["talk"].steps[st["index"]]
        return {self.ui.table: V.lab_rows(view)} if step.tab == "lab" else {}

    def next(self, st: dict[str, Any], request: gr.Request) -> Iterator[Updates]:
        """→: run the step shown if it has not run yet, else move on to the next one and run it."""
        if not st or st.get("talk") is None:
            return
        talk: Talk = st["talk"]
        if st["ran"]:
            if st["index"] + 1 >= len(talk.steps):
                yield {self.ui.status: "<sub>That was the last step. Esc leaves talk mode.</sub>"}
                return
            st = {**st, "index": st["index"] + 1, "ran": False}
        yield from self._run(st, request)

    def rerun(self, st: dict[str, Any], request: gr.Request) -> Iterator[Updates]:
        """R: run the step shown again."""
        if st and st.get("talk") is not None:
            yield from self._run(st, request)

    def back(self, st: dict[str, Any]) -> Updates:
        """←: show the previous step with its last answers (→ runs the step after it again)."""
        if not st or st.get("talk") is None:
            return {self.ui.panel: gr.skip()}
        i = max(0, st["index"] - 1)
        return self._show({**st, "index": i, "ran": i in st["views"]}, select=True)

    def leave(self) -> Updates:
        return {self.ui.panel: gr.Column(visible=False)}

    def check(self, name: str, source: str) -> Updates:
        """Check a talk file (the editor's text, or the named talk): the first mistake with its line."""
        try:
            talk = self._talk(name, source)
        except TalkError as e:
            return {self.ui.check: f"❌ {e}"}
        return {self.ui.check: f"✅ {talk.title}: {len(talk.steps)} steps, no mistakes."}

    def show_source(self, name: str) -> Updates:
        """The named talk's file in the editor (to read, copy or change for this session)."""
        from ..talks.library import SHIPPED_DIR

        path = SHIPPED_DIR / f"{name}.yaml"
        return {self.ui.source: path.read_text(encoding="utf-8") if path.is_file() else ""}

    def rehearse(self, name: str, source: str, request: gr.Request) -> Iterator[Updates]:
        """Run every step once and record the answers (they stand in when a backend fails during the talk)."""
        try:
            talk = self._talk(name, source)
        except TalkError as e:
            yield {self.ui.check: f"❌ {e}"}
            return
        recorded = 0
        for i in range(len(talk.steps)):
            yield {self.ui.check: f"🎬 Rehearsing {talk.header(i)} …"}
            views = list(run_step(self.runtime, talk, i, store=self.store, rehearse=True))
            recorded += all(c.state == "done" for c in views[-1].columns)
        yield {self.ui.check: f"✅ Rehearsal done: {recorded} of {len(talk.steps)} steps recorded."}


def _talks_dir(runtime: AppRuntime) -> Any:
    """The operator's talk folder (``TALKS_DIR``), if any."""
    return runtime.settings.talks_dir


def build_presenter(runtime: AppRuntime) -> TalkLayout:
    """The presenter panel (hidden until a talk opens); call above the tabs."""
    return presenter_layout()


def build_starter(runtime: AppRuntime, ui: TalkLayout, tabs: gr.Tabs, demo: gr.Blocks) -> TalkMode:
    """The Talk tab's controls (inside the current ``gr.Tab``), and every talk event."""
    starter_layout(ui, talk_names(_talks_dir(runtime)))
    fill = TabWidgets.find_on(demo, runtime)  # every tab is built by now (the Talk tab comes last)
    mode = TalkMode(runtime, RehearsalStore(runtime.settings.cache_dir / "talks"), ui, tabs, fill)
    shown = ui.presenter_outputs + [tabs] + fill.components
    lane: dict[str, Any] = {"concurrency_id": "talk", "concurrency_limit": 4}
    ui.present_btn.click(mode.open, [ui.picker, ui.source], [*shown, ui.check], api_name="talk_open")
    ui.check_btn.click(mode.check, [ui.picker, ui.source], [ui.check], api_name="talk_check")
    ui.picker.change(mode.show_source, [ui.picker], [ui.source], api_visibility="private")
    rehearsing = ui.rehearse_btn.click(
        mode.rehearse, [ui.picker, ui.source], [ui.check], api_name="talk_rehearse", **lane
    )
    running: list[Any] = [
        ui.next_btn.click(mode.next, [ui.state], shown, api_name="talk_next", **lane),
        ui.rerun_btn.click(mode.rerun, [ui.state], shown, api_name="talk_rerun", **lane),
    ]
    ui.back_btn.click(mode.back, [ui.state], shown, api_name="talk_back", cancels=running)
    ui.stop_btn.click(None, None, None, cancels=[*running, rehearsing], api_visibility="private")
    ui.leave_btn.click(mode.leave, None, [ui.panel], api_name="talk_leave", cancels=running)
    opened = demo.load(mode.open_from_url, None, [*shown, ui.picker, ui.source], api_visibility="private")
    # The chat box takes the focus when the page loads; a presenter's first → must reach the talk instead.
    opened.then(None, None, None, js=BLUR_JS, api_visibility="private")
    demo.load(None, None, None, js=keys_js(), api_visibility="private")
    return mode

"""The Compare tab in process, on fake backends: answers cut by the length limit or by Stop are tagged in their
boxes and rows, a column that failed before Stop still says it failed, and typed text is made valid.

Fast (no server, no model); tests/ui/test_compare_tab.py drives the same tab on the real app.
"""

from __future__ import annotations

import dataclasses
import json
import time

import gradio as gr
import pandas as pd

from llm_levels.turns import run_turn
from llm_levels.ui import compare
from llm_levels.ui.compare_layout import ending_tag
from tests.fakes import FakeBackend

LOCAL, SESSION, APP = "local", "hosted:session", "app-endpoint"


def _tab(monkeypatch, backends: dict[str, FakeBackend]):
    """The tab built in a Blocks; each ticked option runs on its fake backend (no model, no network)."""
    import gradio as gr

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui.shared import create_session_state

    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))

    def fake_turn(rt, request, **kw):
        return run_turn(rt, dataclasses.replace(request, backend=backends[request.option_id]), **kw)

    monkeypatch.setattr(compare, "run_turn", fake_turn)
    captured = {}
    monkeypatch.setattr(compare, "wire", lambda tab, ui, session: captured.setdefault("tab", tab))
    with gr.Blocks():
        compare.build(runtime, create_session_state())
    return captured["tab"]


def answers(tab, frame) -> dict[str, str]:
    return {i: frame[md] for i, md in zip(tab.ids, tab.answers)}


def finish(frame, tab) -> dict[str, str]:
    table: pd.DataFrame = frame[tab.table]
    return dict(zip(table["Backend"], table["Finish"]))


def test_an_answer_cut_at_the_length_limit_is_tagged_in_its_box(monkeypatch):
    backends = {LOCAL: FakeBackend(["a", "b", "c"]), APP: FakeBackend(["x"])}
    tab = _tab(monkeypatch, backends)
    last = list(tab.run("hi", "", 2, 0.0, [LOCAL, APP], None, None))[-1]
    got = answers(tab, last)
    assert got[LOCAL] == "ab\n\n" + ending_tag("length")
    assert got[APP] == "x"  # ended by itself: no tag
    assert finish(last, tab) == {"Local model": "length", "App endpoint (/v1)": "stop"}
    assert last[tab.status].startswith("Done in")


def test_stop_tags_every_unfinished_answer_and_keeps_an_earlier_failure(monkeypatch):
    slow = FakeBackend(["word "] * 300, delay_s=0.02)
    broken = FakeBackend(fail_after=0)
    tab = _tab(monkeypatch, {LOCAL: slow, APP: broken})
    frames = []
    for frame in tab.run("tell", "", 400, 0.0, [LOCAL, APP], None, None):
        frames.append(frame)
        if "word" in answers(tab, frame)[LOCAL] and "Not answered" in answers(tab, frame)[APP]:
            tab.stop(None)
    last = answers(tab, frames[-1])
    assert last[LOCAL].startswith("word") and last[LOCAL].endswith(ending_tag("stopped"))
    assert "▌" not in last[LOCAL] and 0 < last[LOCAL].count("word") < 300 and slow.stopped.is_set()
    assert "Not answered" in last[APP]  # it failed before Stop: it says so, not "stopped"
    assert finish(frames[-1], tab) == {"Local model": "stopped", "App endpoint (/v1)": "error"}
    assert frames[-1][tab.status].startswith("Stopped after")


def test_stop_before_the_first_token_tags_the_waiting_column(monkeypatch):
    class Late(FakeBackend):
        """Nothing for a long while, as a slow server before its first token; honours cancel."""

        def stream(self, messages, params, cancel=None):
            for _ in range(500):
                if cancel is not None and cancel.is_set():
                    return
                time.sleep(0.01)
            yield from super().stream(messages, params, cancel)

    tab = _tab(monkeypatch, {SESSION: Late()})
    frames = []
    for frame in tab.run("hi", "", 8, 0.0, [SESSION], None, None):
        frames.append(frame)
        if len(frames) == 3:
            tab.stop(None)
    assert answers(tab, frames[-1])[SESSION] == ending_tag("stopped")
    assert frames[-1][tab.status].startswith("Stopped after")


def test_typed_text_is_made_valid(monkeypatch):
    backend = FakeBackend(["ok"])
    tab = _tab(monkeypatch, {LOCAL: backend})
    list(tab.run("a\ud800\x00b", "s\udfff", 8, 0.0, [LOCAL], None, None))
    ((messages, _),) = backend.calls
    assert [(m.role, m.content) for m in messages] == [("system", "s\ufffd"), ("user", "a\ufffdb")]


# ------------------------------------------------------------------ kept in the browser
def test_the_last_results_kept_in_the_browser_come_back_checked(monkeypatch):
    from llm_levels.ui.compare_layout import RESTORED_NOTE, TABLE_COLUMNS

    tab = _tab(monkeypatch, {LOCAL: FakeBackend(["ok"])})
    last = list(tab.run("hi", "sys", 8, 0.0, [LOCAL], None, None))[-1]
    shown = [last[md] for md in tab.answers] + [last[tab.table], last[tab.status]]
    kept = tab.keep("hi", "sys", [LOCAL], *shown)
    assert kept["answers"] == {LOCAL: "ok"} and kept["prompt"] == "hi" and kept["selected"] == [LOCAL]
    back = tab.restore(json.loads(json.dumps(kept)))  # what the browser hands back: plain JSON
    assert back[tab.prompt] == "hi" and back[tab.system] == "sys" and back[tab.backends].value == [LOCAL]
    assert [back[md] for md in tab.answers] == ["ok"] + [""] * (len(tab.answers) - 1)
    assert list(back[tab.table].columns) == TABLE_COLUMNS and back[tab.table].iloc[0, 0] == "Local model"
    assert back[tab.status].startswith(RESTORED_NOTE) and "Done in" in back[tab.status]
    assert len(back[tab.ttft_plot]) == 1  # the chart is drawn again from the kept table

    # Whatever the browser hands back is checked: nothing kept, junk, unknown backends, invalid text.
    skip = type(gr.skip())
    assert all(isinstance(v, skip) for v in tab.restore(None).values())
    assert all(isinstance(v, skip) for v in tab.restore("junk").values())
    odd = tab.restore({"answers": {"nope": "x", LOCAL: "a\ud800"}, "selected": ["nope", LOCAL], "table": [[1, 2]]})
    assert odd[tab.backends].value == [LOCAL] and odd[tab.answers[0]] == "a\ufffd" and odd[tab.table].empty


def test_no_key_ever_goes_into_the_browser():
    """No event stores anything in a gr.BrowserState from the session's key (the page holds the secret that
    decrypts what it keeps)."""
    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui.app import build_ui

    demo = build_ui(AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false"})))
    kept = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)]
    mine = [b for b in kept if b.storage_key in ("llm-levels:api", "llm-levels:compare")]
    assert len(mine) == 2, [b.storage_key for b in kept]
    # On the page itself, not in their tabs: Gradio mounts a tab's components when it is first opened, so
    # there a BrowserState would read nothing when the page (re)loads.
    assert all(b.parent is demo for b in mine)
    set_key = next(fn for fn in demo.fns.values() if fn.api_name == "api_set_key")
    (key_state,) = [o for o in set_key.outputs if isinstance(o, gr.State)]  # where the typed key lives
    storing = [fn for fn in demo.fns.values() if any(isinstance(o, gr.BrowserState) for o in fn.outputs)]
    assert len(storing) >= 2
    for fn in storing:
        assert all(i is not key_state for i in fn.inputs), fn.name
        assert not any(isinstance(i, gr.Textbox) and i.type == "password" for i in fn.inputs), fn.name

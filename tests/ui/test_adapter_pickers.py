"""An adapter saved while the app runs: the page's backend pickers (Chat, the Lab, Compare) offer it as soon as
the fine-tune ends and on every page load, and Compare runs it in a column kept for adapters, without a restart.

The whole page is built once (no server); the fine-tune runs through the Lab panel's own handler on a tiny
random Llama (transformers engine), so the adapter is saved by the real fine-tune code after the page exists.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import gradio as gr
import pytest

from llm_levels.icl.data import Example
from llm_levels.runtime import ADAPTER_OPTION_PREFIX, LOCAL, AppRuntime
from llm_levels.turns import Started
from llm_levels.ui import lab_finetune
from llm_levels.ui.compare_layout import ADAPTER_COLUMNS
from tests.fixtures.models import cpu_settings

NAME = "Tiny + sentiment adapter"
OPTION = ADAPTER_OPTION_PREFIX + "tiny-sentiment-adapter"
LABELS = ("negative", "positive")
_POS = ["sales rose", "profit up", "orders grew", "record year", "margin improved", "dividend raised"]
_NEG = ["sales fell", "profit down", "orders shrank", "job cuts", "margin narrowed", "dividend cut"]


def _rows(texts: list[str], label: str, start: int) -> list[Example]:
    return [Example(f"{t} this quarter", label, start + i, "tiny.csv") for i, t in enumerate(texts)]


def _fn(demo: gr.Blocks, name: str) -> object:
    """The page's one event function whose handler is called ``name``."""
    (fn,) = [f for f in demo.fns.values() if f.name == name and f.trigger_after is None]
    return fn


@pytest.fixture(scope="module")
def page(tiny_causal_dir, tmp_path_factory):
    """The whole page, built while the cache holds no adapter; then a fine-tune in its Lab panel saves one."""
    from llm_levels.ui.app import build_ui

    settings = cpu_settings(
        cache_dir=tmp_path_factory.mktemp("cache"),
        local_model=str(tiny_causal_dir),
        preload_model=False,
        requests_per_minute=1000,
    )
    runtime = AppRuntime(settings)
    assert not runtime.adapter_options()
    demo = build_ui(runtime)
    train = SimpleNamespace(examples=_rows(_POS, "positive", 1) + _rows(_NEG, "negative", 20), source="tiny.csv")
    evaluated = _rows(["revenue jumped"], "positive", 50) + _rows(["costs soared"], "negative", 60)
    with pytest.MonkeyPatch.context() as mp:  # the tiny model's tokenizer needs labels with distinct first tokens
        mp.setattr(lab_finetune, "load_sets", lambda upload, limit, seed: (train, evaluated, LABELS))
        frames = list(_fn(demo, "train").fn(None, 0, 1, 0, 0, NAME, True))
    return SimpleNamespace(runtime=runtime, demo=demo, frames=frames)


def test_after_a_fine_tune_every_picker_on_the_page_offers_the_saved_adapter(page):
    train = _fn(page.demo, "train")
    status = train.fn.__self__.c["status"]
    said = page.frames[-1][status]
    assert said.startswith("✅") and f"Adapter saved: **{NAME}**" in said, said
    assert "Pick it now in Chat, Compare or the Lab" in said and "Reload" not in said and "restart" not in said

    # The refresh chained after the fine-tune and the one on page load: both update the same three pickers.
    (after,) = [f for f in page.demo.fns.values() if f.trigger_after == train._id]
    (on_load,) = [f for f in page.demo.fns.values() if f.name == "refresh" and f.trigger_after is None]
    assert any(event == "load" for _, event in on_load.targets)
    for fn in (after, on_load):
        assert sorted(p.elem_id for p in fn.outputs) == sorted(lab_finetune.PICKERS)
        updates = fn.fn()
        for picker in fn.outputs:
            assert (f"{NAME} (transformers)", OPTION) in updates[picker].choices, picker.elem_id
            assert "value" not in updates[picker].constructor_args  # what the user picked stays picked


def _compare(page):
    return next(f for f in page.demo.fns.values() if f.api_name == "compare_run").fn.__self__


def test_compare_runs_an_adapter_saved_after_start_up_in_a_column_kept_for_adapters(page, monkeypatch):
    from llm_levels.ui import compare

    started, real_turn = [], compare.run_turn

    def watched(runtime, request, **kw):  # the real turn; the backend it starts on is noted
        for event in real_turn(runtime, request, **kw):
            if isinstance(event, Started):
                started.append(event.backend)
            yield event

    monkeypatch.setattr(compare, "run_turn", watched)
    tab = _compare(page)
    assert OPTION not in tab.ids  # it did not exist when the page was built
    shown = tab.show_columns([LOCAL, OPTION])
    kept_box = tab.answers[len(tab.ids)]
    assert shown[tab.columns[len(tab.ids)]].visible and shown[tab.titles[0]] == f"**{NAME} (transformers)**"
    assert not shown[tab.columns[len(tab.ids) + 1]].visible and shown[tab.titles[1]] == ""

    last = list(tab.run("hello", "", 3, 0.0, [OPTION], None, None))[-1]
    assert last[tab.status].startswith("Done in")
    assert last[kept_box].strip() and "Not answered" not in last[kept_box], last[kept_box]
    (row,) = last[tab.table].to_dict("records")
    assert row["Backend"] == "Local model · adapter:tiny-sentiment-adapter" and row["Finish"] in ("stop", "length")
    (backend,) = started
    assert backend.loaded.display_name == NAME  # the base model with the adapter merged in, not the base alone
    assert all(last[md] == "" for md in tab.answers if md is not kept_box)

    # Kept in the browser and shown again on reload, in the same column, with the adapter ticked and offered.
    shown_now = [last[md] for md in tab.answers] + [last[tab.table], last[tab.status]]
    kept = tab.keep("hello", "", [OPTION], *shown_now)
    assert kept["answers"] == {OPTION: last[kept_box]} and kept["selected"] == [OPTION]
    back = tab.restore(json.loads(json.dumps(kept)))
    assert back[kept_box] == last[kept_box] and back[tab.backends].value == [OPTION]
    assert OPTION in [value for _, value in back[tab.backends].choices]


def test_adapters_fill_the_kept_columns_in_tick_order_and_a_key_keeps_them_ticked(page):
    tab = _compare(page)
    a, b = ADAPTER_OPTION_PREFIX + "a", ADAPTER_OPTION_PREFIX + "b"
    kept = tab.answers[len(tab.ids) :]
    assert len(kept) == len(tab.titles) == ADAPTER_COLUMNS
    assert tab.boxes([b, LOCAL, a]) == {LOCAL: tab.answers[tab.ids.index(LOCAL)], b: kept[0], a: kept[1]}
    too_many = [ADAPTER_OPTION_PREFIX + str(k) for k in range(ADAPTER_COLUMNS + 1)]
    with pytest.raises(gr.Error, match=f"at most {ADAPTER_COLUMNS} adapters"):
        list(tab.run("hi", "", 3, 0.0, too_many, None, None))
    # A key typed in the Hosted API tab ticks the hosted backends it makes usable; the adapters stay ticked.
    ticked = tab.tick_session_key("sk-test", [b, LOCAL])
    assert "hosted:session" in ticked and ticked[-1] == b and LOCAL in ticked

"""Talk mode fills the step's tab: a step's prompt and settings land in that tab's own widgets (no model runs).

The page is built once (no model loaded); a step's first update is taken from the ``talk_next`` handler itself,
before it starts the step's answers.
"""

from __future__ import annotations

import gradio as gr
import pytest

from llm_levels.config import Settings
from llm_levels.runtime import AppRuntime
from llm_levels.talks import load_talk, parse_talk
from llm_levels.ui.talk_fill import SPOTS, TabWidgets, step_values

STEPS = """\
title: Fill
steps:
  - title: Local, sampled, with probabilities
    tab: local
    backend: local:transformers
    system: Be brief.
    prompt: Name a colour.
    temperature: 1.2
    top_p: 0.9
    top_k: 40
    seed: 3
    max_tokens: 20
    top_logprobs: 4
  - title: Local, greedy
    tab: local
    prompt: Name a colour.
    temperature: 0
  - title: Compare, two backends (one unknown here)
    tab: compare
    prompt: Hello?
    backends: [local, hosted:nowhere]
    temperature: 0.3
    max_tokens: 33
  - title: Compare, a sweep
    tab: compare
    prompt: The sea.
    temperatures: [0, 0.7, 2]
    seed: 9
    max_tokens: 40
  - title: Chat
    tab: chat
    prompt: Hi!
    max_tokens: 50
  - title: Lab
    tab: lab
    shots: [0, 1, 5]
"""


@pytest.fixture(scope="module")
def demo() -> gr.Blocks:
    from llm_levels.ui.app import build_ui

    return build_ui(AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false"})))


@pytest.fixture(scope="module")
def talk_next(demo):
    return next(fn for fn in demo.fns.values() if fn.api_name == "talk_next")


def first_update(talk_next, talk, index: int) -> dict:
    """What → shows the moment it is pressed on step ``index`` (the step's answers are not started)."""
    mode = talk_next.fn.__self__
    steps = mode.next({"talk": talk, "index": index, "ran": False, "views": {}}, None)
    try:
        return next(steps)
    finally:
        steps.close()


def by_id(demo, elem_id: str):
    (found,) = [b for b in demo.blocks.values() if b.elem_id == elem_id]
    return found


def values(update: dict) -> dict:
    """``{elem_id or label: value}`` of the widgets a step filled."""
    return {(c.elem_id or c.label): u["value"] for c, u in update.items() if isinstance(u, dict) and "value" in u}


def test_every_widget_a_step_fills_is_found_in_its_tab(demo):
    fill = TabWidgets.find_on(demo, None)
    assert set(fill.widgets) == set(SPOTS)  # an elem_id or a label renamed in a tab shows up here
    for key, widget in fill.widgets.items():
        tab = key.split(".")[0]
        parent = widget.parent
        while not (isinstance(parent, gr.Tab) and parent.id is not None):  # the page's tab, not an inner one
            parent = parent.parent
        assert parent.id == {"sampling": "compare"}.get(tab, tab), key
    # found by label: the Local tab's sampling sliders, not the next-token explorer's
    assert fill.widgets["local.temperature"].minimum == 0.05


def test_a_level2_step_fills_the_hosted_api_tab(demo, talk_next):
    talk = load_talk("default")
    i = next(i for i, s in enumerate(talk.steps) if s.title == "Level 2: temperature 0 vs 2")
    update = first_update(talk_next, talk, i)
    assert update[talk_next.fn.__self__.tabs].selected == "api"
    shown = values(update)
    # the first column's request (temperature 0 of the sweep), as the presenter's Python panel prints it
    assert shown["api-input"] == "Write one sentence about the sea."
    assert shown["api-temperature"] == 0 and shown["api-max-tokens"] == 40 and shown["api-seed"] == "7"
    assert shown["api-endpoint"] == "app-endpoint" and shown["api-model"] == "local"
    assert shown["api-system"] == "" and shown["api-top-p"] == 1.0 and shown["api-tok-show"] is False
    assert all(c in talk_next.outputs for c in update)  # Gradio accepts only an event's outputs
    # the tab's own Python panel shows the step's request, not the tab's last one
    code = shown["This request in Python (runs as is)"]
    assert "temperature=0" in code and "seed=7" in code and "Write one sentence about the sea." in code

    few_shot = next(i for i, s in enumerate(talk.steps) if s.system)
    shown = values(first_update(talk_next, talk, few_shot))
    assert shown["api-system"] == talk.steps[few_shot].system and shown["api-max-tokens"] == 4


def test_local_compare_chat_and_lab_steps_fill_their_tabs(demo, talk_next):
    talk = parse_talk(STEPS, "fill.yaml")
    sampled = values(first_update(talk_next, talk, 0))
    assert sampled["local-input"] == "Name a colour." and sampled["local-system"] == "Be brief."
    assert sampled["local-engine"] == "transformers" and sampled["local-do-sample"] is True
    assert sampled["temperature"] == 1.2 and sampled["top_p"] == 0.9 and sampled["top_k"] == 40
    assert sampled["local-seed"] == "3" and sampled["local-max-new-tokens"] == 20
    assert sampled["local-tok-show"] is True and sampled["alternatives per token (top_logprobs)"] == 4

    greedy = values(first_update(talk_next, talk, 1))
    # greedy is do_sample off; the temperature slider (it starts at 0.05) is left alone
    assert greedy["local-do-sample"] is False and "temperature" not in greedy
    assert greedy["local-engine"] == "llama.cpp" and greedy["local-system"] == "" and greedy["local-seed"] == ""

    compared = values(first_update(talk_next, talk, 2))
    assert compared["compare-prompt"] == "Hello?" and compared["compare-backends"] == ["local"]  # unknown: left out
    assert compared["compare-temperature"] == 0.3 and compared["compare-max-tokens"] == 33
    assert compared["compare-token-probs"] is False

    sweep = first_update(talk_next, talk, 3)
    assert sweep[by_id(demo, "sampling-box")].open is True  # Compare's sampling panel, opened
    shown = values(sweep)
    assert shown["sampling-prompt"] == "The sea." and shown["sampling-temps"] == "0, 0.7, 2"
    assert shown["Columns"] == "sweep" and shown["Seed"] == 9 and shown["Max new tokens"] == 40
    assert "compare-prompt" not in shown

    chat = values(first_update(talk_next, talk, 4))
    assert chat == {
        "chat-input": "Hi!",
        "chat-backend": "local",
        "Longest answer (tokens)": 50,
        "chat-tok-show": False,
    }
    lab = values(first_update(talk_next, talk, 5))
    assert lab["lab-shots"] == "0,1,5" and lab["lab-limit"] == 60 and lab["Method"] == "score"


def test_a_value_a_widget_cannot_hold_is_kept_in_range_or_left_out(demo):
    fill = TabWidgets.find_on(demo, None)
    step = parse_talk("title: t\nsteps:\n  - {title: a, tab: api, backend: hosted:nowhere, prompt: x}\n").steps[0]
    assert step_values(step, "llama.cpp")["api.endpoint"] == "hosted:nowhere"
    shown = fill.updates(step)
    assert fill.widgets["api.endpoint"] not in shown  # not in the picker: left as it is
    assert shown[fill.widgets["api.prompt"]]["value"] == "x"
    big = parse_talk("title: t\nsteps:\n  - {title: a, tab: compare, prompt: x, n: 3, max_tokens: 900}\n").steps[0]
    assert fill.updates(big)[fill.widgets["sampling.max_tokens"]]["value"] == 256  # the slider's maximum

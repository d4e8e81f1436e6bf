"""Sampling side by side: the panel's settings are checked, and the columns come from the real model."""

from __future__ import annotations

import gradio as gr
import pytest

from llm_levels.config import Settings
from llm_levels.core import BackendError
from llm_levels.runtime import AppRuntime
from llm_levels.ui.sampling import parse_temperatures, run_sampling, sampling_step


def test_temperatures_parse_and_bad_ones_say_why() -> None:
    assert parse_temperatures("0, 0.7;1.5 , 2") == (0.0, 0.7, 1.5, 2.0)
    assert parse_temperatures("  ") == ()
    for bad, words in (("0, hot", "numbers separated"), ("3", "between 0 and 2"), (",".join(["1"] * 9), "At most")):
        with pytest.raises(BackendError, match=words):
            parse_temperatures(bad)


def test_the_panel_settings_become_one_step() -> None:
    sweep = sampling_step("Hi", "local", "sweep", 4, "0, 2", 1.0, 3, 20)
    assert sweep.temperatures == (0.0, 2.0) and sweep.params.seed == 3 and sweep.params.max_new_tokens == 20
    draws = sampling_step("Hi", "local", "samples", 3, "", 1.0, 3, 20)
    assert draws.n == 3 and draws.temperatures == ()
    with pytest.raises(BackendError, match="Type a prompt"):
        sampling_step("  ", "local", "samples", 3, "", 1.0, 3, 20)
    with pytest.raises(BackendError, match="temperature"):
        sampling_step("Hi", "local", "samples", 3, "", 7.0, 3, 20)


def test_a_sweep_answers_in_columns_on_the_real_model() -> None:
    runtime = AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))
    out = list(run_sampling(runtime, "Name a colour.", "local", "sweep", 1, "0, 0, 1.5", 1.0, 5, 8))
    cards, status = out[-1]
    assert cards.count('class="talk-card done"') == 3, cards
    assert "temperature 0" in cards and "temperature 1.5" in cards and "3 of 3 answered" in status
    with pytest.raises(gr.Error, match="between 0 and 2"):
        list(run_sampling(runtime, "Hi", "local", "sweep", 1, "9", 1.0, 5, 8))

"""Tests for llm_levels/config.py: defaults, Space detection, and clear errors for bad values."""

from __future__ import annotations

import pytest

from llm_levels.config import Settings
from llm_levels.core import BackendError


def test_local_defaults_listen_on_loopback_and_allow_the_presenter_everything():
    s = Settings.from_env({})
    assert s.server_name == "127.0.0.1" and s.server_port == 7860
    assert s.allow_custom_base_url and s.allow_model_downloads and s.allow_private_base_url


def test_a_space_is_public_listens_everywhere_and_turns_risky_switches_off():
    s = Settings.from_env({"SPACE_ID": "someone/llm-levels"})
    assert s.server_name == "0.0.0.0"
    assert not s.allow_custom_base_url and not s.allow_model_downloads and not s.allow_private_base_url
    # The owner can still opt in explicitly.
    assert Settings.from_env({"SPACE_ID": "x/y", "ALLOW_CUSTOM_BASE_URL": "true"}).allow_custom_base_url


@pytest.mark.parametrize("name, value", [("REQUEST_TIMEOUT_S", "soon"), ("MAX_NEW_TOKENS_CAP", "0"),
                                         ("HOSTED_ENDPOINTS", "[{oops"), ("LOCAL_FAST_PATH", "maybe")])
def test_bad_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(BackendError) as e:
        Settings.from_env({name: value})
    assert name in str(e.value)


def test_local_concurrency_follows_the_inference_path():
    # The fast path batches concurrent requests; plain generate runs one at a time unless told otherwise.
    assert Settings.from_env({}).local_concurrency == 4
    assert Settings.from_env({"LOCAL_FAST_PATH": "false"}).local_concurrency == 1
    assert Settings.from_env({"LOCAL_FAST_PATH": "false", "LOCAL_CONCURRENCY": "3"}).local_concurrency == 3

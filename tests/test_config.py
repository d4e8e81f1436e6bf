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
                                         ("HOSTED_ENDPOINTS", "[{oops"), ("LOCAL_FAST_PATH", "maybe"),
                                         ("MAX_SESSIONS", "0"), ("SESSION_IDLE_TTL_S", "forever"),
                                         ("SESSION_CLOSED_TTL_S", "-5")])
def test_bad_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(BackendError) as e:
        Settings.from_env({name: value})
    assert name in str(e.value)


def test_local_concurrency_follows_the_inference_path():
    # The fast path batches concurrent requests; plain generate runs one at a time unless told otherwise.
    assert Settings.from_env({}).local_concurrency == 4
    assert Settings.from_env({"LOCAL_FAST_PATH": "false"}).local_concurrency == 1
    assert Settings.from_env({"LOCAL_FAST_PATH": "false", "LOCAL_CONCURRENCY": "3"}).local_concurrency == 3


def test_session_memory_limits_have_safe_defaults_and_can_be_set():
    s = Settings.from_env({})
    assert (s.max_sessions, s.session_idle_ttl_s, s.session_closed_ttl_s) == (1000, 7200.0, 3600.0)
    s = Settings.from_env({"MAX_SESSIONS": "200", "SESSION_IDLE_TTL_S": "1800", "SESSION_CLOSED_TTL_S": "60"})
    assert (s.max_sessions, s.session_idle_ttl_s, s.session_closed_ttl_s) == (200, 1800.0, 60.0)

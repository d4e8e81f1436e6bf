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


@pytest.mark.parametrize(
    "name, value",
    [
        ("REQUEST_TIMEOUT_S", "soon"),
        ("MAX_NEW_TOKENS_CAP", "0"),
        ("HOSTED_ENDPOINTS", "[{oops"),
        ("LOCAL_ENGINE", "vllm"),
        ("LOCAL_ENGINE", "llama_cpp"),
        ("LOCAL_CONTEXT", "lots"),
        ("LOCAL_CONTEXT", "100"),
        ("LOCAL_CONTEXT", "2048.5"),
        ("LOCAL_THREADS", "-1"),
        ("LOCAL_THREADS", "two"),
        ("LOCAL_CONCURRENCY", "0"),
        ("TRANSFORMERS_CONCURRENCY", "0"),
        ("TRANSFORMERS_CONCURRENCY", "many"),
        ("MAX_SESSIONS", "0"),
        ("SESSION_IDLE_TTL_S", "forever"),
        ("SESSION_CLOSED_TTL_S", "-5"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(name, value):
    with pytest.raises(BackendError) as e:
        Settings.from_env({name: value})
    assert name in str(e.value)
    assert e.value.kind == "config" and "\n" not in e.value.message


def test_the_local_engine_and_its_settings():
    s = Settings.from_env({})
    # llama.cpp by default, decoding 4 requests together in a 1,536-token window each, a thread per core;
    # plain transformers generate calls only fight over the cores: one at a time unless told otherwise.
    assert (s.local_engine, s.local_context, s.local_threads) == ("llama.cpp", 1536, 0)
    assert (s.local_concurrency, s.transformers_concurrency) == (4, 1)
    s = Settings.from_env(
        {
            "LOCAL_ENGINE": " Transformers ",
            "LOCAL_CONTEXT": "4096",
            "LOCAL_THREADS": "3",
            "LOCAL_CONCURRENCY": "2",
            "TRANSFORMERS_CONCURRENCY": "2",
        }
    )
    assert (s.local_engine, s.local_context, s.local_threads) == ("transformers", 4096, 3)
    assert (s.local_concurrency, s.transformers_concurrency) == (2, 2)
    assert Settings.from_env({"LOCAL_ENGINE": "LLAMA.CPP"}).local_engine == "llama.cpp"
    assert Settings.from_env({"LOCAL_ENGINE": ""}).local_engine == "llama.cpp"  # empty: the default
    assert not hasattr(s, "local_fast_path")
    with pytest.raises(BackendError, match="LOCAL_ENGINE must be one of llama.cpp, transformers, not 'vllm'"):
        Settings.from_env({"LOCAL_ENGINE": "vllm"})
    with pytest.raises(BackendError, match="LOCAL_CONTEXT must be between 256 and 131072"):
        Settings.from_env({"LOCAL_CONTEXT": "100"})


def test_the_engine_names_are_the_settings_choices():
    from llm_levels.engine import ENGINES

    for engine in ENGINES:
        assert Settings.from_env({"LOCAL_ENGINE": engine}).local_engine == engine


def test_session_memory_limits_have_safe_defaults_and_can_be_set():
    s = Settings.from_env({})
    assert (s.max_sessions, s.session_idle_ttl_s, s.session_closed_ttl_s) == (1000, 7200.0, 3600.0)
    s = Settings.from_env({"MAX_SESSIONS": "200", "SESSION_IDLE_TTL_S": "1800", "SESSION_CLOSED_TTL_S": "60"})
    assert (s.max_sessions, s.session_idle_ttl_s, s.session_closed_ttl_s) == (200, 1800.0, 60.0)

"""A tiny run of bench/load_test.py against the real app (the full run is a benchmark, not a test).

Two sessions for five seconds through the real HTTP API (gradio_client), the app's hosted backend
being a real llm-katan echo server: every reply must echo its own session's prompt (none lost, none
mixed up), and the app's log must not contain the API key.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.fixtures.app_server import KATAN

ROOT = Path(__file__).resolve().parents[1]


def _load_test_module():
    spec = importlib.util.spec_from_file_location("bench_load_test", ROOT / "bench" / "load_test.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def lt():
    return _load_test_module()


@pytest.mark.timeout(300)
def test_two_sessions_get_their_own_replies(app_server, lt):
    info = lt._client(app_server.url).view_api(print_info=False, return_format="dict")
    backend_id = lt._first_hosted_choice(info)  # what the script picks by itself
    assert backend_id == KATAN
    report = lt.run(
        app_server.url,
        sessions=2,
        seconds=5,
        kind="hosted",
        backend_id=backend_id,
        max_new=32,
        clear_every=3,
        pid=None,
        request_timeout_s=120,
    )
    assert report["sessions_finished"] == 2
    assert report["ok"] >= 2, report["errors"]
    assert report["lost"] == 0 and report["mixed"] == 0, report["errors"]
    assert report["ok"] + report["rate_limited"] == report["requests"]
    assert report["latency_p50_s"] is not None and report["latency_p50_s"] > 0
    log_text = Path(app_server.log_path).read_text(errors="replace")
    assert app_server.api_key not in log_text


@pytest.mark.timeout(300)
def test_the_session_rate_limit_holds_through_the_real_api(app_server, lt):
    """One session sending fast is refused with a clear message once over REQUESTS_PER_MINUTE; the refusal
    is a validation error (gr.Error), so nothing on screen changes and the conversation so far is intact."""
    from gradio_client.exceptions import AppError

    backend_id = KATAN
    client = lt._client(app_server.url)
    refused = None
    last_ok = None
    for n in range(1, 400):
        if n % 10 == 0:
            client.predict(api_name=lt.CLEAR_API)
            last_ok = None
        try:
            last_ok = client.predict(f"rate probe {n}", backend_id, 8, api_name=lt.CHAT_API)
        except AppError as e:
            refused = (n, str(e))
            break
    assert refused is not None, "no request was refused within 400 requests"
    assert "Too many requests" in refused[1] and "Try again in" in refused[1]
    assert app_server.api_key not in refused[1]
    # The conversation before the refusal is still the session's: the next (allowed) call would extend it.
    if last_ok is not None:
        turns = lt._turns(last_ok[0])
        assert turns[-2]["text"] == f"rate probe {refused[0] - 1}" and turns[-1]["role"] == "assistant"
    # another session is not affected
    other = lt._client(app_server.url).predict("hello from another session", backend_id, 8, api_name=lt.CHAT_API)
    last = lt._turns(other[0])[-1]
    assert last["role"] == "assistant" and not last["note"] and "hello from another session" in last["text"]

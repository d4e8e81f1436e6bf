"""OpenAIBackend against real servers through the real ``openai`` client.

llm-katan (a third-party OpenAI-compatible server) for the normal path and the failures it can inject;
the in-process ScriptedServer for what katan cannot do (cut streams, hang, count retries). Timeouts
are short so the suite stays fast.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from llm_levels.backends.openai_api import MAX_RAW_CHUNKS, OpenAIBackend
from llm_levels.core import BackendError, GenParams, Message, collect
from tests.fixtures.katan import Act, free_port

KEY = "sk-test-DoNotLeak-0123456789abcdef"
HELLO = [Message("user", "hello there")]


def backend(base_url: str | None, *, key: str | None = KEY, **kw) -> OpenAIBackend:
    kw.setdefault("timeout_s", 3)
    kw.setdefault("max_retries", 2)
    return OpenAIBackend(model=kw.pop("model", "test-model"), api_key=key, base_url=base_url, **kw)


def fail(b: OpenAIBackend, messages=HELLO, params: GenParams | None = None) -> tuple[BackendError, float, list]:
    """Run a call that must fail; return the error, the seconds it took and the chunks seen before it."""
    seen = []
    t0 = time.monotonic()
    with pytest.raises(BackendError) as info:
        for c in b.stream(messages, params or GenParams(max_new_tokens=16)):
            seen.append(c)
    return info.value, time.monotonic() - t0, seen


def assert_no_secret(b: OpenAIBackend, err: BackendError | None = None, secret: str = KEY) -> None:
    texts = [json.dumps(b.last_request), json.dumps(b.last_response), json.dumps(b.describe()), b.name]
    if err is not None:
        texts += [str(err), err.message, err.partial_text]
    for t in texts:
        assert secret not in t


def one_line(err: BackendError) -> None:
    assert "\n" not in err.message and len(err.message) < 700


# ================================================================================ katan: the normal path
def test_stream_deltas_join_into_the_echo_and_carry_usage(katan_echo):
    b = backend(katan_echo.base_url, key=katan_echo.api_key)
    messages = [Message("system", "be brief please"), Message("user", "hello there general kenobi")]
    chunks = list(b.stream(messages, GenParams(max_new_tokens=7, temperature=0.25)))

    texts = [c.text for c in chunks if c.text]
    assert len(texts) > 5  # really streamed, in pieces
    text = "".join(texts)
    # katan echoes the request it received: our parameters arrived under the names we chose.
    assert "max_tokens=7" in text and "temperature=0.25" in text and "messages=2" in text
    assert text.endswith("User: hello there general kenobi")
    last = chunks[-1]
    assert last.text == "" and last.finish_reason == "stop"
    # katan counts words: prompt = words of all messages, completion = words of its answer.
    assert last.usage.input_tokens == 3 + 4
    assert last.usage.output_tokens == len(text.split())
    assert all(c.usage is None for c in chunks[:-1])

    assert b.last_request == {
        "model": "test-model",
        "messages": [m.to_dict() for m in messages],
        "temperature": 0.25,
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    raw = b.last_response
    assert isinstance(raw, list) and len(raw) == len(texts) + 2  # role chunk + text chunks + finish/usage
    assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in raw) == text
    assert raw[-1]["usage"]["completion_tokens"] == last.usage.output_tokens
    assert all(isinstance(c.raw, dict) for c in chunks if c.text)
    assert_no_secret(b, secret=katan_echo.api_key)


def test_non_stream_mode_yields_one_chunk_with_usage(katan_echo):
    b = backend(katan_echo.base_url, key=katan_echo.api_key, stream=False)
    chunks = list(b.stream(HELLO, GenParams(max_new_tokens=5)))
    assert len(chunks) == 1
    c = chunks[0]
    assert c.text.startswith("[echo]") and c.text.endswith("User: hello there") and "max_tokens=5" in c.text
    assert c.finish_reason == "stop"
    assert c.usage.input_tokens == 2 and c.usage.output_tokens == len(c.text.split())
    assert b.last_request["stream"] is False and "stream_options" not in b.last_request
    assert b.last_response["object"] == "chat.completion"
    assert b.last_response["choices"][0]["message"]["content"] == c.text
    assert b.describe()["stream"] is False


def test_complete_gives_reply_with_timings(katan_echo):
    b = backend(katan_echo.base_url, key=katan_echo.api_key)
    reply = b.complete(HELLO, GenParams(max_new_tokens=4))
    assert reply.text.endswith("User: hello there") and reply.usage is not None
    assert 0 < reply.ttft_s <= reply.total_s


def test_list_models(katan_echo):
    b = backend(katan_echo.base_url, key=katan_echo.api_key)
    assert b.list_models() == [katan_echo.model]


def test_describe_never_shows_key_or_credentials_in_url(katan_echo):
    b = backend(f"http://user:hunter2pass@127.0.0.1:{katan_echo.port}/v1?api-key={KEY}")
    d = b.describe()
    assert d["backend"] == "openai" and d["model"] == "test-model" and d["key_configured"] is True
    assert d["base_url"] == f"http://127.0.0.1:{katan_echo.port}/v1"
    assert "hunter2pass" not in json.dumps(d) and "hunter2pass" not in b.name
    assert_no_secret(b)
    official = backend(None)
    assert official.describe()["base_url"] == "https://api.openai.com/v1"
    assert official.name == "openai · test-model"
    no_key = backend(f"http://127.0.0.1:{katan_echo.port}/v1", key=None)
    assert no_key.describe()["key_configured"] is False


def test_base_url_without_key_sends_a_placeholder(scripted_server):
    b = backend(scripted_server.base_url, key=None)
    assert collect(b.stream(HELLO, GenParams())).text == "Hello, world"
    assert scripted_server.requests[0].headers["authorization"] == "Bearer not-needed"


# ================================================================================ katan: failures
def test_wrong_key_is_401_and_never_leaks(katan_echo):
    b = backend(katan_echo.base_url, key=KEY)  # katan expects katan_echo.api_key
    err, _, _ = fail(b)
    assert err.kind == "auth" and err.status == 401 and not err.retryable
    assert "401" in err.message and "OPENAI_API_KEY" in err.message and "key field" in err.message
    one_line(err)
    # katan quotes the wrong key (and the expected one) in its error body: the panel gets it masked.
    assert b.last_response["status"] == 401 and "***" in json.dumps(b.last_response)
    assert_no_secret(b, err)
    assert_no_secret(b, err, secret=katan_echo.api_key)
    assert isinstance(err.__cause__, Exception)  # chained from the client's error


def test_list_models_maps_errors_too(katan_echo):
    with pytest.raises(BackendError) as info:
        backend(katan_echo.base_url, key=KEY).list_models()
    assert info.value.kind == "auth" and KEY not in str(info.value)


def test_base_url_without_v1_is_404_with_a_hint(katan_echo):
    err, _, _ = fail(backend(katan_echo.url, key=katan_echo.api_key))
    assert err.kind == "not_found" and err.status == 404
    assert "/v1" in err.message and "test-model" in err.message
    one_line(err)


def test_invalid_request_is_400_with_the_server_message(katan_echo):
    b = backend(katan_echo.base_url, key=katan_echo.api_key)
    err, _, _ = fail(b, messages=[])  # katan requires at least one message
    assert err.kind == "bad_request" and err.status == 400 and not err.retryable
    assert "400" in err.message and "at least 1 item" in err.message
    one_line(err)


def test_server_error_500_is_retried_within_the_budget(katan_faults):
    server = katan_faults.errors
    before = server.count_log("| 500 |")
    b = backend(server.base_url, timeout_s=3, max_retries=2)
    err, elapsed, _ = fail(b)
    assert err.kind == "server" and err.retryable
    assert "500" in err.message and "try again later" in err.message
    assert "internal server error" in err.message  # katan's own text, quoted
    one_line(err)
    assert server.count_log("| 500 |") - before == 3  # one try + two retries
    assert elapsed < 3.5


def test_rate_limit_429(katan_faults):
    err, elapsed, _ = fail(backend(katan_faults.rate_limited.base_url, timeout_s=2, max_retries=1))
    assert err.kind == "rate_limit" and err.status == 429 and err.retryable
    assert "429" in err.message and "try again" in err.message
    assert elapsed < 2.5


def test_gateway_timeout_504(katan_faults):
    err, _, _ = fail(backend(katan_faults.gateway_timeout.base_url, timeout_s=2, max_retries=0))
    assert err.kind == "server" and "504" in err.message and "gateway timeout" in err.message


def test_no_response_headers_is_a_timeout_within_the_budget(katan_faults):
    b = backend(katan_faults.slow_headers.base_url, timeout_s=1, max_retries=2)
    err, elapsed, _ = fail(b)
    assert err.kind == "timeout" and err.status == 504
    assert "within 1 s" in err.message and "REQUEST_TIMEOUT_S" in err.message
    assert 0.9 < elapsed < 1.8  # the retries do not multiply the wait
    one_line(err)


def test_slow_first_token_is_a_timeout(katan_faults):
    b = backend(katan_faults.slow_tokens.base_url, timeout_s=0.8, max_retries=2)
    err, elapsed, seen = fail(b)
    assert err.kind == "timeout" and not seen
    assert elapsed < 1.5


def test_cancel_while_waiting_for_the_first_token(katan_faults):
    b = backend(katan_faults.slow_tokens.base_url, timeout_s=5)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    chunks = list(b.stream(HELLO, GenParams(), cancel))
    elapsed = time.monotonic() - t0
    assert chunks[-1].finish_reason == "cancelled" and not any(c.text for c in chunks)
    assert elapsed < 1.2  # katan would send the first token only after 1.5 s


# ================================================================================ no server at all
def test_no_key_for_openai_says_where_to_set_it():
    b = OpenAIBackend(model="gpt-4o-mini")
    err, elapsed, _ = fail(b)
    assert err.kind == "auth" and "OPENAI_API_KEY" in err.message and "Hosted-API" in err.message
    assert elapsed < 0.5


def test_connection_refused_names_the_host(scripted_server):
    port = free_port()
    b = backend(f"http://127.0.0.1:{port}/v1", timeout_s=2, max_retries=2)
    err, elapsed, _ = fail(b)
    assert err.kind == "connection" and err.retryable
    assert f"127.0.0.1:{port}" in err.message and "running" in err.message
    assert elapsed < 2.5
    one_line(err)


def test_unknown_host_says_it_does_not_resolve():
    err, _, _ = fail(backend("http://no-such-host.invalid/v1", max_retries=0))
    assert err.kind == "connection" and "no-such-host.invalid" in err.message and "resolve" in err.message


@pytest.mark.parametrize(
    "url", ["localhost:8000/v1", "http://", "http://exa mple.com/v1", "ftp://host/v1", "http://host:99999/v1"]
)
def test_malformed_base_url(url):
    err, _, _ = fail(backend(url))
    assert err.kind == "config" and "http://localhost:8000/v1" in err.message


# ================================================================================ scripted: retries
def test_retries_happen_before_the_first_token(scripted_server):
    scripted_server.push(Act.status(503), Act.status(502), Act.stream("one", " two"))
    b = backend(scripted_server.base_url, timeout_s=5, max_retries=2)
    reply = collect(b.stream(HELLO, GenParams()))
    assert reply.text == "one two"  # once: nothing doubled
    assert len(scripted_server.requests) == 3


def test_no_retries_when_max_retries_is_zero(scripted_server):
    scripted_server.push(Act.status(503), Act.stream("never"))
    err, _, _ = fail(backend(scripted_server.base_url, max_retries=0))
    assert err.kind == "server" and "503" in err.message
    assert len(scripted_server.requests) == 1


def test_retry_after_is_respected(scripted_server):
    scripted_server.push(Act.status(429, headers={"Retry-After": "1"}), Act.stream("ok"))
    b = backend(scripted_server.base_url, timeout_s=5, max_retries=2)
    t0 = time.monotonic()
    assert collect(b.stream(HELLO, GenParams())).text == "ok"
    reqs = scripted_server.requests
    assert len(reqs) == 2 and reqs[1].at - reqs[0].at >= 0.95
    assert time.monotonic() - t0 < 3


def test_retry_after_beyond_the_budget_fails_at_once(scripted_server):
    scripted_server.push(Act.status(429, headers={"Retry-After": "100"}))
    err, elapsed, _ = fail(backend(scripted_server.base_url, timeout_s=3, max_retries=2))
    assert err.kind == "rate_limit" and "100 s" in err.message
    assert elapsed < 1 and len(scripted_server.requests) == 1


def test_quota_exhausted_is_not_retried(scripted_server):
    scripted_server.push(
        Act.status(
            429,
            {
                "error": {
                    "message": "You exceeded your current quota.",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
        )
    )
    err, _, _ = fail(backend(scripted_server.base_url, max_retries=2))
    assert err.kind == "rate_limit" and not err.retryable and "quota" in err.message and "billing" in err.message
    assert len(scripted_server.requests) == 1


def test_never_answering_server_times_out_within_the_budget(scripted_server):
    scripted_server.default = Act.hang()
    err, elapsed, _ = fail(backend(scripted_server.base_url, timeout_s=1, max_retries=2))
    assert err.kind == "timeout" and "within 1 s" in err.message
    assert 0.9 < elapsed < 1.6
    assert len(scripted_server.requests) == 1  # no time left in the budget for a retry


def test_retries_are_the_openai_clients_own(scripted_server):
    """The client retries (its retry-count header says so), with its growing, jittered backoff."""
    scripted_server.push(Act.status(500), Act.status(500), Act.stream("third time"))
    b = backend(scripted_server.base_url, timeout_s=6, max_retries=2)
    assert collect(b.stream(HELLO, GenParams())).text == "third time"
    reqs = scripted_server.requests
    assert [r.headers.get("x-stainless-retry-count") for r in reqs] == ["0", "1", "2"]
    first_pause, second_pause = reqs[1].at - reqs[0].at, reqs[2].at - reqs[1].at
    assert 0.3 < first_pause < second_pause < 1.5  # about 0.5 s, then about 1 s (less up to a quarter)
    assert b._get_client().max_retries == 2


def test_retry_after_ms_and_the_servers_no_retry_are_honoured(scripted_server):
    scripted_server.push(Act.status(503, headers={"retry-after-ms": "300"}), Act.stream("ok"))
    b = backend(scripted_server.base_url, timeout_s=5, max_retries=2)
    assert collect(b.stream(HELLO, GenParams())).text == "ok"
    reqs = scripted_server.requests
    assert len(reqs) == 2 and 0.28 <= reqs[1].at - reqs[0].at < 0.9
    scripted_server.push(Act.status(503, headers={"x-should-retry": "false"}), Act.stream("never"))
    err, _, _ = fail(b)
    assert err.kind == "server" and "503" in err.message and len(scripted_server.requests) == 3


def test_a_backoff_that_would_outlast_the_budget_is_not_started(scripted_server):
    """The 503 is reported at once, not a timeout later: the client is told not to retry."""
    scripted_server.push(Act.status(503, headers={"Retry-After": "5"}))
    err, elapsed, _ = fail(backend(scripted_server.base_url, timeout_s=2, max_retries=2))
    assert err.kind == "server" and "503" in err.message and elapsed < 0.5
    assert len(scripted_server.requests) == 1


def test_no_retry_is_sent_after_the_budget_ended(scripted_server):
    """The client would retry a timed-out attempt after its backoff; the budget stops it for good."""
    scripted_server.default = Act.hang()
    err, elapsed, _ = fail(backend(scripted_server.base_url, timeout_s=0.6, max_retries=3))
    assert err.kind == "timeout" and elapsed < 1.0
    time.sleep(1.5)  # longer than the client's pause before its next attempt
    assert len(scripted_server.requests) == 1


def test_stream_cut_before_text_is_not_retried_when_max_retries_is_zero(scripted_server):
    scripted_server.push(Act.cut(), Act.stream("never"))
    err, _, seen = fail(backend(scripted_server.base_url, max_retries=0))
    assert err.kind == "stream_cut" and not seen and len(scripted_server.requests) == 1


def test_cancel_during_the_clients_backoff_returns_at_once(scripted_server):
    scripted_server.push(Act.status(503, headers={"Retry-After": "2"}), Act.stream("too late"))
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    chunks = list(backend(scripted_server.base_url, timeout_s=10).stream(HELLO, GenParams(), cancel))
    assert chunks[-1].finish_reason == "cancelled" and time.monotonic() - t0 < 1.0
    time.sleep(2.2)  # the client wakes from its pause: the cancelled request sends nothing more
    assert len(scripted_server.requests) == 1


def test_the_client_backoff_constants_are_the_clients():
    from openai import _constants

    from llm_levels.backends import openai_budget as budget

    assert budget.CLIENT_INITIAL_RETRY_DELAY_S == _constants.INITIAL_RETRY_DELAY
    assert budget.CLIENT_MAX_RETRY_DELAY_S == _constants.MAX_RETRY_DELAY
    assert budget.CLIENT_MAX_RETRY_AFTER_S == _constants.MAX_RETRY_AFTER_DELAY


@pytest.mark.parametrize(
    "headers, seconds",
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after": "not a date"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after-ms": "x", "retry-after": "1.5"}, 1.5),
        ({}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: no wait
    ],
)
def test_retry_after_parsing(headers, seconds):
    from llm_levels.backends.openai_budget import retry_after

    assert retry_after(headers) == seconds


# ================================================================================ scripted: stream cuts
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked-unterminated", "close-delimited"])
def test_stream_cut_after_text_keeps_the_partial_text_and_is_not_retried(scripted_server, chunked):
    scripted_server.push(Act.cut("The answer ", "is 4", chunked=chunked))
    b = backend(scripted_server.base_url, max_retries=2)
    err, _, seen = fail(b)
    assert err.kind == "stream_cut" and err.retryable
    assert err.partial_text == "The answer is 4" == "".join(c.text for c in seen)
    assert "cut off" in err.message and "Try again" in err.message
    assert len(scripted_server.requests) == 1  # text was shown: a retry would double it
    one_line(err)


def test_stream_cut_before_any_text_is_retried(scripted_server):
    scripted_server.push(Act.cut(), Act.stream("fine"))
    reply = collect(backend(scripted_server.base_url, max_retries=1).stream(HELLO, GenParams()))
    assert reply.text == "fine" and reply.finish_reason == "stop"
    assert len(scripted_server.requests) == 2


# ================================================================================ scripted: status codes
def test_unknown_model_404_names_the_model(scripted_server):
    scripted_server.push(
        Act.status(
            404,
            {
                "error": {
                    "message": "The model `gpt-9` does not exist or you do not have access to it.",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                }
            },
        )
    )
    err, _, _ = fail(backend(scripted_server.base_url, model="gpt-9"))
    assert err.kind == "not_found" and "'gpt-9'" in err.message and "/models" in err.message
    assert len(scripted_server.requests) == 1


def test_forbidden_403(scripted_server):
    scripted_server.push(Act.status(403, {"error": {"message": "Country, region, or territory not supported"}}))
    err, _, _ = fail(backend(scripted_server.base_url))
    assert err.kind == "auth" and err.status == 403 and "403" in err.message and "not supported" in err.message


def test_server_text_is_scrubbed_and_truncated(scripted_server):
    long = "x" * 1000
    scripted_server.push(Act.status(400, {"error": {"message": f"bad key {KEY} and Bearer {KEY} {long}"}}))
    b = backend(scripted_server.base_url)
    err, _, _ = fail(b)
    assert err.kind == "bad_request" and "bad key ***" in err.message and len(err.message) < 500
    assert_no_secret(b, err)
    assert scripted_server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent, though


def test_token_limit_parameter_is_swapped_once_when_refused(scripted_server):
    scripted_server.push(
        Act.status(
            400,
            {
                "error": {
                    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.",
                    "type": "invalid_request_error",
                    "param": "max_tokens",
                    "code": "unsupported_parameter",
                }
            },
        )
    )
    b = backend(scripted_server.base_url)
    reply = collect(b.stream(HELLO, GenParams(max_new_tokens=12)))
    assert reply.text == "Hello, world"
    first, second = (r.body for r in scripted_server.requests)
    assert first["max_tokens"] == 12 and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 12 and "max_tokens" not in second
    assert b.last_request == second


def test_token_limit_too_large_is_not_swapped(scripted_server):
    scripted_server.push(
        Act.status(
            400,
            {
                "error": {
                    "message": "'max_tokens' is too large: 5000. This model's maximum context length is 2048 tokens.",
                    "type": "BadRequestError",
                    "param": "max_tokens",
                }
            },
        )
    )
    err, _, _ = fail(backend(scripted_server.base_url))
    assert err.kind == "bad_request" and "too large: 5000" in err.message
    assert len(scripted_server.requests) == 1


def test_openai_gets_max_completion_tokens_and_no_local_only_knobs():
    params = GenParams(max_new_tokens=9, top_k=40, repetition_penalty=1.2, top_p=0.9, seed=7, stop=("END",))
    body = backend(None).build_request(HELLO, params)
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body
    assert "top_k" not in body and "repetition_penalty" not in body
    assert body["top_p"] == 0.9 and body["seed"] == 7 and body["stop"] == ["END"]
    assert "top_p" not in backend(None).build_request(HELLO, GenParams(top_p=1.0))


def test_other_servers_get_local_knobs_in_the_body(scripted_server):
    b = backend(scripted_server.base_url)
    collect(b.stream(HELLO, GenParams(max_new_tokens=9, top_k=40, repetition_penalty=1.2, seed=3)))
    sent = scripted_server.requests[0].body
    assert sent["top_k"] == 40 and sent["repetition_penalty"] == 1.2 and sent["seed"] == 3
    assert sent["max_tokens"] == 9 and sent["stream_options"] == {"include_usage": True}
    assert sent == b.last_request  # the panel shows what really went out
    plain = backend(scripted_server.base_url).build_request(HELLO, GenParams())
    assert "top_k" not in plain and "repetition_penalty" not in plain


# ================================================================================ scripted: stream shape
def test_usage_stays_unknown_when_the_server_sends_none(scripted_server):
    scripted_server.push(Act.stream("a", "b", usage=None, finish="length"))
    reply = collect(backend(scripted_server.base_url).stream(HELLO, GenParams()))
    assert reply.text == "ab" and reply.usage is None and reply.finish_reason == "length"


def test_raw_chunks_are_capped_but_keep_the_last(scripted_server):
    parts = [f"{i} " for i in range(300)]
    scripted_server.push(Act.stream(*parts, usage=(5, 300)))
    b = backend(scripted_server.base_url)
    reply = collect(b.stream(HELLO, GenParams()))
    assert reply.text == "".join(parts) and reply.usage.output_tokens == 300
    raw = b.last_response
    assert len(raw) == MAX_RAW_CHUNKS + 2 and "not kept" in raw[-2]["note"]
    assert raw[-1]["usage"]["completion_tokens"] == 300


def test_error_event_inside_the_stream_keeps_the_partial_text(scripted_server):
    scripted_server.push(
        Act.events(
            Act.text_chunk("par"),
            Act.text_chunk("tial"),
            {"error": {"message": "model overloaded", "type": "server_error"}},
        )
    )
    err, _, seen = fail(backend(scripted_server.base_url))
    assert err.kind == "server" and "model overloaded" in err.message and err.partial_text == "partial"
    assert [c.text for c in seen] == ["par", "tial"] and len(scripted_server.requests) == 1


def test_a_stream_that_is_not_json_says_so(scripted_server):
    scripted_server.push(Act.events("<html>not an API</html>"))
    err, _, _ = fail(backend(scripted_server.base_url, max_retries=0))
    assert err.kind == "server" and "not JSON" in err.message and "base URL" in err.message


# ================================================================================ scripted: cancellation
def test_closing_the_generator_closes_the_http_stream(scripted_server):
    scripted_server.default = Act.trickle(interval_s=0.1)
    gen = backend(scripted_server.base_url).stream(HELLO, GenParams())
    texts = [next(gen).text, next(gen).text]
    assert texts == ["tick ", "tick "]
    t0 = time.monotonic()
    gen.close()
    gone = scripted_server.wait_for_disconnect(2)
    assert gone is not None and gone - t0 < 0.5


def test_cancel_event_ends_the_stream_and_the_server_sees_it(scripted_server):
    scripted_server.default = Act.trickle(interval_s=0.05)
    cancel = threading.Event()
    b = backend(scripted_server.base_url)
    chunks = []
    t0 = time.monotonic()
    for c in b.stream(HELLO, GenParams(), cancel):
        chunks.append(c)
        if len(chunks) == 3:
            cancel.set()
    assert chunks[-1].finish_reason == "cancelled" and len(chunks) == 4
    gone = scripted_server.wait_for_disconnect(2)
    assert gone is not None and gone - t0 < 1.5


def test_cancel_from_another_thread_wakes_a_blocked_read(scripted_server):
    scripted_server.default = Act.trickle(interval_s=5)  # one chunk, then a long silence
    cancel = threading.Event()
    gen = backend(scripted_server.base_url, timeout_s=10).stream(HELLO, GenParams(), cancel)
    assert next(gen).text == "tick "
    threading.Timer(0.2, cancel.set).start()
    t0 = time.monotonic()
    rest = list(gen)
    assert rest[-1].finish_reason == "cancelled" and time.monotonic() - t0 < 1.0
    assert scripted_server.wait_for_disconnect(2) is not None


def test_cancel_before_start_sends_nothing(scripted_server):
    cancel = threading.Event()
    cancel.set()
    chunks = list(backend(scripted_server.base_url).stream(HELLO, GenParams(), cancel))
    assert [c.finish_reason for c in chunks] == ["cancelled"] and not scripted_server.requests

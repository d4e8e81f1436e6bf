"""The guards of a public deployment: base-URL checks (llm_levels/ssrf.py), the rate limiter
(llm_levels/rate_limit.py) and secret redaction in logs (llm_levels/redaction.py)."""

from __future__ import annotations

import http.server
import io
import logging
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from llm_levels import ssrf
from llm_levels.config import Settings
from llm_levels.core import BackendError
from llm_levels.rate_limit import RateLimiter
from llm_levels.redaction import MASK, MIN_SECRET_CHARS, SecretFilter, SecretRegistry, install_log_redaction, redact
from llm_levels.ssrf import check_base_url

STRICT = Settings()  # allow_private_base_url defaults to False
LENIENT = Settings(allow_private_base_url=True)


# ================================================================================ check_base_url
@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:8000/v1", "loopback"),
        ("http://127.1/v1", "loopback"),  # a short form that resolves to 127.0.0.1
        ("http://2130706433/v1", "loopback"),  # 127.0.0.1 as one decimal number
        ("http://10.0.0.5/v1", "private"),
        ("http://172.16.3.4:8080/v1", "private"),
        ("http://172.31.255.255/v1", "private"),
        ("https://192.168.1.10/v1", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:8000/v1", "loopback"),
        ("http://[fc00::1]/v1", "private"),
        ("http://[fd00:ec2::254]/v1", "private"),  # AWS's IPv6 metadata address
        ("http://[fe80::1]/v1", "link-local"),
        ("http://0.0.0.0:7860/v1", "unspecified"),
        ("http://[::]/v1", "unspecified"),
        ("http://224.0.0.1/v1", "multicast"),
        ("http://[::ffff:127.0.0.1]/v1", "loopback"),  # IPv4-mapped IPv6
        ("http://[::ffff:169.254.169.254]/v1", "link-local"),
        ("http://100.64.0.1/v1", "non-public"),  # carrier-grade NAT
    ],
)
def test_non_public_targets_are_refused(url, reason):
    with pytest.raises(BackendError) as e:
        check_base_url(url, STRICT)
    assert e.value.kind == "bad_request" and e.value.status == 403
    assert reason in e.value.message
    assert "ALLOW_PRIVATE_BASE_URL" in e.value.message  # says what the operator can do
    assert "\n" not in e.value.message


def test_localhost_resolves_to_loopback_and_is_refused():
    # Real resolution (the hosts file, no network): "localhost" is this machine.
    with pytest.raises(BackendError, match="loopback"):
        check_base_url("http://localhost:11434/v1", STRICT)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/v1",
        "http://93.184.216.34:8080/v1/",
        "https://[2606:4700:4700::1111]/v1",
        "  https://8.8.8.8/v1  ",
    ],
)
def test_public_literal_addresses_are_allowed_and_normalized(url):
    out = check_base_url(url, STRICT)
    assert out == url.strip().rstrip("/")


def test_private_targets_allowed_when_the_operator_says_so():
    assert check_base_url("http://127.0.0.1:8000/v1/", LENIENT) == "http://127.0.0.1:8000/v1"
    assert check_base_url("http://localhost:11434/v1", LENIENT) == "http://localhost:11434/v1"
    assert check_base_url("http://192.168.1.10:8000/v1", LENIENT) == "http://192.168.1.10:8000/v1"


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/", "http://[fe80::1]/v1", "http://[::ffff:169.254.169.254]/v1", "http://169.254.0.1/v1"],
)
@pytest.mark.parametrize("settings", [STRICT, LENIENT], ids=["strict", "private-allowed"])
def test_link_local_targets_are_blocked_whatever_the_settings_and_the_message_says_why(url, settings):
    """The cloud metadata service answers on 169.254.169.254: a request there used to come back as a 403 from
    it, shown as a key/organization/region problem. It is blocked, and the message says so and why."""
    with pytest.raises(BackendError) as e:
        check_base_url(url, settings)
    msg = e.value.message
    assert e.value.status == 403 and e.value.kind == "bad_request" and not e.value.retryable
    assert "blocked" in msg and "link-local" in msg and "metadata" in msg and "\n" not in msg
    assert "organization" not in msg and "region" not in msg and "key" not in msg.lower()


def test_a_host_name_that_resolves_to_link_local_is_blocked_with_private_targets_allowed():
    with pytest.raises(BackendError, match=r"blocked: meta\.example\.test \(169\.254\.169\.254\) is a link-local"):
        check_base_url("http://meta.example.test/v1", LENIENT, resolver=lambda host, port: ["169.254.169.254"])


def test_hostnames_are_judged_by_every_address_they_resolve_to():
    calls = []

    def resolver(host, port):
        calls.append((host, port))
        return {"api.example.test": ["93.184.216.34"], "mixed.example.test": ["93.184.216.34", "10.1.2.3"]}[host]

    assert check_base_url("https://api.example.test/v1", STRICT, resolver=resolver) == "https://api.example.test/v1"
    assert calls == [("api.example.test", 443)]
    with pytest.raises(
        BackendError, match=r"blocked: mixed\.example\.test \(10\.1\.2\.3\) is a private-network address"
    ):
        check_base_url("http://mixed.example.test:8080/v1", STRICT, resolver=resolver)
    assert calls[-1] == ("mixed.example.test", 8080)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://93.184.216.34/v1", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("93.184.216.34/v1", "http:// or https://"),
        ("http:///v1", "no host"),
        ("http://", "no host"),
        ("http://user:pw@93.184.216.34/v1", "user name or password"),
        ("http://sk-abc@93.184.216.34/v1", "user name or password"),
        ("http://93.184.216.34@127.0.0.1/v1", "user name or password"),
        ("http://93.184.216.34:99999/v1", "not a valid URL"),
        ("http://[::1/v1", "not a valid URL"),
        ("http://93.184.216.34/v1?api_key=sk-123", "?query or #fragment"),
        ("http://93.184.216.34/v1#x", "?query or #fragment"),
        ("http://93.184.216.34/v1?", "?query or #fragment"),
        ("http://exa mple.com/v1", "spaces or control characters"),
        ("http://93.184.216.34/v1\r\nX-Evil: 1", "spaces or control characters"),
        ("https://93.184.216.34/" + "a" * 3000, "too long"),
    ],
)
def test_malformed_urls_are_refused_with_one_line(url, fragment):
    with pytest.raises(BackendError) as e:
        check_base_url(url, LENIENT)  # even when private targets are allowed
    assert e.value.kind == "bad_request" and e.value.status == 400
    assert fragment in e.value.message
    assert "\n" not in e.value.message


def test_unresolvable_host_is_a_clear_error(monkeypatch):
    def failing(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", failing)
    with pytest.raises(BackendError, match="could not be found") as e:
        check_base_url("https://no-such-host.invalid/v1", STRICT)
    assert e.value.kind == "bad_request"
    assert isinstance(e.value.__cause__, socket.gaierror)


def test_slow_dns_gives_up_after_the_timeout(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(3) or [])
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="took longer") as e:
        ssrf._resolve("slow.example.test", 443, timeout_s=0.2)
    assert time.monotonic() - t0 < 1.5
    assert e.value.kind == "timeout" and e.value.retryable


def test_private_targets_default_to_allowed_only_where_nobody_else_can_reach_the_ui():
    # a laptop: the UI listens on loopback only, so a typed http://localhost:11434/v1 works
    assert Settings.from_env({}).allow_private_base_url is True
    assert Settings.from_env({"GRADIO_SERVER_NAME": "::1"}).allow_private_base_url is True
    # reachable by others: refused unless explicitly allowed
    assert Settings.from_env({"GRADIO_SERVER_NAME": "0.0.0.0"}).allow_private_base_url is False
    assert Settings.from_env({"GRADIO_SERVER_NAME": "192.168.1.5"}).allow_private_base_url is False
    assert Settings.from_env({"PUBLIC_DEPLOYMENT": "true"}).allow_private_base_url is False
    assert Settings.from_env({"SPACE_ID": "me/app", "GRADIO_SERVER_NAME": "0.0.0.0"}).allow_private_base_url is False
    assert Settings.from_env({"SPACE_ID": "me/app", "ALLOW_PRIVATE_BASE_URL": "true"}).allow_private_base_url is True
    assert Settings.from_env({"ALLOW_PRIVATE_BASE_URL": "false"}).allow_private_base_url is False
    assert Settings().allow_private_base_url is False  # the dataclass itself is strict
    with pytest.raises(BackendError, match="ALLOW_PRIVATE_BASE_URL"):
        Settings.from_env({"ALLOW_PRIVATE_BASE_URL": "maybe"})


# ====================================================================== connect-time guard (rebinding)
class _EchoHost(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture()
def local_http():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHost)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_guarded_transport_connects_to_the_checked_address_and_keeps_the_host(local_http):
    import httpx2

    # "rebind.test" exists only in this resolver: reaching the server proves the transport connected to
    # the address it checked, not to a second DNS answer.
    transport = ssrf.guarded_transport_class()(allow_private=True, resolver=lambda h, p: ["127.0.0.1"])
    with httpx2.Client(transport=transport) as client:
        r = client.get(f"http://rebind.test:{local_http}/x")
    assert r.status_code == 200 and r.text == f"host=rebind.test:{local_http}"


def test_guarded_transport_refuses_private_addresses_at_connect_time(local_http):
    import httpx2

    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding DNS: public first, then loopback
    check_base_url("http://rebind.test/v1", STRICT, resolver=lambda h, p: next(answers))
    transport = ssrf.guarded_transport_class()(allow_private=False, resolver=lambda h, p: next(answers))
    with httpx2.Client(transport=transport) as client, pytest.raises(httpx2.ConnectError, match="loopback"):
        client.get(f"http://rebind.test:{local_http}/x")


def test_guarded_http_client_refuses_loopback(local_http):
    import httpx2

    with ssrf.guarded_http_client(STRICT) as client, pytest.raises(httpx2.ConnectError, match="loopback"):
        client.get(f"http://127.0.0.1:{local_http}/x")
    with ssrf.guarded_http_client(LENIENT) as client:
        assert client.get(f"http://127.0.0.1:{local_http}/x").status_code == 200


# ==================================================================================== RateLimiter
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rate_limiter_sliding_window():
    clock = Clock()
    rl = RateLimiter(3, clock=clock)
    for dt in (0, 20, 20):  # requests at t=0, 20, 40
        clock.t += dt
        rl.check("a")
    clock.t += 10  # t=50: three in the last minute
    with pytest.raises(BackendError) as e:
        rl.check("a")
    assert e.value.kind == "rate_limit" and e.value.status == 429 and e.value.retryable
    assert "3 per minute" in e.value.message and "Try again in 10 s" in e.value.message
    rl.check("b")  # other sessions are not affected
    clock.t += 10  # t=60: the request at t=0 has left the window
    rl.check("a")
    with pytest.raises(BackendError, match="Try again in 20 s"):
        rl.check("a")  # oldest now t=20 -> free at t=80


def test_refused_requests_do_not_extend_the_wait():
    clock = Clock()
    rl = RateLimiter(1, clock=clock)
    rl.check("a")
    for _ in range(5):
        clock.t += 10
        with pytest.raises(BackendError):
            rl.check("a")
    clock.t += 10  # t=60 since the only accepted request
    rl.check("a")


def test_rate_limiter_memory_is_bounded():
    clock = Clock()
    rl = RateLimiter(5, clock=clock, max_sessions=50)
    for i in range(1000):
        rl.check(f"s{i}")
    assert len(rl) == 50
    clock.t += 61  # everyone idle for a window: the next call sweeps them out
    rl.check("new")
    assert len(rl) == 1


def test_rate_limiter_is_thread_safe():
    rl = RateLimiter(500)
    accepted, refused = [], []
    lock = threading.Lock()

    def worker():
        for _ in range(100):
            try:
                rl.check("shared")
                with lock:
                    accepted.append(1)
            except BackendError:
                with lock:
                    refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(accepted), len(refused)) == (500, 300)


def test_a_request_without_a_session_is_not_counted():
    """/v1 and the command line have no browser session: the per-session limit is not theirs."""
    rl = RateLimiter(1, clock=Clock())
    for _ in range(5):
        rl.check(None)
        rl.check("")
    rl.check("a")
    with pytest.raises(BackendError):
        rl.check("a")


# ========================================================================================= redact
KEY = "sk-test-SECRET-123"


def test_redact_masks_every_occurrence_and_keeps_the_rest():
    text = f"key={KEY}; again {KEY}{KEY}."
    assert redact(text, [KEY]) == f"key={MASK}; again {MASK}."
    assert redact("nothing here", [KEY]) == "nothing here"
    assert redact(text, []) == text
    assert redact(text, [None, ""]) == text


def test_redact_ignores_values_too_short_to_be_keys():
    assert redact("a b c 1234567", ["a", "1234567"]) == "a b c 1234567"


def test_redact_overlapping_secrets_leave_no_fragment():
    out = redact("xxabcdefghijklyy", ["abcdefghij", "efghijkl"])
    assert out == f"xx{MASK}yy"


secret_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=MIN_SECRET_CHARS, max_size=40)
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@given(secret=secret_text, before=any_text, after=any_text, times=st.integers(1, 3))
@hsettings(max_examples=300, deadline=None)
def test_redact_never_leaves_the_secret(secret, before, after, times):
    text = before + secret * times + after
    out = redact(text, [secret])
    assert secret not in out


@given(secret=secret_text, text=any_text)
@hsettings(max_examples=200, deadline=None)
def test_redact_changes_nothing_without_the_secret(secret, text):
    if secret not in text:
        assert redact(text, [secret]) == text


@given(secrets=st.lists(secret_text, min_size=1, max_size=4), parts=st.lists(any_text, min_size=1, max_size=5))
@hsettings(max_examples=200, deadline=None)
def test_redact_with_several_secrets(secrets, parts):
    text = "".join(p + s for p, s in zip(parts, secrets * 3))
    out = redact(text, secrets)
    assert not any(s in out for s in secrets)


def test_the_mask_itself_as_a_secret_is_withheld():
    assert MASK not in redact(f"a {MASK} b", [MASK])


# ============================================================================ registry and log filter
def _registry(**env):
    return SecretRegistry(["OPENAI_API_KEY", "LOCAL_API_KEY", "VLLM_KEY"], environ=env)


def test_registry_collects_env_and_session_secrets_with_encoded_variants():
    reg = _registry(OPENAI_API_KEY=KEY, LOCAL_API_KEY="local-key-0987654321", VLLM_KEY="")
    reg.add("typed/by+a user=")
    reg.add("short")  # too short to be a key: ignored
    values = reg.values()
    assert KEY in values and "local-key-0987654321" in values and "typed/by+a user=" in values
    assert urllib.parse.quote("typed/by+a user=", safe="") in values  # as it appears in a URL
    assert "short" not in values
    assert list(values) == sorted(values, key=len, reverse=True)


def test_registry_for_settings_reads_each_endpoints_key_variable():
    s = Settings.from_env(
        {"HOSTED_ENDPOINTS": '[{"name": "v", "base_url": "http://h:1/v1", "model": "m", "key_env": "VLLM_API_KEY"}]'}
    )
    reg = SecretRegistry.for_settings(s, environ={"VLLM_API_KEY": "vllm-secret-value-42"})
    assert "vllm-secret-value-42" in reg.values()


def test_registry_session_secrets_are_bounded():
    reg = SecretRegistry([], environ={}, max_session_secrets=10)
    for i in range(100):
        reg.add(f"session-key-{i:04d}")
    values = reg.values()
    assert "session-key-0099" in values and "session-key-0000" not in values
    assert len([v for v in values if v.startswith("session-key-")]) == 10


def _log_to_string(filter_: logging.Filter, fn, fmt="%(message)s"):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(filter_)
    logger = logging.getLogger(f"test_safety.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        fn(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_log_filter_scrubs_message_args_and_traceback():
    reg = _registry(OPENAI_API_KEY=KEY)
    typed = "user-typed-key-5555"
    reg.add(typed)

    def emit(logger):
        logger.info("calling with key %s", KEY)
        logger.info(f"inline {KEY} and {typed}")
        logger.warning("dict args %(k)s", {"k": {"Authorization": f"Bearer {KEY}"}})
        logger.info("url %s", f"http://h/v1?key={urllib.parse.quote(typed, safe='')}")
        try:
            raise RuntimeError(f"boom with {KEY}")
        except RuntimeError:
            logger.exception("failed")
        logger.info("count %d tokens", 42)

    out = _log_to_string(SecretFilter(reg), emit)
    assert KEY not in out and typed not in out and urllib.parse.quote(typed, safe="") not in out
    assert out.count(MASK) >= 6
    assert "calling with key [REDACTED]" in out
    assert "RuntimeError: boom with [REDACTED]" in out and "Traceback" in out
    assert "count 42 tokens" in out


def test_installed_redaction_covers_every_logger(caplog):
    reg = _registry(LOCAL_API_KEY="installed-secret-777")
    install_log_redaction(reg)
    install_log_redaction(reg)  # idempotent
    with caplog.at_level(logging.INFO):
        logging.getLogger("httpx").info("HTTP Request: %s %s", "POST", "http://x/v1?k=installed-secret-777")
        logging.getLogger("some.library").error("auth failed for installed-secret-777")
    assert "installed-secret-777" not in caplog.text
    assert caplog.text.count(MASK) == 2


def test_redacting_stream_scrubs_text_written_outside_logging():
    """Tracebacks Gradio prints straight to stderr are scrubbed too, even when a key arrives in pieces."""
    from llm_levels.redaction import RedactingStream

    reg = _registry(OPENAI_API_KEY=KEY)
    install_log_redaction(reg)
    typed = "visitor-typed-key-31337"
    reg.add(typed)
    out = io.StringIO()
    stream = RedactingStream(out)
    stream.write(f"openai.AuthenticationError: got '{typed}', expected '")
    stream.write(KEY[:10])
    stream.write(KEY[10:] + "'\n")
    assert out.getvalue() == "openai.AuthenticationError: got '[REDACTED]', expected '[REDACTED]'\n"
    stream.writelines(["partial line without newline ", KEY])
    assert KEY not in out.getvalue() and "partial" not in out.getvalue()  # held until newline/flush
    stream.flush()
    assert out.getvalue().endswith("partial line without newline [REDACTED]")
    stream.write("x" * (RedactingStream.MAX_PENDING + 1))  # no newline ever: still written, bounded
    assert out.getvalue().endswith("x" * 100)
    assert stream.getvalue is not None  # other attributes reach the wrapped stream


def test_access_log_loses_query_strings_and_keeps_its_format():
    from uvicorn.logging import AccessFormatter

    reg = _registry(OPENAI_API_KEY=KEY)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False))
    handler.addFilter(SecretFilter(reg))
    logger = logging.getLogger("uvicorn.access.test_safety")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(
            '%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", "/gradio_api/queue/data?session_hash=abc123", "1.1", 200
        )
        logger.info('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "POST", f"/v1/x?api_key={KEY}", "1.1", 401)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "abc123" not in out and KEY not in out
    assert '"GET /gradio_api/queue/data?[query removed] HTTP/1.1" 200' in out
    assert '"POST /v1/x?[query removed] HTTP/1.1" 401' in out


# ================================================================================== static guard
def test_trust_remote_code_is_never_enabled():
    """No module of the app turns on trust_remote_code (it runs code from the model's repository)."""
    root = Path(__file__).resolve().parents[1] / "llm_levels"
    offenders = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"trust_remote_code\s*[=:]\s*(True|1|\"?true)", line, re.IGNORECASE):
                offenders.append(f"{path.relative_to(root)}:{n}")
    assert offenders == []


# ============================================================================ runtime hooks (runtime.py)
from llm_levels.core import GenParams, Message  # noqa: E402
from llm_levels.runtime import SESSION_HOSTED, AppRuntime  # noqa: E402


def _runtime(**kw) -> AppRuntime:
    return AppRuntime(Settings(preload_model=False, **kw))  # builds no model (it loads on first use)


def _conv(text: str = "Hello there") -> list[Message]:
    return [Message("system", "Be brief."), Message("user", text)]


def test_check_request_returns_the_params_to_use():
    rt = _runtime(max_new_tokens_cap=300)
    assert rt.check_request("s", _conv(), {"max_new_tokens": "300", "temperature": 0}) == GenParams(
        max_new_tokens=300, temperature=0.0
    )
    assert rt.check_request("s", _conv(), GenParams(max_new_tokens=5)).max_new_tokens == 5
    assert rt.check_request("s", _conv(), None) == GenParams()  # default 256 is under the cap
    small = _runtime(max_new_tokens_cap=100)
    assert small.check_request("s", _conv(), None).max_new_tokens == 100  # defaults follow the cap


def test_check_request_refuses_max_new_tokens_above_the_cap():
    rt = _runtime(max_new_tokens_cap=300)
    with pytest.raises(BackendError) as e:
        rt.check_request("s", _conv(), {"max_new_tokens": 301})
    assert e.value.kind == "bad_request" and e.value.status == 400
    assert "301" in e.value.message and "300" in e.value.message and "MAX_NEW_TOKENS_CAP" in e.value.message


def test_check_request_refuses_a_too_long_prompt_with_size_and_limit():
    rt = _runtime(max_prompt_chars=1000)
    rt.check_request("s", [Message("user", "x" * 990)], None)  # 990 + 0 fits
    with pytest.raises(BackendError) as e:
        rt.check_request("s", [Message("system", "y" * 500), Message("user", "x" * 501)], None)
    assert e.value.kind == "bad_request" and e.value.status == 400
    assert "1,001 characters" in e.value.message and "1,000" in e.value.message


def test_check_request_rate_limits_per_session_and_counts_only_valid_requests():
    rt = _runtime(requests_per_minute=2, max_new_tokens_cap=100)
    for _ in range(3):  # refused for another reason: not counted
        with pytest.raises(BackendError, match="MAX_NEW_TOKENS_CAP"):
            rt.check_request("a", _conv(), {"max_new_tokens": 101})
    rt.check_request("a", _conv(), None)
    rt.check_request("a", _conv(), None)
    with pytest.raises(BackendError) as e:
        rt.check_request("a", _conv(), None)
    assert e.value.kind == "rate_limit" and e.value.status == 429 and "Try again in" in e.value.message
    rt.check_request("b", _conv(), None)  # another session is not affected


def test_check_request_rejects_bad_values_and_empty_conversations():
    rt = _runtime()
    with pytest.raises(BackendError, match="temperature"):
        rt.check_request("s", _conv(), {"temperature": "hot"})
    with pytest.raises(BackendError, match="nothing to answer"):
        rt.check_request("s", [], None)


def test_session_base_urls_are_checked_for_ssrf():
    rt = _runtime(allow_custom_base_url=True)
    for url in (
        "http://127.0.0.1:8000/v1",
        "http://169.254.169.254/latest",
        "http://localhost:11434/v1",
        "http://[::1]:8000/v1",
        "http://192.168.0.2/v1",
    ):
        with pytest.raises(BackendError) as e:
            rt.hosted_backend(SESSION_HOSTED, api_key="sk-session-key-1234", base_url=url)
        assert e.value.status == 403 and "ALLOW_PRIVATE_BASE_URL" in e.value.message
    with pytest.raises(BackendError, match="user name or password"):
        rt.hosted_backend(SESSION_HOSTED, base_url="https://me:pw@93.184.216.34/v1")


def test_custom_base_urls_can_be_turned_off():
    rt = _runtime(allow_custom_base_url=False)
    with pytest.raises(BackendError, match="ALLOW_CUSTOM_BASE_URL") as e:
        rt.hosted_backend(SESSION_HOSTED, base_url="https://93.184.216.34/v1")
    assert e.value.status == 403


def test_a_session_key_is_remembered_for_log_scrubbing():
    rt = _runtime(allow_custom_base_url=False)
    with pytest.raises(BackendError):
        rt.hosted_backend(SESSION_HOSTED, api_key="sk-typed-by-visitor-987", base_url="https://93.184.216.34/v1")
    assert "sk-typed-by-visitor-987" in rt.secrets.values()
    assert redact("bad key sk-typed-by-visitor-987", rt.secrets.values()) == f"bad key {MASK}"


def test_the_operators_configured_url_is_trusted_even_when_a_session_sends_it():
    rt = _runtime(openai_base_url="http://127.0.0.1:8000/v1", allow_custom_base_url=False)
    b = rt.hosted_backend(SESSION_HOSTED, base_url="http://127.0.0.1:8000/v1/")
    assert b.describe().get("base_url", "http://127.0.0.1:8000/v1").startswith("http://127.0.0.1:8000/v1")
    assert b._http_client is None  # the operator's endpoint needs no guard


def test_a_session_url_gets_the_guarded_http_client():
    guarded = ssrf.guarded_transport_class()
    rt = _runtime(allow_custom_base_url=True)
    b = rt.hosted_backend(SESSION_HOSTED, api_key="sk-session-key-1234", base_url="https://93.184.216.34/v1")
    assert isinstance(b._http_client._transport, guarded)
    # With private targets allowed (a laptop), still through the guard: it never lets link-local through.
    lenient = _runtime(allow_custom_base_url=True, allow_private_base_url=True)
    client = lenient.hosted_backend(SESSION_HOSTED, base_url="http://127.0.0.1:9/v1")._http_client
    assert isinstance(client._transport, guarded)


def test_guarded_client_inside_the_real_openai_backend(katan_echo):
    """The openai client, given the guarded HTTP client, cannot reach a loopback server and says why;
    with private targets allowed, the same request goes through (a real llm-katan echo server)."""
    from llm_levels.backends.openai_api import OpenAIBackend

    conv = [Message("user", "guarded hello")]
    params = GenParams(max_new_tokens=16, temperature=0)

    def backend(s: Settings) -> OpenAIBackend:
        return OpenAIBackend(
            model=katan_echo.model,
            api_key=katan_echo.api_key,
            base_url=katan_echo.base_url,
            max_retries=0,
            timeout_s=10,
            http_client=ssrf.guarded_http_client(s),
        )

    with pytest.raises(BackendError) as e:
        backend(STRICT).complete(conv, params)
    assert katan_echo.api_key not in e.value.message
    assert "loopback" in e.value.message or e.value.kind == "connection", e.value.message
    assert "guarded hello" in backend(LENIENT).complete(conv, params).text


@pytest.mark.parametrize(
    "settings, address, words",
    [(STRICT, "10.0.0.7", "private-network"), (LENIENT, "169.254.169.254", "link-local")],
    ids=["private", "metadata"],
)
def test_an_address_refused_at_connect_time_is_reported_as_blocked(settings, address, words):
    """The guard refuses the address the name resolves to when the openai client connects (DNS rebinding):
    the user is told the destination is blocked and why, not that the server is unreachable (which would
    invite a retry) nor a key/region/organization problem. Nothing is sent anywhere."""
    from llm_levels.backends.openai_api import OpenAIBackend

    client = ssrf.guarded_http_client(settings)
    client._transport._resolver = lambda host, port: [address]
    backend = OpenAIBackend(
        model="m",
        api_key="sk-typed-0123456789abcdef",
        base_url="http://rebind.example.test/v1",
        max_retries=0,
        timeout_s=5,
        http_client=client,
    )
    with pytest.raises(BackendError) as e:
        backend.complete([Message("user", "hi")], GenParams(max_new_tokens=4))
    err = e.value
    assert err.kind == "bad_request" and err.status == 403 and not err.retryable, err.message
    assert err.message.startswith("The base URL is blocked: rebind.example.test") and words in err.message
    assert "Could not reach" not in err.message and "organization" not in err.message
    assert "sk-typed" not in err.message


class _DenyingProxy(http.server.BaseHTTPRequestHandler):
    """Answers every request as an egress proxy that blocks the destination does: 403 with a line of text."""

    def do_POST(self) -> None:
        body = b"resolve_deny: denied destination"
        self.send_response(403)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_403_that_is_not_an_apis_answer_says_the_destination_may_be_blocked():
    """Sent to a destination a proxy blocks, the request came back 403 with the proxy's text and was shown
    as the key's organization or region lacking access. Only an API-shaped 403 says that now."""
    from llm_levels.backends.openai_api import OpenAIBackend

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DenyingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend(
            model="m",
            api_key="sk-x-0123456789abcdef",
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
            max_retries=0,
            timeout_s=5,
        )
        with pytest.raises(BackendError) as e:
            backend.complete([Message("user", "hi")], GenParams(max_new_tokens=4))
    finally:
        server.shutdown()
        server.server_close()
    msg = e.value.message
    assert e.value.status == 403 and "proxy or firewall" in msg and "denied destination" in msg, msg
    assert "organization" not in msg and "region" not in msg

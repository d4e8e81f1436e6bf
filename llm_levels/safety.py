"""Guards for a public deployment: base-URL checks (SSRF), per-session rate limits, secret scrubbing.

Three independent tools, each small:

- :func:`check_base_url` vets a base URL that a *session* typed (never the operator's configured
  endpoints, which are trusted): http(s) only, no ``user:pass@``, and the host must resolve only to
  public addresses unless ``ALLOW_PRIVATE_BASE_URL`` is set. :class:`GuardedTransport` repeats the
  address check at connect time, for every request and every redirect hop.
- :class:`RateLimiter` is a thread-safe sliding-window limit of requests per minute per session,
  with bounded memory.
- :func:`redact`, :class:`SecretRegistry`, :class:`SecretFilter` and :func:`install_log_redaction`
  keep secret values (API keys from the environment, keys sessions typed) out of every log line.

See SECURITY.md for what these protect and what they do not.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import math
import socket
import sys
import threading
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from .core import BackendError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

log = logging.getLogger(__name__)

# ================================================================================ base URLs (SSRF)
#: Longest base URL a session may type; real ones are well under 200 characters.
MAX_URL_CHARS = 2048
#: Seconds to wait for DNS when vetting a host; a slow resolver must not hold a worker for long.
DNS_TIMEOUT_S = 3.0

Resolver = Callable[[str, int], Sequence[str]]


def _bad(message: str, status: int = 400) -> BackendError:
    return BackendError(message, kind="bad_request", status=status)


def blocked_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a session may not send requests to ``ip`` (``None`` when it is a public address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address can carry an IPv4 one (::ffff:127.0.0.1, 2002:7f00:1::): judge that one.
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None:
            return blocked_reason(inner)
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_link_local:
        return "a link-local address (e.g. cloud metadata)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private-network address"
    if ip.is_reserved or not ip.is_global:
        return "a non-public address"
    return None


def _resolve(host: str, port: int, timeout_s: float = DNS_TIMEOUT_S) -> list[str]:
    """Every address ``host`` resolves to, or :class:`BackendError` within ``timeout_s``.

    ``getaddrinfo`` has no timeout of its own, so it runs in a daemon thread that we stop waiting for.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result["ips"] = [info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
        except (OSError, UnicodeError) as e:
            result["error"] = e

    t = threading.Thread(target=work, name="base-url-dns", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise BackendError(f"Looking up the host {host!r} took longer than {timeout_s:g} s: check the base URL.",
                           kind="timeout", status=400, retryable=True)
    if "error" in result:
        raise _bad(f"The host {host!r} of the base URL could not be found: check its spelling.") from result["error"]
    if not result.get("ips"):
        raise _bad(f"The host {host!r} of the base URL has no IP address: check its spelling.")
    return result["ips"]


def check_host(host: str, port: int, *, allow_private: bool, resolver: Resolver | None = None) -> list[str]:
    """The addresses of ``host`` a request may go to; refuses non-public ones unless ``allow_private``.

    *Every* address the name resolves to must be public: a name with one public and one private
    address would otherwise let the connection pick the private one.
    """
    host = host.strip("[]")
    try:
        literal = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)
        ips = [str(literal)]
    except ValueError:
        ips = list((resolver or _resolve)(host, port))
    if allow_private:
        return ips
    for raw in ips:
        try:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError:
            raise _bad(f"The host {host!r} resolved to an address this app cannot check ({raw!r}).", 403) from None
        reason = blocked_reason(ip)
        if reason:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise _bad(
                f"The base URL points to {reason}: {shown}. On this deployment a base URL you type must be a "
                "public server (the operator can allow private ones with ALLOW_PRIVATE_BASE_URL=true).",
                403,
            )
    return ips


def check_base_url(url: str, settings: "Settings", *, resolver: Resolver | None = None) -> str:
    """Validate a base URL that a session supplied and return it normalized (no trailing slash).

    Refuses (:class:`BackendError` ``bad_request``, one line): a scheme other than http/https, a
    ``user:password@`` part (credentials belong in the key field, where they are kept secret), a
    missing host, a ``?query`` or ``#fragment`` (a base URL has none; keys put there would end up in
    snippets and logs), more than :data:`MAX_URL_CHARS` characters, and — unless
    ``settings.allow_private_base_url`` — any host that resolves to a loopback, private (RFC 1918,
    IPv6 unique-local), link-local (169.254.0.0/16, the cloud metadata service), unspecified,
    multicast or otherwise non-public address.

    Operator-configured endpoints (``OPENAI_BASE_URL``, ``HOSTED_ENDPOINTS``) are trusted and must not
    be passed here.

    DNS rebinding: the name is resolved *now*; a hostile DNS server can answer differently when the
    HTTP client connects a moment later. This check alone therefore cannot stop a determined attacker;
    :class:`GuardedTransport` closes that gap by checking the address again at connect time (and for
    every redirect), and it is what the hosted backend should use for session-supplied URLs.
    """
    if not isinstance(url, str) or not url.strip():
        raise _bad("The base URL is empty: type one like https://api.example.com/v1.")
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise _bad(f"The base URL is too long ({len(url):,} characters; the limit is {MAX_URL_CHARS:,}).")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise _bad("The base URL contains spaces or control characters: remove them.")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _bad(f"The base URL is not a valid URL ({e}): type one like https://api.example.com/v1.") from e
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad("The base URL must start with http:// or https://.")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise _bad("The base URL must not contain a user name or password (user:pass@): "
                   "put the key in the API-key field instead.")
    host = parts.hostname
    if not host:
        raise _bad("The base URL has no host: type one like https://api.example.com/v1.")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _bad("The base URL must not contain a ?query or #fragment: use just scheme, host and path.")
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    check_host(host, port, allow_private=settings.allow_private_base_url, resolver=resolver)
    return url.rstrip("/")


def guarded_transport_class() -> type:
    """The :class:`GuardedTransport` class (built lazily: it subclasses the ``httpx2`` transport
    that the ``openai`` client uses, and that import is not needed for anything else)."""
    global _GuardedTransport
    if _GuardedTransport is None:
        import httpx2

        class GuardedTransport(httpx2.BaseTransport):
            """An HTTP transport that refuses to connect to non-public addresses.

            Each request (each redirect hop too) resolves its host once, checks every address with
            :func:`check_host`, and connects to the checked address itself — so a DNS answer that
            changes between the check and the connection (DNS rebinding) cannot reach a private
            address. The ``Host`` header and TLS server name (SNI, certificate check) stay the
            original host name. Environment proxies are ignored: a proxy would resolve the name
            itself, out of our sight.
            """

            def __init__(self, *, allow_private: bool = False, resolver: Resolver | None = None,
                         **transport_kwargs: Any) -> None:
                transport_kwargs.setdefault("trust_env", False)
                self._inner = httpx2.HTTPTransport(**transport_kwargs)
                self._allow_private = allow_private
                self._resolver = resolver

            def handle_request(self, request: "httpx2.Request") -> "httpx2.Response":
                host = request.url.host
                port = request.url.port or (443 if request.url.scheme == "https" else 80)
                try:
                    ips = check_host(host, port, allow_private=self._allow_private, resolver=self._resolver)
                except BackendError as e:
                    # The openai client maps transport errors to APIConnectionError; keep our message.
                    raise httpx2.ConnectError(e.message, request=request) from e
                ip = ips[0]
                if ip != host.strip("[]"):
                    request.url = request.url.copy_with(host=ip)
                    # The Host header was set from the original URL when the request was built.
                    if request.url.scheme == "https":
                        request.extensions = {**request.extensions, "sni_hostname": host}
                return self._inner.handle_request(request)

            def close(self) -> None:
                self._inner.close()

        _GuardedTransport = GuardedTransport
    return _GuardedTransport


_GuardedTransport: type | None = None


def guarded_http_client(settings: "Settings", *, timeout_s: float | None = None) -> Any:
    """An ``httpx2.Client`` for the ``openai`` client (``http_client=``) that only reaches public
    addresses (unless ``ALLOW_PRIVATE_BASE_URL``); use it for session-supplied base URLs."""
    import httpx2

    transport = guarded_transport_class()(allow_private=settings.allow_private_base_url)
    timeout = httpx2.Timeout(timeout_s if timeout_s is not None else settings.request_timeout_s, connect=10.0)
    # follow_redirects as the openai client's default; every hop goes through the guard.
    return httpx2.Client(transport=transport, timeout=timeout, follow_redirects=True, trust_env=False)


# ================================================================================== rate limiting
class RateLimiter:
    """Requests per minute per session, as a sliding window (thread-safe, bounded memory).

    ``check(session_id)`` records a request or raises :class:`BackendError` (``rate_limit``, 429)
    that says how many seconds to wait. Each session keeps at most ``per_minute`` timestamps; idle
    sessions are dropped on a periodic sweep, and past ``max_sessions`` the least recently seen
    session is dropped first, so memory stays bounded however many sessions come and go.
    ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        window_s: float = 60.0,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = int(per_minute)
        self.window_s = float(window_s)
        self.max_sessions = int(max_sessions)
        self._clock = clock
        self._lock = threading.Lock()
        # session id -> timestamps of its accepted requests in the window (oldest first); LRU order.
        self._hits: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()
        self._last_sweep = clock()

    def check(self, session_id: str | None) -> None:
        """Count one request for ``session_id``, or refuse it when the session is over its limit."""
        key = session_id or "(no session)"
        with self._lock:
            now = self._clock()
            if now - self._last_sweep >= self.window_s:
                self._sweep(now)
            hits = self._hits.get(key)
            if hits is None:
                hits = collections.deque(maxlen=self.per_minute)
                self._hits[key] = hits
                while len(self._hits) > self.max_sessions:
                    self._hits.popitem(last=False)
            else:
                self._hits.move_to_end(key)
            while hits and now - hits[0] >= self.window_s:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = max(1, math.ceil(hits[0] + self.window_s - now))
                raise BackendError(
                    f"Too many requests: this session may send {self.per_minute} per minute. "
                    f"Try again in {wait} s.",
                    kind="rate_limit", status=429, retryable=True,
                )
            hits.append(now)

    def _sweep(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or now - h[-1] >= self.window_s]:
            del self._hits[key]
        self._last_sweep = now

    def __len__(self) -> int:
        """How many sessions are tracked now (for tests and memory checks)."""
        with self._lock:
            return len(self._hits)


# ======================================================================================= secrets
#: Mask that replaces a secret.
MASK = "[REDACTED]"
#: Values shorter than this are not treated as secrets: masking "a" or "1" would shred every log line,
#: and a real key is far longer.
MIN_SECRET_CHARS = 8
_WITHHELD = "[text withheld: it contained a secret]"

#: Environment variables whose values are secrets, besides each HOSTED_ENDPOINTS ``key_env``.
SECRET_ENV_NAMES: tuple[str, ...] = ("OPENAI_API_KEY", "LOCAL_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def _variants(secret: str) -> set[str]:
    """The secret as it may appear in a log: raw, URL-encoded, JSON-escaped."""
    out = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
           json.dumps(secret)[1:-1]}
    return {v for v in out if len(v) >= MIN_SECRET_CHARS}


def redact(text: str, secrets: Iterable[str | None], mask: str = MASK) -> str:
    """``text`` with every occurrence of every secret (≥ :data:`MIN_SECRET_CHARS` characters) masked.

    Overlapping and adjacent occurrences are merged into one mask, so no fragment of a secret
    survives. The result never contains any of the secrets; in the pathological case where the mask
    itself would recreate one, the whole text is withheld.
    """
    if not text:
        return text
    values = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
    if not values:
        return text
    spans: list[tuple[int, int]] = []
    for s in values:
        start = text.find(s)
        while start != -1:
            spans.append((start, start + len(s)))
            start = text.find(s, start + 1)  # +1, not +len(s): overlapping occurrences count too
    if not spans:
        return text
    spans.sort()
    merged = [list(spans[0])]
    for a, b in spans[1:]:
        if a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    pieces, pos = [], 0
    for a, b in merged:
        pieces.append(text[pos:a])
        pieces.append(mask)
        pos = b
    pieces.append(text[pos:])
    out = "".join(pieces)
    if any(s in out for s in values):  # only when a secret is built from pieces of the mask
        return _WITHHELD if not any(s in _WITHHELD for s in values) else ""
    return out


class SecretRegistry:
    """The secret values to scrub: keys from the environment, plus keys that sessions typed.

    Environment secrets are read at every :meth:`values` call (they can be set after start-up, and
    are never copied into :class:`~llm_levels.config.Settings`). Session keys are remembered with
    :meth:`add` in a bounded, least-recently-added-first store: a log line can then never show a
    key a visitor typed, and memory stays bounded however many visitors come.
    """

    def __init__(
        self,
        env_names: Iterable[str] = SECRET_ENV_NAMES,
        *,
        environ: Mapping[str, str] | None = None,
        max_session_secrets: int = 4096,
    ) -> None:
        self._env_names = tuple(dict.fromkeys(env_names))
        self._environ = environ
        self._max = max_session_secrets
        self._session: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._cache_key: tuple | None = None
        self._cache: tuple[str, ...] = ()

    @classmethod
    def for_settings(cls, settings: "Settings", *, environ: Mapping[str, str] | None = None) -> "SecretRegistry":
        """Every secret variable the settings name: the fixed ones plus each endpoint's ``key_env``."""
        names = list(SECRET_ENV_NAMES) + [e.key_env for e in settings.endpoints if e.key_env]
        return cls(names, environ=environ)

    def add(self, value: str | None) -> None:
        """Remember a secret typed by a session (ignored when empty or too short to be a key)."""
        if not isinstance(value, str):
            return
        value = value.strip()
        if len(value) < MIN_SECRET_CHARS:
            return
        with self._lock:
            self._session.pop(value, None)
            self._session[value] = None
            while len(self._session) > self._max:
                self._session.popitem(last=False)

    def values(self) -> tuple[str, ...]:
        """Every secret value and its encoded variants, longest first."""
        from .config import secret

        env_values = tuple(secret(n, self._environ) for n in self._env_names)
        with self._lock:
            key = (env_values, len(self._session), next(reversed(self._session), None))
            if key == self._cache_key:
                return self._cache
            raw = {v for v in env_values if v} | set(self._session)
        out: set[str] = set()
        for v in raw:
            out |= _variants(v)
        values = tuple(sorted(out, key=len, reverse=True))
        with self._lock:
            self._cache_key, self._cache = key, values
        return values

    def redact(self, text: str) -> str:
        return redact(text, self.values())


def _scrub_query(path: Any) -> Any:
    """A request path without its query string (it may carry a key or a session's hash)."""
    if isinstance(path, str) and "?" in path:
        return path.split("?", 1)[0] + "?[query removed]"
    return path


class SecretFilter(logging.Filter):
    """A logging filter that scrubs secrets from a record's message, arguments and traceback.

    It changes the record in place and always lets it through. Arguments keep their shape (uvicorn's
    access formatter unpacks them); any argument whose text contains a secret is replaced by its
    scrubbed text. Access-log records lose their query strings.
    """

    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging's name
        try:
            self.scrub(record)
        except Exception:  # never lose a log line (or raise from logging) because scrubbing failed
            record.msg, record.args = "[log line withheld: it could not be checked for secrets]", None
            record.exc_info = record.exc_text = None
        return True

    def scrub(self, record: logging.LogRecord) -> None:
        secrets = self.registry.values()
        if record.name.startswith("uvicorn.access") and isinstance(record.args, tuple) and len(record.args) >= 3:
            args = list(record.args)
            args[2] = _scrub_query(args[2])
            record.args = tuple(args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, secrets)
        elif record.msg is not None and secrets:
            text = str(record.msg)
            scrubbed = redact(text, secrets)
            if scrubbed != text:
                record.msg = scrubbed
        if isinstance(record.args, Mapping):
            record.args = {k: self._arg(v, secrets) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(self._arg(a, secrets) for a in record.args)
        if record.exc_info and record.exc_info[0] is not None:
            # Format the traceback now, scrubbed; formatters print exc_text and skip exc_info then.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)

    @staticmethod
    def _arg(value: Any, secrets: Sequence[str]) -> Any:
        if not secrets or isinstance(value, (int, float, bool)) or value is None:
            return value
        text = value if isinstance(value, str) else str(value)
        scrubbed = redact(text, secrets)
        return value if scrubbed == text else scrubbed


# Log redaction is process-wide (logging is); it consults every installed registry that is alive.
_registries: "weakref.WeakSet[SecretRegistry]" = weakref.WeakSet()
_install_lock = threading.Lock()
_factory_installed = False


def install_log_redaction(registry: SecretRegistry) -> None:
    """Scrub ``registry``'s secrets from every log record this process creates, from any logger.

    It wraps the log-record factory (so records are scrubbed when created, whatever handler or
    logger — uvicorn, gradio, httpx, openai — later prints them) and is safe to call more than once.
    """
    global _factory_installed
    with _install_lock:
        _registries.add(registry)
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            for reg in list(_registries):
                SecretFilter(reg).filter(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True
    _wrap_std_streams()


class RedactingStream:
    """A text stream wrapper that scrubs every installed registry's secrets from what is written.

    Logging is covered by the record factory; this covers text written straight to ``sys.stderr`` or
    ``sys.stdout`` — e.g. Gradio printing the traceback of a failed event, whose chained exceptions
    can quote a key (llm-katan's 401 body names both the key it got and the one it expected). Text is
    held until a newline (or :attr:`MAX_PENDING` characters, or :meth:`flush`), so a key is never split
    across two writes and escapes the scrub.
    """

    MAX_PENDING = 8192

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._pending = ""
        self._lock = threading.RLock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            if "\n" in self._pending:
                head, sep, self._pending = self._pending.rpartition("\n")
                self._emit(head + sep)
            elif len(self._pending) > self.MAX_PENDING:
                self._emit(self._pending)
                self._pending = ""
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._emit(self._pending)
                self._pending = ""
            self._stream.flush()

    def _emit(self, text: str) -> None:
        for reg in list(_registries):
            text = reg.redact(text)
        self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer...
        return getattr(self._stream, name)


def _wrap_std_streams() -> None:
    """Wrap the process's own stdout/stderr in :class:`RedactingStream` (once). Streams that someone
    else replaced (a test runner's capture) are left alone: they are not the process's output."""
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if current is not None and current is getattr(sys, f"__{name}__"):
            setattr(sys, name, RedactingStream(current))

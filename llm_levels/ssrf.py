"""Base URLs a session types are checked before any request goes there (SSRF protection).

- :func:`check_base_url` vets a base URL that a *session* typed (never the operator's configured
  endpoints, which are trusted): http(s) only, no ``user:pass@``, and the host must resolve only to
  public addresses unless ``ALLOW_PRIVATE_BASE_URL`` is set; link-local addresses (169.254.169.254, where a
  cloud machine serves its metadata and credentials) are refused even then.
- :class:`GuardedTransport` (from :func:`guarded_transport_class`) repeats the address check at connect
  time, for every request and every redirect hop; :func:`guarded_http_client` is the ``httpx2.Client``
  built on it, for the ``openai`` client.

See SECURITY.md for what this protects and what it does not.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .core import BackendError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

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
        return "a link-local address (169.254.0.0/16 or fe80::/10, where cloud metadata lives)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private-network address"
    if ip.is_reserved or not ip.is_global:
        return "a non-public address"
    return None


def always_blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is refused even where private addresses are allowed: a link-local address, where a
    cloud machine serves its metadata and credentials (169.254.169.254), is never an LLM server."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is not None:
            return always_blocked(inner)
    return ip.is_link_local


def blocked_message(host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, reason: str) -> str:
    """Why a request to ``host`` (at ``ip``) is blocked, and what to do instead, in one line."""
    shown = host if host == str(ip) else f"{host} ({ip})"
    if always_blocked(ip):
        return (
            f"The base URL is blocked: {shown} is {reason}. Cloud machines answer there with their own "
            "metadata and credentials, so this app never sends requests to link-local addresses "
            "(ALLOW_PRIVATE_BASE_URL does not change that). Use the address of the server that runs the model."
        )
    return (
        f"The base URL is blocked: {shown} is {reason}. On this deployment a base URL you type must be a "
        "public server, so that visitors cannot reach the machines around it (the operator can allow "
        "private addresses with ALLOW_PRIVATE_BASE_URL=true)."
    )


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
        raise BackendError(
            f"Looking up the host {host!r} took longer than {timeout_s:g} s: check the base URL.",
            kind="timeout",
            status=400,
            retryable=True,
        )
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
    for raw in ips:
        try:
            ip = ipaddress.ip_address(raw.split("%", 1)[0])
        except ValueError:
            if allow_private:
                continue
            raise _bad(f"The host {host!r} resolved to an address this app cannot check ({raw!r}).", 403) from None
        reason = blocked_reason(ip)
        if reason and (not allow_private or always_blocked(ip)):
            raise _bad(blocked_message(host, ip, reason), 403)
    return ips


def check_base_url(url: str, settings: Settings, *, resolver: Resolver | None = None) -> str:
    """Validate a base URL that a session supplied and return it normalized (no trailing slash).

    Refuses (:class:`BackendError` ``bad_request``, one line): a scheme other than http/https, a
    ``user:password@`` part (credentials belong in the key field, where they are kept secret), a
    missing host, a ``?query`` or ``#fragment`` (a base URL has none; keys put there would end up in
    snippets and logs), more than :data:`MAX_URL_CHARS` characters, and — unless
    ``settings.allow_private_base_url`` — any host that resolves to a loopback, private (RFC 1918,
    IPv6 unique-local), unspecified, multicast or otherwise non-public address. A link-local address
    (169.254.0.0/16, fe80::/10: the cloud metadata service) is refused whatever the settings.

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
        raise _bad(
            "The base URL must not contain a user name or password (user:pass@): "
            "put the key in the API-key field instead."
        )
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

            def __init__(
                self, *, allow_private: bool = False, resolver: Resolver | None = None, **transport_kwargs: Any
            ) -> None:
                transport_kwargs.setdefault("trust_env", False)
                self._inner = httpx2.HTTPTransport(**transport_kwargs)
                self._allow_private = allow_private
                self._resolver = resolver

            def handle_request(self, request: httpx2.Request) -> httpx2.Response:
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


def guarded_http_client(settings: Settings, *, timeout_s: float | None = None) -> Any:
    """An ``httpx2.Client`` for the ``openai`` client (``http_client=``) that only reaches public
    addresses (unless ``ALLOW_PRIVATE_BASE_URL``); use it for session-supplied base URLs."""
    import httpx2

    transport = guarded_transport_class()(allow_private=settings.allow_private_base_url)
    timeout = httpx2.Timeout(timeout_s if timeout_s is not None else settings.request_timeout_s, connect=10.0)
    # follow_redirects as the openai client's default; every hop goes through the guard.
    return httpx2.Client(transport=transport, timeout=timeout, follow_redirects=True, trust_env=False)

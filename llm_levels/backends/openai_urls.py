"""Base URLs of OpenAI-compatible servers: whether one is usable, and how to show it without secrets.

A base URL may carry ``user:password@``, a ``?query`` or a ``#fragment``, any of which can hold a
key, so what the app shows (names, errors, ``describe()``) is built from scheme, host, port and path
only.
"""

from __future__ import annotations

import re
import urllib.parse

OPENAI_BASE_URL = "https://api.openai.com/v1"


def is_bad_url(url: str) -> bool:
    """Whether ``url`` cannot be a base URL (not http(s), no host, a bad port, spaces)."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return True
    return parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(ch.isspace() for ch in url)


def bad_url_message(url: str | None) -> str:
    """One line saying how a base URL should look (quoting ``url`` without its secrets)."""
    shown = display_url(url or "")[:80]
    return (
        f"The base URL {shown!r} is not a valid http(s) URL: write it like http://localhost:8000/v1 "
        "(scheme, host, optional port and path)."
    )


def host_of(url: str) -> str:
    """``host[:port]`` of ``url``, without any user:password part (safe to show)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "the server"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else (host or "the server")


def display_url(url: str) -> str:
    """The URL without user:password, query or fragment (any of which may hold a secret)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url.split("?")[0].split("#")[0])
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_openai(base_url: str | None) -> bool:
    """Whether requests to ``base_url`` go to OpenAI's own API (``None`` means OpenAI)."""
    if base_url is None:
        return True
    try:
        return (urllib.parse.urlsplit(base_url).hostname or "").lower() == "api.openai.com"
    except ValueError:
        return False

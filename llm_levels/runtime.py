"""What the running app shares between sessions, and how a session's backend choice becomes a Backend.

Shared (read-only for sessions): the settings, the local model manager (a model is loaded once and
used by everyone), and the line for the local model (:class:`~llm_levels.slots.LocalSlots`): at most
``LOCAL_CONCURRENCY`` local generations at once, the others wait first come first served and can
read their place. Nothing here holds a user's conversation or key: those live in each session's
``gr.State``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .config import HostedEndpoint, Settings
from .core import Backend, BackendError, GenParams, Message, check_conversation
from .engine import ENGINES, LLAMA_CPP, TRANSFORMERS
from .rate_limit import RateLimiter
from .redaction import SecretRegistry
from .slots import LocalSlots, SlotTicket
from .ssrf import check_base_url, guarded_http_client

#: The local model on the default engine; ``local:<engine>`` names an engine explicitly.
LOCAL = "local"
LOCAL_PREFIX = "local:"
#: A saved fine-tuned adapter on its base model (transformers engine): ``local:adapter:<folder name>``. It is a
#: ``local:`` id, so every face treats it as the local model (its line, its wait notes, Compare's defaults).
ADAPTER_OPTION_PREFIX = LOCAL_PREFIX + "adapter:"
APP_ENDPOINT = "app-endpoint"
HOSTED_PREFIX = "hosted:"
SESSION_HOSTED = "hosted:session"


@dataclass(frozen=True)
class BackendOption:
    """One entry of a backend picker: a stable id and the label a user sees."""

    id: str
    label: str


class StreamPacer:
    """How often a streaming answer updates the page: every ``base`` seconds when it streams alone, less
    often when several stream at once, so the whole app sends about ``1 / base`` screen updates a second.

    Every update costs CPU in the server (Gradio diffs and sends the conversation) and in each client,
    on the same cores that decode. Measured with 4 users streaming the local model through Gradio on 2
    cores: 49-71 tok/s in all at 20 updates/s per user, 84 tok/s at 5 (``python -m llm_levels bench``).
    One user alone still gets 20 updates a second; ``cap`` bounds the wait between two updates.
    """

    def __init__(self, base: float = 0.05, cap: float = 0.5) -> None:
        self.base = base
        self.cap = cap
        self._streaming = 0
        self._lock = threading.Lock()

    @contextmanager
    def streaming(self) -> Iterator[PacedStream]:
        """Count the calling handler as streaming for the duration of the block; the block gets its
        :class:`PacedStream`, which says when its next screen update is due."""
        with self._lock:
            self._streaming += 1
        try:
            yield PacedStream(self)
        finally:
            with self._lock:
                self._streaming -= 1

    @property
    def active(self) -> int:
        """How many answers are streaming now."""
        return self._streaming

    def interval(self) -> float:
        """Seconds between two updates of one streaming answer, now."""
        return min(self.cap, self.base * max(1, self._streaming))


class PacedStream:
    """The screen-update clock of one streaming answer (from :meth:`StreamPacer.streaming`)."""

    def __init__(self, pacer: StreamPacer) -> None:
        self._pacer = pacer
        self._last = 0.0  # the first update is always due

    def due(self) -> bool:
        """True when the answer may update the screen now (then the clock restarts)."""
        now = time.perf_counter()
        if now - self._last >= self._pacer.interval():
            self._last = now
            return True
        return False


class AppRuntime:
    """The app's shared services: settings, the local model manager, the local generation slots."""

    def __init__(self, settings: Settings) -> None:
        from .models import ModelManager  # heavy imports (torch) only when an app is built

        self.settings = settings
        self.models = ModelManager(settings)
        # One FIFO admission line in front of each engine, for every tab and /v1 together: at most that
        # many generations at once, the others wait and can read their place (turns/opener.py).
        self.lines: dict[str, LocalSlots] = {
            LLAMA_CPP: LocalSlots(settings.local_concurrency),
            TRANSFORMERS: LocalSlots(settings.transformers_concurrency),
        }
        # Paces the screen updates of every streaming answer (all tabs): see StreamPacer.
        self.pacer = StreamPacer()
        # A random per-process key the app sends to its own /v1 endpoint when LOCAL_API_KEY is unset:
        # on a non-loopback bind /v1 is then closed to everyone else but still open to the app itself
        # (server.py accepts it). It never leaves this process.
        self.internal_api_key = secrets.token_urlsafe(32)
        # Per-session request limit (REQUESTS_PER_MINUTE) and the secrets scrubbed from logs.
        self.rate_limiter = RateLimiter(settings.requests_per_minute)
        self.secrets = SecretRegistry.for_settings(settings)
        self.secrets.add(self.internal_api_key)

    def start(self) -> None:
        """Begin loading the default local model on the default engine in the background (never at import)."""
        if self.settings.preload_model:
            self.models.start_preload()

    def planned_model_name(self) -> str:
        """The default local model's display name before it is loaded (no network, no loading)."""
        try:
            from .models import resolve

            return resolve(self.settings.local_model, self.settings).display_name
        except Exception:  # noqa: BLE001 - a bad LOCAL_MODEL: the status shows the load error soon enough
            return self.settings.local_model

    @property
    def local_slots(self) -> LocalSlots:
        """The line in front of the default engine."""
        return self.lines[self.settings.local_engine]

    def line(self, engine: str | None = None) -> LocalSlots:
        """The admission line in front of ``engine`` (default: the default engine)."""
        return self.lines[engine or self.settings.local_engine]

    def engine_of(self, option_id: str) -> str | None:
        """The engine a picker id generates with locally (``local``, ``local:<engine>``, an adapter's
        ``local:adapter:<name>``: transformers), else None."""
        if option_id.startswith(ADAPTER_OPTION_PREFIX):
            return TRANSFORMERS
        if option_id == LOCAL:
            return self.settings.local_engine
        if option_id.startswith(LOCAL_PREFIX) and option_id[len(LOCAL_PREFIX) :] in ENGINES:
            return option_id[len(LOCAL_PREFIX) :]
        return None

    def spec_of(self, option_id: str) -> str | None:
        """The local model spec a picker id stands for when it is not ``LOCAL_MODEL``: ``adapter:<name>`` for
        an adapter's option, else None."""
        if option_id.startswith(ADAPTER_OPTION_PREFIX):
            from .engine.resolve import ADAPTER_PREFIX

            return ADAPTER_PREFIX + option_id[len(ADAPTER_OPTION_PREFIX) :]
        return None

    def adapter_options(self) -> list[BackendOption]:
        """One option per saved fine-tuned adapter (read from disk now, newest first)."""
        from .engine.manager import adapter_display_name
        from .finetune.adapters import adapters_root, list_adapters

        return [
            BackendOption(ADAPTER_OPTION_PREFIX + a.slug, f"{adapter_display_name(a.name, a.base_name)} (transformers)")
            for a in list_adapters(adapters_root(self.settings))
        ]

    def local_option(self, engine: str | None = None) -> str:
        """The picker id of the local model on ``engine``."""
        engine = engine or self.settings.local_engine
        return LOCAL if engine == self.settings.local_engine else LOCAL_PREFIX + engine

    @property
    def app_endpoint_url(self) -> str:
        """The app's own OpenAI-compatible endpoint, as a client on this machine reaches it."""
        host = self.settings.server_name
        if host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address (e.g. ::1) needs brackets in a URL
        return f"http://{host}:{self.settings.server_port}/v1"

    # ------------------------------------------------------------------ per-request guards
    def check_request(
        self,
        session_id: str | None,
        messages: Sequence[Message],
        params: GenParams | Mapping[str, Any] | None = None,
    ) -> GenParams:
        """Apply the per-request caps before a generation and return the params to use.

        Call it at the edge (a UI event with ``request.session_hash``, an API route) before
        streaming. Raises :class:`BackendError` with a message that says what to change:

        - the conversation longer than ``MAX_PROMPT_CHARS`` (all messages together) is refused,
          with its size and the limit; the user's text is never cut silently;
        - ``max_new_tokens`` above ``MAX_NEW_TOKENS_CAP`` is refused the same way (a UI should set
          its slider's maximum to the cap, so only API callers meet this);
        - more than ``REQUESTS_PER_MINUTE`` requests from ``session_id`` in the last minute is
          refused with kind ``rate_limit`` (429) and when to try again. Only valid requests count.

        ``params`` may be a :class:`GenParams`, a dict of untrusted values, or ``None`` (defaults,
        with ``max_new_tokens`` lowered to the cap when the default is above it).
        """
        cap = self.settings.max_new_tokens_cap
        if params is None:
            params = GenParams()
            if params.max_new_tokens > cap:
                params = params.with_(max_new_tokens=cap)
        elif not isinstance(params, GenParams):
            params = GenParams.from_dict(params)
        check_conversation(messages, max_chars=self.settings.max_prompt_chars)
        if params.max_new_tokens > cap:
            raise BackendError(
                f"max_new_tokens is {params.max_new_tokens:,}, but this app allows at most {cap:,} "
                "new tokens per answer (MAX_NEW_TOKENS_CAP): lower it.",
                kind="bad_request",
                status=400,
            )
        self.rate_limiter.check(session_id)
        return params

    def remember_secret(self, value: str | None) -> None:
        """Register a key a session typed, so it is scrubbed from every log line."""
        self.secrets.add(value)

    # ------------------------------------------------------------------ choices
    def hosted_endpoints(self) -> tuple[HostedEndpoint, ...]:
        return self.settings.endpoints

    def backend_options(self) -> list[BackendOption]:
        """Every backend a session can pick: the local model, the saved fine-tuned adapters, the configured
        endpoints, the app's own. Adapters are read when this is called: a picker built at page load lists
        the adapters saved by then."""
        default = self.settings.local_engine
        opts = [BackendOption(LOCAL, f"Local model (in this app · {default})")]
        for engine in ENGINES:
            if engine != default:
                opts.append(BackendOption(LOCAL_PREFIX + engine, f"Local model (in this app · {engine})"))
        opts += self.adapter_options()
        for ep in self.hosted_endpoints():
            opts.append(BackendOption(HOSTED_PREFIX + ep.name, f"Hosted API · {ep.name} ({ep.model})"))
        opts.append(BackendOption(APP_ENDPOINT, "Hosted API · this app's local endpoint (no key)"))
        return opts

    def default_chat_backend(self) -> str:
        """Chat's default: the hosted API when one is configured, else the embedded local model."""
        eps = self.hosted_endpoints()
        return HOSTED_PREFIX + eps[0].name if eps else LOCAL

    # ------------------------------------------------------------------ building
    def local_backend(
        self, spec: str | None = None, *, engine: str | None = None, slots: LocalSlots | SlotTicket | None = None
    ) -> Backend:
        """The local model ``spec`` (default: ``LOCAL_MODEL``) on ``engine`` as a backend, loading it if needed.

        It waits for a generation slot in the engine's line when it streams; ``slots`` may instead be a
        :class:`SlotTicket` the caller took from that line itself (to show the wait; one generation).
        """
        engine = engine or self.settings.local_engine
        # Load (or wait for) the model *before* importing the backend module: importing transformers'
        # generation classes in this thread while another thread is still importing transformers
        # fails ("cannot import name 'LogitsProcessor'": its lazy module is not safe against
        # concurrent first imports).
        loaded = self.models.get(spec, engine=engine)
        line = self.line(engine) if slots is None else slots
        if engine == LLAMA_CPP:
            from .backends.llama_cpp import LlamaCppBackend

            return LlamaCppBackend(loaded, slots=line)
        from .backends.local_hf import LocalBackend

        return LocalBackend(loaded, slots=line)

    def hosted_backend(
        self,
        option_id: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        stream: bool = True,
    ) -> Backend:
        """A hosted backend for a picker id; ``api_key`` is the session's own key, if it typed one."""
        from .backends import make_hosted

        if option_id == APP_ENDPOINT:
            from .backends.openai_api import OpenAIBackend

            return OpenAIBackend(
                model=model or "local",
                api_key=self._local_api_key(),
                base_url=self.app_endpoint_url,
                name="this app's local endpoint",
                timeout_s=self.settings.request_timeout_s,
                max_retries=self.settings.max_retries,
                stream=stream,
            )
        endpoint = None
        if option_id.startswith(HOSTED_PREFIX) and option_id != SESSION_HOSTED:
            name = option_id[len(HOSTED_PREFIX) :]
            endpoint = next((e for e in self.hosted_endpoints() if e.name == name), None)
            if endpoint is None:
                raise BackendError(f"No hosted endpoint named {name!r} is configured.", kind="config", status=400)
        self.remember_secret(api_key)
        http_client = None
        if base_url and self._is_configured_url(base_url):
            base_url = base_url.strip().rstrip("/")  # the operator's own endpoint: trusted
        elif base_url:
            if not self.settings.allow_custom_base_url:
                raise BackendError(
                    "Custom base URLs are turned off on this deployment (ALLOW_CUSTOM_BASE_URL).",
                    kind="config",
                    status=403,
                )
            # A session-typed URL: refuse loopback/private/metadata targets (SSRF), see safety.py;
            # the guarded client checks the address again when it connects (DNS rebinding, redirects).
            base_url = check_base_url(base_url, self.settings)
            # Always through the guard: it allows private addresses only with ALLOW_PRIVATE_BASE_URL and never
            # link-local ones (cloud metadata), however a name resolves at connect time (DNS rebinding).
            http_client = guarded_http_client(self.settings)
        return make_hosted(
            self.settings,
            endpoint,
            api_key=api_key,
            base_url=base_url,
            model=model,
            stream=stream,
            http_client=http_client,
        )

    def backend(self, option_id: str, *, api_key: str | None = None) -> Backend:
        """The backend for a picker id with default settings (Chat and Compare use this)."""
        engine = self.engine_of(option_id)
        if engine is not None:
            return self.local_backend(self.spec_of(option_id), engine=engine)
        return self.hosted_backend(option_id, api_key=api_key)

    def _is_configured_url(self, url: str) -> bool:
        """Whether ``url`` is one the operator configured (env), which needs no SSRF check."""
        norm = url.strip().rstrip("/")
        return any(e.base_url and e.base_url.rstrip("/") == norm for e in self.hosted_endpoints())

    def _local_api_key(self) -> str:
        from .config import secret

        return secret("LOCAL_API_KEY") or self.internal_api_key

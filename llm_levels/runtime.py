"""What the running app shares between sessions, and how a session's backend choice becomes a Backend.

Shared (read-only for sessions): the settings, the local model manager (a model is loaded once and
used by everyone), and a semaphore that limits concurrent local generations. Nothing here holds a
user's conversation or key: those live in each session's ``gr.State``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .config import HostedEndpoint, Settings
from .core import Backend, BackendError

LOCAL = "local"
APP_ENDPOINT = "app-endpoint"
HOSTED_PREFIX = "hosted:"
SESSION_HOSTED = "hosted:session"


@dataclass(frozen=True)
class BackendOption:
    """One entry of a backend picker: a stable id and the label a user sees."""

    id: str
    label: str


class AppRuntime:
    """The app's shared services: settings, the local model manager, the local generation slots."""

    def __init__(self, settings: Settings) -> None:
        from .models import ModelManager  # heavy imports (torch) only when an app is built

        self.settings = settings
        self.models = ModelManager(settings)
        # Limits how many local generations run at once; others wait in Gradio's queue.
        self.local_slots = threading.BoundedSemaphore(settings.local_concurrency)

    def start(self) -> None:
        """Begin loading the default local model in the background (never at import)."""
        if self.settings.preload_model:
            self.models.start_preload()

    @property
    def app_endpoint_url(self) -> str:
        """The app's own OpenAI-compatible endpoint, as a client on this machine reaches it."""
        host = self.settings.server_name
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.settings.server_port}/v1"

    # ------------------------------------------------------------------ choices
    def hosted_endpoints(self) -> tuple[HostedEndpoint, ...]:
        return self.settings.endpoints

    def backend_options(self) -> list[BackendOption]:
        """Every backend a session can pick: the local model, the configured endpoints, the app's own."""
        opts = [BackendOption(LOCAL, "Local model (in this app)")]
        for ep in self.hosted_endpoints():
            opts.append(BackendOption(HOSTED_PREFIX + ep.name, f"Hosted API · {ep.name} ({ep.model})"))
        opts.append(BackendOption(APP_ENDPOINT, "Hosted API · this app's local endpoint (no key)"))
        return opts

    def default_chat_backend(self) -> str:
        """Chat's default: the hosted API when one is configured, else the embedded local model."""
        eps = self.hosted_endpoints()
        return HOSTED_PREFIX + eps[0].name if eps else LOCAL

    # ------------------------------------------------------------------ building
    def local_backend(self, spec: str | None = None) -> Backend:
        from .backends.local_hf import LocalBackend

        return LocalBackend(self.models.get(spec), slots=self.local_slots)

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
            name = option_id[len(HOSTED_PREFIX):]
            endpoint = next((e for e in self.hosted_endpoints() if e.name == name), None)
            if endpoint is None:
                raise BackendError(f"No hosted endpoint named {name!r} is configured.", kind="config", status=400)
        if base_url and not self.settings.allow_custom_base_url:
            raise BackendError(
                "Custom base URLs are turned off on this deployment (ALLOW_CUSTOM_BASE_URL).",
                kind="config", status=403,
            )
        return make_hosted(self.settings, endpoint, api_key=api_key, base_url=base_url, model=model, stream=stream)

    def backend(self, option_id: str, *, api_key: str | None = None) -> Backend:
        """The backend for a picker id with default settings (Chat and Compare use this)."""
        if option_id == LOCAL:
            return self.local_backend()
        return self.hosted_backend(option_id, api_key=api_key)

    @staticmethod
    def _local_api_key() -> str | None:
        from .config import secret

        return secret("LOCAL_API_KEY")

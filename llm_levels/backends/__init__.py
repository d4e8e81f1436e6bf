"""Backends: one adapter interface (``llm_levels.core.Backend``), one small module per provider.

- ``openai_api.OpenAIBackend``: any OpenAI-compatible server through the official ``openai`` client.
- ``llama_cpp.LlamaCppBackend``: a GGUF model running in llama.cpp in this process (the default engine).
- ``local_hf.LocalBackend``: a Hugging Face ``transformers`` model running in this process.

Local backends are built by ``AppRuntime.local_backend`` (on a model the model manager loaded);
:func:`make_hosted` is the one way to build a hosted one from settings. Heavy modules are imported only
when a backend is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..config import HostedEndpoint, Settings
    from .openai_api import OpenAIBackend


def make_hosted(
    settings: Settings,
    endpoint: HostedEndpoint | None = None,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    stream: bool = True,
    http_client: Any = None,
) -> OpenAIBackend:
    """An OpenAI-compatible backend: the endpoint's (or the main OPENAI_*) settings, overridden per session.

    ``api_key`` given by a session (typed into the UI) wins over the environment's. A ``base_url``
    given by a session never receives the operator's key from the environment: a typed URL could be
    anyone's server, so it gets only the key the session itself typed (or none). ``http_client``
    (e.g. ``safety.guarded_http_client``) replaces the HTTP client, for session-supplied base URLs.
    """
    from ..config import secret
    from .openai_api import OpenAIBackend

    # The operator's key goes only to the operator's configured URL, never to a session-typed one.
    use_env_key = base_url is None
    if endpoint is None:
        key = api_key or (secret("OPENAI_API_KEY") if use_env_key else None)
        return OpenAIBackend(
            model=model or settings.openai_model,
            api_key=key,
            base_url=base_url or settings.openai_base_url,
            timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
            stream=stream,
            http_client=http_client,
        )
    return OpenAIBackend(
        model=model or endpoint.model,
        api_key=api_key or (endpoint.api_key() if use_env_key else None),
        base_url=base_url or endpoint.base_url,
        name=endpoint.name,
        timeout_s=settings.request_timeout_s,
        max_retries=settings.max_retries,
        stream=stream,
        http_client=http_client,
    )

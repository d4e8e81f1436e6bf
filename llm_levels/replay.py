"""The Python that replays a conversation at the level it was held: the ``openai`` client for a hosted
endpoint (or this app's own ``/v1``), the local engine's own code (llama.cpp through ``xllamacpp``, or
plain ``transformers``) for the local model. Run from a terminal, it sends the conversation up to its last
answer and prints that answer again (the same one, when the settings were greedy or seeded).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core import BackendError
from .snippets import local_snippet, openai_snippet
from .transcript import Transcript

if TYPE_CHECKING:  # pragma: no cover
    from .runtime import AppRuntime


def replay_script(runtime: AppRuntime, transcript: Transcript) -> str:
    """A runnable script that replays ``transcript`` (see the module docstring); no API key is written."""
    messages = transcript.replay_messages()
    if not messages or messages[-1].role != "user":
        raise BackendError("There is nothing to replay: the conversation has no question yet.", kind="bad_request")
    engine = runtime.engine_of(transcript.backend) if transcript.backend else None
    if transcript.level == "local" or engine is not None:
        backend = runtime.local_backend(runtime.spec_of(transcript.backend), engine=transcript.engine or engine)
        return local_snippet(backend, messages, transcript.params, runtime.settings)
    return _openai_replay(runtime, transcript, messages)


def _openai_replay(runtime: AppRuntime, transcript: Transcript, messages: list[Any]) -> str:
    p = transcript.params
    request: dict[str, Any] = {
        "model": transcript.model,
        "messages": [m.to_dict() for m in messages],
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_new_tokens,
    }
    if p.seed is not None:
        request["seed"] = p.seed
    if p.stop:
        request["stop"] = list(p.stop)
    app = transcript.backend == "app-endpoint" or transcript.base_url == runtime.app_endpoint_url
    base_url = runtime.app_endpoint_url if app else transcript.base_url
    key_env = "OPENAI_API_KEY"
    if not app and transcript.backend.startswith("hosted:"):
        name = transcript.backend.removeprefix("hosted:")
        endpoint = next((e for e in runtime.hosted_endpoints() if e.name == name), None)
        if endpoint is not None:
            base_url = base_url or endpoint.base_url
            key_env = endpoint.key_env or key_env
    return openai_snippet(request, base_url=base_url, key_env=key_env, app_endpoint=app)

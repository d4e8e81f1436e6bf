"""The Hosted API tab's endpoints and "under the hood" panels (no Gradio events here).

- :class:`Endpoints`: the endpoint picker's options, each one's default model, where a request goes
  (:class:`Target`), and the ``openai`` backend for a request (built by the runtime).
- :class:`Panels` / :func:`panels`: the Python snippet and the raw request/response views of a backend's
  last call; :func:`cost_label`: the estimated cost of a turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..core import Backend, BackendError, GenParams, Message, Usage
from ..inspection import request_view, response_view
from ..pricing import PriceTable, format_cost
from ..runtime import APP_ENDPOINT, HOSTED_PREFIX, SESSION_HOSTED, AppRuntime
from ..snippets import openai_snippet
from ..web.openai_models import LOCAL_MODEL_ID

log = logging.getLogger(__name__)

CUSTOM = "custom"
EXAMPLE_MESSAGE = "Say hello in five words."


@dataclass(frozen=True)
class Target:
    """Where a request goes: the picker id, the base URL (None = OpenAI), the key's variable for snippets."""

    option_id: str
    base_url: str | None
    key_env: str | None
    app_endpoint: bool = False


class Endpoints:
    """The endpoints this tab offers: the configured ones, OpenAI with a session key (when nothing is
    configured), this app's own ``/v1``, and a typed base URL (when ``ALLOW_CUSTOM_BASE_URL``)."""

    def __init__(self, runtime: AppRuntime) -> None:
        self.runtime = runtime
        self.configured = {HOSTED_PREFIX + ep.name: ep for ep in runtime.hosted_endpoints()}

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for the picker."""
        # The runtime's labels say "Hosted API · ..." for pickers that mix levels; here every option is hosted.
        choices = [
            (o.label.removeprefix("Hosted API · "), o.id)
            for o in self.runtime.backend_options()
            if o.id in self.configured
        ]
        if not self.configured:
            choices.append(("OpenAI · api.openai.com (with the key you paste below)", SESSION_HOSTED))
        choices.append(("This app's local endpoint (the local model, no key)", APP_ENDPOINT))
        if self.runtime.settings.allow_custom_base_url:
            choices.append(("Custom base URL (any OpenAI-compatible server)", CUSTOM))
        return choices

    @property
    def default_option(self) -> str:
        return next(iter(self.configured), APP_ENDPOINT)

    def default_model(self, option_id: str) -> str:
        if option_id in self.configured:
            return self.configured[option_id].model
        if option_id == APP_ENDPOINT:
            return LOCAL_MODEL_ID
        return self.runtime.settings.openai_model

    def target(self, option_id: str, base_url: str | None) -> Target:
        """Where ``option_id`` sends requests; an unknown id is a BackendError (kind ``bad_request``)."""
        if option_id in self.configured:
            ep = self.configured[option_id]
            return Target(option_id, ep.base_url, ep.key_env)
        if option_id == APP_ENDPOINT:
            return Target(option_id, self.runtime.app_endpoint_url, None, app_endpoint=True)
        if option_id == CUSTOM:
            return Target(option_id, (base_url or "").strip() or None, "OPENAI_API_KEY")
        if option_id == SESSION_HOSTED:
            return Target(option_id, None, "OPENAI_API_KEY")
        raise BackendError(f"Unknown endpoint {option_id!r}: pick one from the list.", kind="bad_request", status=400)

    def open(self, tgt: Target, model_id: str, stream: bool, api_key: str | None) -> Backend:
        """The backend for a request (no network yet; a typed base URL is checked here, see safety.py)."""
        model_id = (model_id or "").strip() or self.default_model(tgt.option_id)
        hosted = self.runtime.hosted_backend
        if tgt.option_id == CUSTOM:
            # The operator's own OPENAI_API_KEY must never go to a server a visitor typed.
            from ..backends.openai_api import PLACEHOLDER_KEY

            return hosted(
                SESSION_HOSTED, api_key=api_key or PLACEHOLDER_KEY, base_url=tgt.base_url, model=model_id, stream=stream
            )
        if tgt.app_endpoint:
            return hosted(APP_ENDPOINT, model=model_id, stream=stream)
        return hosted(tgt.option_id, api_key=api_key, model=model_id, stream=stream)

    def first_snippet(self, params: GenParams) -> str:
        """The snippet shown before anything was sent: an example message to the default endpoint."""
        option_id = self.default_option
        tgt = self.target(option_id, None)
        try:
            backend = self.runtime.hosted_backend(option_id, model=self.default_model(option_id), stream=True)
            request = backend.build_request([Message("user", EXAMPLE_MESSAGE)], params)  # no network here
        except BackendError as e:  # a misconfigured endpoint: the tab still opens, the send explains
            log.warning("no example snippet for %s: %s", option_id, e)
            return ""
        return snippet_for(tgt, request)


def snippet_for(tgt: Target, request: dict[str, Any]) -> str:
    """The runnable Python for ``request`` sent to ``tgt``."""
    return openai_snippet(request, base_url=tgt.base_url, key_env=tgt.key_env, app_endpoint=tgt.app_endpoint)


@dataclass(frozen=True)
class Panels:
    """What the under-the-hood panels show for a backend's last call (None: leave that panel as it is)."""

    code: str | None
    request: Any
    response: Any


def panels(backend: Any, tgt: Target, redact: Any) -> Panels:
    """The snippet and the raw request/response views of ``backend``'s last call, with secrets masked."""
    req = getattr(backend, "last_request", None)
    if not req:
        return Panels(None, None, None)
    return Panels(
        snippet_for(tgt, req), request_view(req, redact), response_view(getattr(backend, "last_response", None), redact)
    )


def cost_label(prices: PriceTable, backend: Any, tgt: Target, metrics: Any) -> str:
    """The estimated cost of a turn: free on the app's own endpoint, else the price table's estimate."""
    if tgt.app_endpoint:
        return format_cost(0.0, local=True)
    known = metrics.input_tokens is not None and metrics.output_tokens is not None
    usage = Usage(metrics.input_tokens, metrics.output_tokens) if known else None
    cost = prices.estimate(backend.model, usage)
    label = format_cost(cost)
    if cost is not None and not getattr(backend, "is_openai", True) and prices.is_list_price(backend.model):
        label += " (OpenAI's list price; this server may charge differently)"
    return label

"""The Hosted API tab's endpoints and "under the hood" panels (no Gradio events here).

- :class:`Form`: a send's request settings, as typed.
- :class:`Endpoints`: the endpoint picker's options, each one's default model, where a request goes
  (:class:`Target`), and the ``openai`` backend for a request (built by the runtime).
- :class:`Panels` / :func:`panels`: the Python snippet and the raw request/response views of a backend's
  last call (:func:`response_text`: the response as text, one line per streamed chunk); :func:`cost_label`:
  the estimated cost of a turn.
- :func:`sent_messages`: what the model is sent: the conversation on screen less its notes and less every
  message that was never answered (a failed turn stays on screen with its note; Retry sends it again), so it
  always gets alternating turns;
  :func:`answer_messages`: how a finished turn ends on screen (its answer, and a tag when it was stopped
  or cut at the length limit); :class:`SessionStops`: the Stop switch of each session's running turns.

A key pasted in the tab lives only in the session's ``api_key`` ``gr.State``, server-side: it is never sent to
the page, which only says whether a key is set.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import history as H
from ..core import Backend, BackendError, GenParams, Message, Usage
from ..inspection import request_view, response_view
from ..pricing import PriceTable, format_cost
from ..runtime import APP_ENDPOINT, HOSTED_PREFIX, SESSION_HOSTED, AppRuntime
from ..snippets import openai_snippet
from ..text_clean import clean_text
from ..web.openai_models import LOCAL_MODEL_ID, model_ids
from .shared import form_params

log = logging.getLogger(__name__)

CUSTOM = "custom"
EXAMPLE_MESSAGE = "Say hello in five words."


class Form(NamedTuple):
    """The request settings of a send or retry, in their API order."""

    option_id: str
    url: str
    model_id: str
    system: str
    temperature: Any
    top_p: Any
    max_new: Any
    seed: Any
    stream: bool
    #: Per-token probabilities with this many alternatives (None: not asked for; see token_panel.py).
    top_logprobs: int | None = None

    def params(self) -> GenParams:
        """The settings as GenParams (an empty seed means random); a bad value is a gr.Error."""
        raw = {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new, "seed": self.seed}
        return form_params({**raw, "top_logprobs": self.top_logprobs})

    def cleaned(self) -> Form:
        """The form with its typed text made valid (:func:`~llm_levels.text_clean.clean_text`)."""
        return self._replace(
            url=clean_text(self.url or ""),
            model_id=clean_text(self.model_id or "").strip(),
            system=clean_text(self.system or ""),
        )


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
        """The model an endpoint starts with: its configured one, ``local`` on this app's endpoint, none for
        a typed base URL (that server's models are unknown until they are fetched), else ``OPENAI_MODEL``."""
        if option_id in self.configured:
            return self.configured[option_id].model
        if option_id == APP_ENDPOINT:
            return LOCAL_MODEL_ID
        if option_id == CUSTOM:
            return ""
        return self.runtime.settings.openai_model

    def models(self, option_id: str) -> list[str]:
        """The model ids to offer for an endpoint without asking it: all of this app's own, else its default."""
        if option_id == APP_ENDPOINT:
            return model_ids(self.runtime)
        default = self.default_model(option_id)
        return [default] if default else []

    def defaults(self) -> dict[str, str]:
        """Each option's default model (for the page, which switches the model box the moment the endpoint
        changes: a message sent right after the switch must not go out with the previous endpoint's model)."""
        return {option_id: self.default_model(option_id) for _, option_id in self.choices()}

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


def response_text(view: Any) -> str:
    """A response view (see :func:`~llm_levels.inspection.response_view`) as text for the Response panel:
    one JSON object, indented, or a stream's chunks one per line (each chunk whole, its delta's text in it)."""
    if view is None:
        return ""
    if isinstance(view, list):
        return "\n".join(json.dumps(chunk, ensure_ascii=False) for chunk in view)
    return json.dumps(view, ensure_ascii=False, indent=2)


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
    shown = response_view(getattr(backend, "last_response", None), redact)
    return Panels(snippet_for(tgt, req), request_view(req, redact), response_text(shown))


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


# ------------------------------------------------------------------------------------ conversation
def sent_messages(hist: Sequence[Any], system: str | None) -> list[Message]:
    """What the model is sent for ``hist``: :func:`~llm_levels.history.to_messages`, less every user message
    that was never answered (its turn failed or was stopped before any text came; it stays on screen with
    its note). The model then gets a valid alternating conversation, and the message the user typed next is
    the one it answers (Retry sends a failed message again)."""
    msgs = H.to_messages(hist, system=system)
    return [
        m for i, m in enumerate(msgs) if not (m.role == "user" and i + 1 < len(msgs) and msgs[i + 1].role == "user")
    ]


#: The note of a turn stopped before any text of its answer came.
STOPPED_EARLY = "You pressed Stop before the answer began."


def answer_messages(text: str, finish_reason: str | None, stopped: bool) -> list[dict[str, Any]]:
    """How a turn that ended ends on screen: its answer, tagged when Stop or the length limit cut it."""
    if stopped:
        if not text:
            return [H.note(STOPPED_EARLY, title=H.STOPPED_TITLE, log="stopped")]
        return [H.assistant(text), H.ending_note("stopped")]
    shown = H.answered([], text)
    if finish_reason == "length":
        shown.append(H.ending_note("length"))
    return shown


@dataclass
class SessionStops:
    """The Stop switch of each session's running turns: a turn registers its cancel event while it runs,
    and Stop sets them, so the turn ends by itself (its last update says what was kept, and tags it)."""

    _running: dict[str | None, set[threading.Event]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def running(self, session: str | None, cancel: threading.Event) -> Iterator[threading.Event]:
        """Register ``cancel`` as one of ``session``'s running turns for the duration of the block."""
        with self._lock:
            self._running.setdefault(session, set()).add(cancel)
        try:
            yield cancel
        finally:
            with self._lock:
                events = self._running.get(session, set())
                events.discard(cancel)
                if not events:
                    self._running.pop(session, None)

    def stop(self, session: str | None) -> int:
        """Stop every running turn of ``session``; returns how many there were."""
        with self._lock:
            events = list(self._running.get(session, ()))
        for event in events:
            event.set()
        return len(events)

"""The body of ``POST /v1/chat/completions`` as a pydantic model, checked against what the local model supports.

Parameters: ``temperature`` (default 1, as OpenAI), ``top_p``, ``max_tokens`` / ``max_completion_tokens``
(default and upper bound: ``MAX_NEW_TOKENS_CAP``), ``seed``, ``stop`` (a string or up to 4), ``n`` (1 to
:data:`MAX_CHOICES` answers, side by side, streamed or not; with a seed, answer i uses seed + i),
the extensions ``top_k`` and ``repetition_penalty`` (as vLLM accepts them), and ``logprobs`` with
``top_logprobs`` (0-20). Ranges come from :data:`~llm_levels.core.PARAM_SPECS`, as for every other face.
Messages carry text: a string or text content parts; ``developer`` is OpenAI's newer name for ``system``.

Harmless OpenAI fields (:data:`_IGNORED`: ``user``, ``metadata``...) are accepted and ignored; fields that
would change the answer and are not supported here (:data:`_OFF_VALUES`: ``tools``, penalties...) are
accepted only at their "off" value and refused otherwise, saying why (:data:`_WHY_OFF`); names OpenAI does
not know are refused ("Unrecognized request argument supplied: ..."). Every refusal is a pydantic error
that :meth:`~.openai_errors.ApiError.from_validation` turns into one 400 naming the parameter.

Hostile bodies: nesting deeper than :data:`MAX_JSON_DEPTH` is refused first, then every string is made
valid (a lone surrogate becomes U+FFFD, NUL goes); more than ``MAX_MESSAGES`` messages are refused before
any one is validated, and stop strings longer than :data:`~llm_levels.turns.run.MAX_STOP_CHARS` are refused.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.types import AllowInfNan, Strict

from ..core import PARAM_SPECS, ROLES, BackendError, GenParams, Message, check_conversation, check_message_count
from ..text_clean import clean_value
from ..turns.run import MAX_STOP_CHARS
from .openai_errors import ApiError, refused

#: OpenAI's default sampling temperature (used when a request gives none).
DEFAULT_TEMPERATURE = 1.0
#: Most answers one request may ask for (``n``): each is a turn of its own on the local engine.
MAX_CHOICES = 8
#: Deepest nesting of objects and lists a body may have (a real request needs about five levels).
MAX_JSON_DEPTH = 32

# OpenAI chat-completions fields that do not change the answer here: accepted and ignored.
_IGNORED = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls",
        "prompt_cache_key",
        "safety_identifier",
        "prediction",
    }
)
# OpenAI fields accepted only at their "off" value; anything else would silently change the answer.
_OFF_VALUES: dict[str, tuple[Any, ...]] = {
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "web_search_options": (None,),
    "reasoning_effort": (None,),
    "verbosity": (None,),
}
_WHY_OFF = {
    "presence_penalty": "penalties are not supported by the local model (try the repetition_penalty extension)",
    "frequency_penalty": "penalties are not supported by the local model (try the repetition_penalty extension)",
    "logit_bias": "logit_bias is not supported by this server",
    "tools": "tool calling is not supported by the local model",
    "tool_choice": "tool calling is not supported by the local model",
    "functions": "function calling is not supported by the local model",
    "function_call": "function calling is not supported by the local model",
    "modalities": "the local model produces text only",
    "audio": "the local model produces text only",
    "web_search_options": "web search is not available here",
    "reasoning_effort": "the local model is not a reasoning model",
    "verbosity": "verbosity is not supported by the local model",
}


def _in_range(name: str) -> AfterValidator:
    """The range :data:`PARAM_SPECS` gives ``name``, said the way the other faces say it."""
    spec = PARAM_SPECS[name]

    def check(value: Any) -> Any:
        if value is not None and not spec.minimum <= value <= spec.maximum:
            raise refused(
                f"{name} must be between {_fmt(spec.minimum)} and {_fmt(spec.maximum)} (got {_short(_fmt(value))})."
            )
        return value

    return AfterValidator(check)


def _fmt(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _short(text: str, limit: int = 40) -> str:
    """A value a client sent, cut short for a message (a number may have thousands of digits)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


_Float = Annotated[float, Strict(), AllowInfNan(False)]


class StreamOptions(BaseModel):
    """``stream_options``: only ``include_usage`` matters here (a last chunk with the usage)."""

    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool | None = None


class ChatMessage(BaseModel):
    """One message as OpenAI sends it: a role and text (a string, or text content parts)."""

    model_config = ConfigDict(extra="allow")  # "name" and the like change nothing here
    role: StrictStr
    content: Any = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: Any) -> str:
        if content is None or isinstance(content, str):
            return content or ""
        if not isinstance(content, list):
            raise refused("content must be text or a list of text parts.")
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and not isinstance(part.get("text"), str):
                raise refused("a text content part needs its 'text' as a string.")
            if kind != "text":
                raise refused(
                    f"only text content parts are supported (got {_short(repr(kind))}); the local model reads text only.",
                    code="unsupported_content",
                )
        return "".join(part["text"] for part in content)

    @model_validator(mode="after")
    def _known_role(self) -> ChatMessage:
        extra = self.model_extra or {}
        if self.role in ("tool", "function") or extra.get("tool_calls") or extra.get("function_call"):
            raise refused(
                "tool messages are not supported (the local model has no tools).", code="unsupported_parameter"
            )
        if self.role != "developer" and self.role not in ROLES:
            raise refused(
                f"Unknown message role {self.role[:40]!r}: use one of {', '.join(ROLES)} (or developer).",
                param="messages",
            )
        return self

    def to_message(self) -> Message:
        return Message("system" if self.role == "developer" else self.role, self.content)


class ChatCompletionRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body. Validate it with :func:`parse_request` (or ``model_validate``
    with the context ``{"max_new_tokens_cap", "max_prompt_chars"}``), then read :attr:`conversation` and
    :attr:`params`, built once from it."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(min_length=1)
    messages: list[ChatMessage]
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[_Float | None, _in_range("temperature")] = None
    top_p: Annotated[_Float | None, _in_range("top_p")] = None
    top_k: Annotated[StrictInt | None, _in_range("top_k")] = None
    repetition_penalty: Annotated[_Float | None, _in_range("repetition_penalty")] = None
    seed: Annotated[StrictInt | None, _in_range("seed")] = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    stop: Any = None
    n: Any = None  # checked by hand: its refusal quotes the value (NaN included)
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt | None, _in_range("top_logprobs")] = None
    response_format: Any = None

    _conversation: list[Message] = PrivateAttr(default_factory=list)
    _params: GenParams = PrivateAttr(default_factory=GenParams)

    @property
    def conversation(self) -> list[Message]:
        """The messages as the turn service takes them."""
        return self._conversation

    @property
    def params(self) -> GenParams:
        """The generation settings (defaults filled in: OpenAI's temperature, the server's token cap)."""
        return self._params

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored_and_off(cls, data: Any) -> Any:
        """Ignored fields go; "off" fields go when off and are refused otherwise (unknown names first)."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if k not in _IGNORED}
        if all(k in cls.model_fields or k in _OFF_VALUES for k in data):
            for name, allowed in _OFF_VALUES.items():
                if name in data and not _is_off(data[name], allowed):
                    raise refused(
                        f"{name}={json.dumps(data[name])[:60]} is not supported: {_WHY_OFF[name]}.",
                        param=name,
                        code="unsupported_parameter",
                    )
        return {k: v for k, v in data.items() if k not in _OFF_VALUES}

    @field_validator("messages", mode="before")
    @classmethod
    def _a_list(cls, messages: Any, info: ValidationInfo) -> Any:
        if not isinstance(messages, list) or not messages:
            raise refused("'messages' must be a non-empty list of {\"role\", \"content\"} objects.")
        try:  # before validating each message: their number is what costs
            check_message_count(len(messages), (info.context or {}).get("max_messages"))
        except BackendError as e:
            raise refused(e.message) from None
        return messages

    @field_validator("n")
    @classmethod
    def _choices(cls, n: Any) -> Any:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES):
            raise refused(f"n={json.dumps(n)[:20]} is not supported: n must be a whole number from 1 to {MAX_CHOICES}.")
        return n

    @property
    def choices(self) -> int:
        """How many answers to return (``n``, default 1)."""
        return self.n or 1

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: Any) -> tuple[str, ...]:
        if stop is None or stop == "":
            return ()
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise refused("stop must be a string or a list of non-empty strings.")
        if len(stop) > 4:
            raise refused(f"stop has {len(stop)} strings: at most 4 are allowed.")
        if any(len(s) > MAX_STOP_CHARS for s in stop):
            raise refused(f"stop strings may have at most {MAX_STOP_CHARS} characters each.")
        return tuple(stop)

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, rf: Any) -> Any:
        if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
            raise refused(
                "response_format is not supported: the local model cannot be constrained to JSON; "
                "leave it out (or use {\"type\": \"text\"}).",
                code="unsupported_parameter",
            )
        return rf

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _at_least_one(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value < 1:
            raise refused(f"{info.field_name} must be a whole number of at least 1.")
        cap = (info.context or {}).get("max_new_tokens_cap")
        if value is not None and cap is not None and value > cap:
            raise refused(
                f"{info.field_name}={_short(str(value))} is more than this server allows: at most {cap} "
                "(MAX_NEW_TOKENS_CAP). Ask for fewer tokens."
            )
        return value

    @model_validator(mode="after")
    def _build(self, info: ValidationInfo) -> ChatCompletionRequest:
        """Check what needs several fields or the server's limits, then build the conversation and params."""
        context = info.context or {}
        if self.max_tokens is not None and self.max_completion_tokens not in (None, self.max_tokens):
            raise refused("max_tokens and max_completion_tokens disagree: send only one.", param="max_tokens")
        if self.top_logprobs is not None and not self.logprobs:
            raise refused("top_logprobs needs logprobs set to true.", param="top_logprobs")
        self._conversation = [m.to_message() for m in self.messages]
        try:
            check_conversation(self._conversation, max_chars=context.get("max_prompt_chars"))
        except BackendError as e:
            raise refused(e.message, param="messages") from None
        cap = context.get("max_new_tokens_cap", PARAM_SPECS["max_new_tokens"].default)
        values = {name: getattr(self, name) for name in ("top_p", "top_k", "repetition_penalty", "seed")}
        try:
            self._params = GenParams(
                max_new_tokens=self.max_completion_tokens or self.max_tokens or cap,
                temperature=DEFAULT_TEMPERATURE if self.temperature is None else self.temperature,
                stop=tuple(self.stop or ()),
                top_logprobs=(self.top_logprobs or 0) if self.logprobs else None,
                **{k: v for k, v in values.items() if v is not None},
            )
        except BackendError as e:
            raise refused(e.message) from None
        return self


def parse_request(body: Any, settings: Any) -> ChatCompletionRequest:
    """Validate an OpenAI chat-completions body against ``settings``' limits; raises :class:`ApiError` (400).

    Every string in it is made valid first (:func:`~llm_levels.text_clean.clean_text`: a lone surrogate
    becomes U+FFFD, NUL goes), so what is refused or answered never fails to encode."""
    if nested_deeper(body, MAX_JSON_DEPTH):
        raise too_deep()
    context = {
        "max_new_tokens_cap": settings.max_new_tokens_cap,
        "max_prompt_chars": settings.max_prompt_chars,
        "max_messages": settings.max_messages,
    }
    try:
        return ChatCompletionRequest.model_validate(clean_value(body, max_depth=MAX_JSON_DEPTH), context=context)
    except ValidationError as e:
        raise ApiError.from_validation(e.errors(include_url=False)) from None


def nested_deeper(value: Any, limit: int) -> bool:
    """Whether lists and objects in ``value`` nest more than ``limit`` levels (looked at without recursion)."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, (list, dict))
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, (list, dict))
        ]
        if not level:
            return False
    return True


def too_deep() -> ApiError:
    return ApiError(
        400,
        f"The JSON body is nested too deeply (more than {MAX_JSON_DEPTH} levels of objects and lists). "
        "Send a chat-completions request: an object with 'model' and 'messages'.",
        code="invalid_json",
    )


def _is_off(value: Any, allowed: tuple[Any, ...]) -> bool:
    """Whether ``value`` is one of the "feature off" values (same type, or both plain numbers)."""

    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return any((type(value) is type(v) or (num(value) and num(v))) and value == v for v in allowed)

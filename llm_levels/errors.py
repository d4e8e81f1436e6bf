"""The one error type a user is shown (see :class:`BackendError`)."""

from __future__ import annotations


class BackendError(Exception):
    """The one error type a user is shown.

    ``kind`` is a short machine-readable category (``auth``, ``rate_limit``, ``timeout``,
    ``connection``, ``not_found``, ``bad_request``, ``server``, ``stream_cut``, ``config``,
    ``model_load``, ``cancelled``, ``internal``). ``retryable`` says whether trying the same request
    again later may succeed. ``status`` is the HTTP status that best describes it (used by the app's
    own OpenAI-compatible endpoint).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "internal",
        retryable: bool = False,
        status: int = 500,
        partial_text: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.retryable = retryable
        self.status = status
        # Text already streamed before the failure; the UI keeps it on screen, marked as cut.
        self.partial_text = partial_text

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


def generation_error(error: BaseException, partial: str) -> BackendError:
    """A local engine that failed while generating, as one clear message (the partial answer kept)."""
    text = str(error)
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return BackendError(
            "The local model ran out of memory: lower max new tokens or shorten the conversation.",
            kind="server",
            retryable=True,
            status=507,
            partial_text=partial,
        )
    first = text.strip().splitlines()[0][:300] if text.strip() else ""
    return BackendError(
        f"The local model failed while generating ({type(error).__name__}: {first}). "
        "Try again; if it keeps failing, try other settings.",
        kind="internal",
        status=500,
        partial_text=partial,
    )

"""What a turn reports while it runs: one small typed event per thing a face may show.

A face (a tab, ``/v1``, the command line) reads these from :func:`llm_levels.turns.run_turn` and only
translates them: into Gradio updates, server-sent events, or lines on a terminal.

- :class:`Loading`: the local model is loading (a fraction and what is happening).
- :class:`Waiting`: the request is in line for its engine, ``ahead`` requests before it.
- :class:`Started`: the backend is ready and generating (its name, model, and the backend itself, for
  faces that show what is under the hood).
- :class:`Delta`: a piece of the answer, with per-token probabilities when they were asked for.
- :class:`Done`: the answer is complete: its text, metrics, finish reason, and whether old turns were left out.
- :class:`Failed`: the turn could not finish: the one user-facing error and the text already streamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..core import BackendError, TokenLogprob

if TYPE_CHECKING:  # pragma: no cover
    from ..core import Backend
    from ..metrics import TurnMetrics


@dataclass(frozen=True)
class Loading:
    """The local model is being loaded for this turn."""

    fraction: float | None
    message: str


@dataclass(frozen=True)
class Waiting:
    """The turn waits in its engine's line: ``ahead`` requests before it, ``limit`` run at once."""

    ahead: int
    limit: int


@dataclass(frozen=True)
class Started:
    """The backend is ready; the answer is being generated."""

    backend: Backend = field(repr=False)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model


@dataclass(frozen=True)
class Delta:
    """A piece of the answer (``tokens``: its tokens' probabilities, when asked for)."""

    text: str
    tokens: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Done:
    """The complete answer."""

    text: str
    metrics: TurnMetrics
    finish_reason: str | None
    #: Oldest turns the local model left out to fit its context window.
    truncated_turns: int = 0
    tokens: tuple[TokenLogprob, ...] = ()
    #: Why something asked for is missing (e.g. a hosted server that gives no token probabilities).
    note: str | None = None


@dataclass(frozen=True)
class Failed:
    """The turn could not finish; ``partial`` is the text shown before it failed."""

    error: BackendError
    partial: str = ""
    metrics: TurnMetrics | None = None


Event = Loading | Waiting | Started | Delta | Done | Failed

"""The turn service: one place that runs a turn (a conversation in, an answer out) for every face.

``run_turn(runtime, request)`` checks the request once, gets the backend ready (loading the local model,
waiting in its engine's line), streams the answer, measures it, and reports all of it as typed events
(:mod:`.events`); ``run_choices`` asks a hosted backend for ``n`` answers in one request. Tabs, ``/v1`` and the command line consume the events; none of them opens a backend,
waits for a model or measures by itself.
"""

from .choices import run_choices
from .events import Delta, Done, Event, Failed, Loading, Started, Waiting
from .run import TurnRequest, answer_text, run_turn

__all__ = [
    "Delta",
    "Done",
    "Event",
    "Failed",
    "Loading",
    "Started",
    "TurnRequest",
    "Waiting",
    "answer_text",
    "run_choices",
    "run_turn",
]

"""Talk mode's parts that are not the page: talk files (:mod:`.format`), finding them (:mod:`.library`) and
rehearsal records (:mod:`.rehearsal`)."""

from .format import STEP_FIELDS, TABS, Step, Talk, TalkError, parse_talk
from .library import load_talk, talk_names
from .rehearsal import RecordedAnswer, RehearsalStore, step_key

__all__ = [
    "STEP_FIELDS",
    "TABS",
    "RecordedAnswer",
    "RehearsalStore",
    "Step",
    "Talk",
    "TalkError",
    "load_talk",
    "parse_talk",
    "step_key",
    "talk_names",
]

"""Rehearsal records: every step's answer from a rehearsal run, kept to stand in when a backend fails live.

A record is keyed by the step's settings (tab, prompt, backend, model, generation settings), so editing a
step makes its old record stale rather than wrong. Records live in ``<cache_dir>/talks/<talk>.json``,
written atomically; a missing or unreadable file is an empty record.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .format import Step


@dataclass(frozen=True)
class RecordedAnswer:
    """A step's answers as they came at rehearsal (one per column), with when and from what."""

    answers: tuple[str, ...]
    labels: tuple[str, ...]
    recorded_at: str
    model: str = ""

    @property
    def label(self) -> str:
        """The tag shown over a recorded answer during the talk."""
        return f"recorded at rehearsal, {self.recorded_at}"


def step_key(step: Step) -> str:
    """A stable key for a step's settings (the same step in another file position keeps its record)."""
    blob = json.dumps(step.settings(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class RehearsalStore:
    """The recorded answers of every talk, one JSON file per talk under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def _path(self, talk: str) -> Path:
        return self.root / f"{talk}.json"

    def _read(self, talk: str) -> dict[str, Any]:
        try:
            data = json.loads(self._path(talk).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def lookup(self, talk: str, step: Step) -> RecordedAnswer | None:
        """The step's record, or None (never rehearsed, or the step changed since)."""
        entry = self._read(talk).get(step_key(step))
        if not isinstance(entry, dict):
            return None
        try:
            return RecordedAnswer(
                answers=tuple(str(a) for a in entry["answers"]),
                labels=tuple(str(a) for a in entry.get("labels", ())),
                recorded_at=str(entry["recorded_at"]),
                model=str(entry.get("model", "")),
            )
        except (KeyError, TypeError):
            return None

    def record(self, talk: str, step: Step, answers: list[str], labels: list[str], model: str = "") -> RecordedAnswer:
        """Store a step's answers (replacing an older record of the same step) and return the record."""
        now = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M")
        rec = RecordedAnswer(tuple(answers), tuple(labels), now, model)
        with self._lock:
            data = self._read(talk)
            data[step_key(step)] = {**asdict(rec), "title": step.title}
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{talk}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self._path(talk))
        return rec

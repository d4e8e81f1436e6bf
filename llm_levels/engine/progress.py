"""Loading progress: ``progress(fraction 0..1, message)``, logged and passed on safely."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("llm_levels.models")

#: ``progress(fraction 0..1, message)``: called at meaningful steps of a load.
Progress = Callable[[float, str], None]


def safe_progress(progress: Progress | None) -> Progress:
    def report(fraction: float, message: str) -> None:
        log.info("model load %3.0f%%: %s", fraction * 100, message)
        if progress is not None:
            try:
                progress(max(0.0, min(1.0, fraction)), message)
            except Exception:
                log.exception("progress callback failed")

    return report

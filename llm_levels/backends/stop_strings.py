"""Stop strings in a streamed answer: cut the text at the first one, holding back a tail that may begin one."""

from __future__ import annotations

from collections.abc import Sequence

from ..core import Chunk


class AnswerText:
    """The visible text of one answer: pieces cut at the first stop string, and all that was shown.

    ``stop_hit`` is the stop string found (then the answer is over); :attr:`shown` is the text so far,
    reported as ``partial_text`` when the generation fails.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._scanner = StopScanner(stops)
        self._parts: list[str] = []
        self.stop_hit: str | None = None

    @property
    def shown(self) -> str:
        return "".join(self._parts)

    def feed(self, piece: str) -> list[Chunk]:
        """The chunk to show for a new piece (none while it may be the start of a stop string)."""
        text, self.stop_hit = self._scanner.feed(piece)
        return self._emit(text)

    def flush(self) -> list[Chunk]:
        """The held-back tail, once the answer ended without a stop string."""
        return self._emit(self._scanner.flush())

    def _emit(self, text: str) -> list[Chunk]:
        if not text:
            return []
        self._parts.append(text)
        return [Chunk(text=text)]


class StopScanner:
    """Cuts streamed text at the first stop string, holding back any tail that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.buf = ""

    def feed(self, piece: str) -> tuple[str, str | None]:
        """Return the text safe to show now, and the stop string if one was found."""
        if not self.stops:
            return piece, None
        self.buf += piece
        found = [(self.buf.find(s), -len(s), s) for s in self.stops if s in self.buf]
        if found:
            idx, _, stop = min(found)
            out, self.buf = self.buf[:idx], ""
            return out, stop
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.buf)), keep, -1):
                if self.buf.endswith(s[:n]):
                    keep = n
                    break
        cut = len(self.buf) - keep
        out, self.buf = self.buf[:cut], self.buf[cut:]
        return out, None

    def flush(self) -> str:
        out, self.buf = self.buf, ""
        return out

"""The transformers engine's answer, token by token: each token's text and, when asked for, its probability.

- :class:`CaptureLogprobs` is a logits processor that records each step's distribution. It runs *first*
  among the app's processors, so what it records is the model's own distribution at that step,
  ``softmax(logits)``: before the repetition penalty and before temperature, top-k and top-p reshape it for
  sampling (the same distribution llama.cpp reports with ``n_probs``, and what OpenAI's ``logprobs`` mean).
  The only processors before it are ones a model's own generation config may ask ``generate`` for
  (e.g. suppressed tokens); the bundled model has none.
- :class:`TokenStreamer` receives each new token from ``generate`` and queues ``(text, TokenLogprob | None)``:
  the text the token adds to the answer (decoded with the tokens before it, so a word split over tokens and a
  character split over bytes come out right) and its log-probability with the top alternatives.
- :class:`TokenAligner` hands each piece of text that is shown the tokens it is made of, when stop strings
  hold text back or cut it.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch
from transformers import LogitsProcessor
from transformers.generation.streamers import BaseStreamer

from ..core import Chunk, TokenLogprob

#: Tokens decoded together at most before the decoding window restarts (keeps each decode short).
_WINDOW = 64
_END = object()


class CaptureLogprobs(LogitsProcessor):
    """Records each step's log-probabilities (``log_softmax`` of the scores it is given) and their top ``k``;
    leaves the scores unchanged. :meth:`take` reads one step, in order, once its token is known."""

    def __init__(self, k: int) -> None:
        self.k = k
        # generate may run a step ahead of the streamer (it does on some devices): keep steps in order.
        self.steps: deque[tuple[Any, list[tuple[int, float]]]] = deque()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        logprobs = torch.log_softmax(scores[0].float(), dim=-1)
        top: list[tuple[int, float]] = []
        if self.k:
            values, ids = torch.topk(logprobs, min(self.k, logprobs.shape[-1]))
            top = list(zip(ids.tolist(), values.tolist()))
        self.steps.append((logprobs, top))
        return scores

    def take(self, token_id: int) -> tuple[float, list[tuple[int, float]]] | None:
        """The oldest recorded step: the log-probability of ``token_id`` (the token chosen there) and the top k."""
        if not self.steps:
            return None
        logprobs, top = self.steps.popleft()
        return float(logprobs[token_id]), top


class TokenStreamer(BaseStreamer):
    """Queues each new token of one ``generate`` call as ``(text, TokenLogprob | None)``; iterate to read them.

    ``context_ids``: the prompt's last token(s), decoded before the answer's first token so that its text is
    what it adds after the prompt (tokenizers that drop a leading space on the first token of a decode).
    ``skip_ids``: the end tokens, which end the answer and add nothing to it (no entry for them).
    ``capture``: the step records of :class:`CaptureLogprobs`, when probabilities are asked for.
    Reading waits at most ``timeout`` seconds and then raises :class:`queue.Empty`, like transformers'
    ``TextIteratorStreamer``, so the reader can look at its cancel event.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        context_ids: Sequence[int] = (),
        skip_ids: Iterable[int] = (),
        capture: CaptureLogprobs | None = None,
        timeout: float | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_ids = frozenset(skip_ids)
        self.capture = capture
        self.timeout = timeout
        self.queue: queue.Queue[Any] = queue.Queue()
        self._prompt_pending = True
        self._cache: list[int] = list(context_ids)
        self._printed = len(self._decode(self._cache)) if self._cache else 0
        self._pieces: dict[int, str] = {}
        self._ended = False

    def _decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def _piece(self, token_id: int) -> str:
        """A candidate token's own text (special tokens by name: an end token shows as ``<|im_end|>``)."""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = str(self.tokenizer.decode([token_id], skip_special_tokens=False))
        return piece

    def put(self, value: Any) -> None:
        """Called by ``generate``: first with the prompt (skipped), then with each new token."""
        if value.dim() > 1:
            value = value[0]  # one sequence: generate streams only batches of one
        if self._prompt_pending:
            self._prompt_pending = False
            return
        for token_id in value.tolist():
            self._add(int(token_id))

    def _add(self, token_id: int) -> None:
        self._cache.append(token_id)
        text = self._decode(self._cache)
        if text.endswith("\ufffd"):
            delta = ""  # a character split over tokens: its text comes with the token that completes it
        else:
            delta = text[self._printed :]
            self._printed = len(text)
            if text.endswith("\n") or len(self._cache) > _WINDOW:
                # Start the next decode from this token: short decodes, and the context for the next one.
                self._cache = [token_id]
                self._printed = len(self._decode(self._cache))
        token: TokenLogprob | None = None
        step = self.capture.take(token_id) if self.capture is not None else None
        if token_id in self.skip_ids:
            return
        if step is not None:
            logprob, top = step
            alternatives = tuple((delta if i == token_id else self._piece(i), lp) for i, lp in top)
            token = TokenLogprob(delta, logprob, alternatives)
        if delta or token is not None:
            self.queue.put((delta, token))

    def end(self) -> None:
        """Called by ``generate`` when it ends (and by the worker when it fails): the rest, then the end mark."""
        if self._ended:
            return
        self._ended = True
        rest = self._decode(self._cache)[self._printed :] if self._cache else ""
        if rest:
            self.queue.put((rest, None))
        self.queue.put(_END)

    def __iter__(self) -> Iterator[tuple[str, TokenLogprob | None]]:
        return self

    def __next__(self) -> tuple[str, TokenLogprob | None]:
        item = self.queue.get(timeout=self.timeout)
        if item is _END:
            raise StopIteration
        return item

    @property
    def drained(self) -> bool:
        return self.queue.empty()


class TokenAligner:
    """Gives each shown chunk of text the tokens it is made of.

    Text goes in token by token (:meth:`add`) and comes out in chunks (after a stop-string check that may
    hold a tail back); a token goes with the chunk that completes its text. Tokens of a stop string that cut
    the answer are never shown, so never handed out.
    """

    def __init__(self) -> None:
        self._pending: deque[tuple[int, TokenLogprob]] = deque()
        self._fed = 0
        self._shown = 0

    def add(self, text: str, token: TokenLogprob | None) -> None:
        self._fed += len(text)
        if token is not None:
            self._pending.append((self._fed, token))

    def _ready(self) -> tuple[TokenLogprob, ...]:
        out = []
        while self._pending and self._pending[0][0] <= self._shown:
            out.append(self._pending.popleft()[1])
        return tuple(out)

    def attach(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """``chunks`` with their tokens, then a text-less chunk for tokens that added no text (if any)."""
        for chunk in chunks:
            self._shown += len(chunk.text)
            tokens = self._ready()
            yield replace(chunk, logprobs=tokens) if tokens else chunk
        tokens = self._ready()
        if tokens:
            yield Chunk(logprobs=tokens)

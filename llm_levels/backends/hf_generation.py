"""One generation on the transformers engine: ``model.generate`` in a worker thread, read as a stream.

A new :class:`~.hf_token_stream.TokenStreamer` per request holds its tokens' text (and, when
``GenParams.top_logprobs`` asks for them, their probabilities: see :mod:`.hf_token_stream` for which
distribution that is); a stopping criterion watches the request's stop event (set on cancel, when the
consumer closes the stream, on a stop string or a timeout), so the worker thread ends within one token and
frees the CPU. Sampling, when asked for, happens in the app's own logits processor (see
:mod:`.hf_generate_hooks`), so ``generate`` itself always selects greedily.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from ..core import BackendError, Chunk, GenParams, TokenLogprob, Usage
from ..errors import generation_error
from .hf_generate_hooks import StopOnEvent, StopOnText, logits_processors
from .hf_token_stream import CaptureLogprobs, TokenAligner, TokenStreamer
from .prompt import Prompt
from .stop_strings import AnswerText

if TYPE_CHECKING:  # pragma: no cover
    from .local_hf import LocalBackend

log = logging.getLogger(__name__)

#: How often the consumer wakes up to check ``cancel`` and the worker while no text arrives.
POLL_S = 0.05
#: What the reading loop gets once an answer's pieces are all read.
_END = object()
_thread_ids = itertools.count(1)


class GenerateRun:
    """One ``model.generate`` call: its worker thread, streamer, stopping criteria and the consuming loop.

    Cancellation, the silence timeout, stop strings and the finish reason are handled here; the backend
    only starts it (``thread.start()``), reads :meth:`consume` and sets :attr:`stop` when it is done.
    """

    def _read(self, answer: AnswerText) -> Generator[Chunk, None, bool]:
        """Stream the answer's text chunks until it ends, a stop string completes or the caller cancels.

        Checks ``cancel`` before every read; raises a timeout :class:`BackendError` when the model stays
        silent longer than the backend's ``first_token_timeout_s``. Returns whether it was cancelled.
        """
        pieces = self._pieces()
        tokens = TokenAligner()
        limit = self.backend.first_token_timeout_s
        last = time.monotonic()
        while True:
            if self.cancel is not None and self.cancel.is_set():
                self.stop.set()
                return True
            piece = next(pieces, _END)
            if piece is _END:
                break
            if piece is None:
                if time.monotonic() - last > limit:
                    self.stop.set()
                    raise BackendError(
                        f"The local model produced nothing for {limit:.0f} s; it may be overloaded. "
                        "Try again, with a shorter message or fewer new tokens.",
                        kind="timeout",
                        retryable=True,
                        status=504,
                        partial_text=answer.shown,
                    ) from None
                continue
            last = time.monotonic()
            text, token = piece
            tokens.add(text, token)
            yield from tokens.attach(answer.feed(text) if text else [])
            if answer.stop_hit is not None:
                self.stop.set()
                return False
        yield from tokens.attach(answer.flush())
        return False

    def _last_chunk(
        self, ids: list[int], n_out: int, *, cancelled: bool, ended: bool, stop_hit: str | None, **raw: Any
    ) -> Chunk:
        """The closing chunk: usage and the finish reason -- "cancelled"; "stop" when the answer ``ended``
        (an end token or a stop string); "length" at ``max_new_tokens``; else "stop" -- plus ``raw`` facts."""
        if cancelled:
            finish = "cancelled"
        elif ended:
            finish = "stop"
        elif n_out >= self.params.max_new_tokens:
            finish = "length"
        else:
            finish = "stop"
        return Chunk(
            usage=Usage(len(self.prompt.ids), n_out),
            finish_reason=finish,
            raw={"truncated_turns": self.prompt.truncated_turns, "stop_string": stop_hit, "generated_ids": ids, **raw},
        )

    def __init__(
        self, backend: LocalBackend, prompt: Prompt, params: GenParams, cancel: threading.Event | None
    ) -> None:
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.cancel = cancel
        #: Set to end this generation (cancel, a stop string, a timeout, the consumer gone).
        self.stop = threading.Event()
        self.loaded = backend.loaded
        tok = self.loaded.tokenizer
        model = self.loaded.model
        # What generate's input_ids hold before the first new token: the prompt (causal) or the
        # decoder start token (seq2seq).
        self.prefix_len = 1 if self.loaded.is_seq2seq else len(prompt.ids)
        gen_cfg = model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        self.capture = CaptureLogprobs(params.top_logprobs) if params.top_logprobs is not None else None
        # A new streamer per call: it holds this request's tokens. The short timeout only makes the consumer
        # wake up regularly to check for cancellation.
        self.streamer = TokenStreamer(
            tok,
            context_ids=[] if self.loaded.is_seq2seq else prompt.ids[-1:],
            skip_ids=self.eos_ids,
            capture=self.capture,
            timeout=POLL_S,
        )
        self.watch = StopOnEvent(self.stop, cancel, self.prefix_len)
        criteria = [self.watch]
        self.stop_text = StopOnText(tok, params.stop, self.prefix_len) if params.stop else None
        if self.stop_text is not None:
            criteria.append(self.stop_text)
        processors = logits_processors(params, model.device, self.capture)
        ids = torch.tensor([prompt.ids], dtype=torch.long, device=model.device)
        pad = gen_cfg.pad_token_id
        if pad is None:
            pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(self.eos_ids), None)
        self.kwargs: dict[str, Any] = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=params.max_new_tokens,
            # Always greedy selection; sampling, when asked for, happens in our own processor (see module doc).
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,  # applied by our own processors, after the probability capture
            streamer=self.streamer,
            stopping_criteria=StoppingCriteriaList(criteria),
            logits_processor=LogitsProcessorList(processors),
            pad_token_id=pad,
        )
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._work, name=f"llm-levels-generate-{next(_thread_ids)}", daemon=True)

    def _work(self) -> None:
        try:
            with torch.inference_mode():
                out = self.loaded.model.generate(**self.kwargs)
            self.result["ids"] = out[0, self.prefix_len :].tolist()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises BackendError
            self.result["error"] = e
            self.streamer.end()  # wake the consumer
        finally:
            if self.backend.slots is not None:
                self.backend.slots.release()

    def _pieces(self) -> Iterator[tuple[str, TokenLogprob | None] | None]:
        """Each token's ``(text, TokenLogprob | None)`` as it comes; None while nothing came for a moment."""
        while True:
            piece: tuple[str, TokenLogprob | None] | None
            try:
                piece = next(self.streamer)
            except StopIteration:
                return
            except queue.Empty:
                if not self.thread.is_alive() and self.streamer.drained:
                    return  # the worker ended without signalling (should not happen): do not wait forever
                piece = None
            yield piece

    def consume(self) -> Iterator[Chunk]:
        answer = AnswerText(self.params.stop)
        cancelled = yield from self._read(answer)
        self.thread.join(self.backend.join_timeout_s)
        error = self.result.get("error")
        if error is not None:
            raise generation_error(error, answer.shown) from error
        ids: list[int] = self.result.get("ids", [])
        n_out = len(ids) if "ids" in self.result else self.watch.generated
        ended = (
            answer.stop_hit is not None
            or bool(self.stop_text is not None and self.stop_text.hit)
            or bool(ids and ids[-1] in self.eos_ids)
        )
        yield self._last_chunk(
            ids, n_out, cancelled=cancelled or self.watch.fired_by_cancel, ended=ended, stop_hit=answer.stop_hit
        )

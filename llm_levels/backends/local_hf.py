"""The local level: a Hugging Face ``transformers`` model generating in this process.

How a request runs:

1. The conversation becomes a prompt. Causal LMs use the tokenizer's chat template
   (``apply_chat_template(add_generation_prompt=True)``); a tokenizer without one gets a plain
   fallback (``System: ...`` / ``User: ...`` / ``Assistant:`` lines, see :func:`plain_prompt`).
   Seq2seq models (Flan-T5) read only the last user message, prefixed by any system text.
2. If prompt + ``max_new_tokens`` does not fit the model's context window, the oldest turns are dropped
   (system messages and the last user message are always kept) and the last chunk reports how many in
   ``raw["truncated_turns"]``; if even that does not fit, the request is refused with a
   :class:`BackendError` that says what to shorten.
3. ``model.generate`` runs in a worker thread and streams text through a new ``TextIteratorStreamer``.
   A stopping criterion watches a per-request event, set when the caller's ``cancel`` is set, when the
   consumer closes the generator (Gradio's Stop), on a stop string or a timeout, so the worker thread
   ends within one token and frees the CPU.

Sampling (temperature > 0) draws from a *per-request* ``torch.Generator`` instead of torch's global
random state, so concurrent requests never disturb each other and a seed always reproduces its answer.
It is the same computation as ``torch.manual_seed(seed); model.generate(do_sample=True, ...)``
(temperature, then top-k, then top-p, then one multinomial draw), done by a logits processor that leaves
only the drawn token, which greedy selection then picks.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generator, Iterator, Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TextIteratorStreamer,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ..core import Backend, BackendError, Chunk, GenParams, Message, Usage, check_conversation
from ..engine import TRANSFORMERS
from ..slots import LocalSlots, SlotTicket
from .prompt import Prompt, fit_prompt

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

log = logging.getLogger(__name__)

#: How often the consumer wakes up to check ``cancel`` and the worker while no text arrives.
_POLL_S = 0.05
#: What the reading loop gets once an answer's pieces are all read.
_END = object()
_thread_ids = itertools.count(1)


def plain_prompt(messages: Sequence[Message]) -> str:
    """The fallback prompt for a tokenizer without a chat template: one ``Role: text`` paragraph per turn.

    Only plain text is joined here (no template tokens), ending with ``Assistant:`` for the model to
    continue. Base models without a template answer this kind of transcript reasonably.
    """
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m.role]}: {m.content}" for m in messages) + "\n\nAssistant:"


class LocalBackend(Backend):
    """A :class:`~llm_levels.core.Backend` on a model loaded in this process (see :mod:`llm_levels.models`).

    ``slots``, when given, is held for the duration of each generation (the app uses it to limit how
    many local generations run at once): a plain semaphore, the app's FIFO line
    (:class:`~llm_levels.slots.LocalSlots`), or one :class:`~llm_levels.slots.SlotTicket` -- a place in
    that line the caller took itself, so it can show the waiter its position while the turn comes (such
    a backend is good for one generation). A request cancelled while it waits leaves the line and never
    starts. ``first_token_timeout_s`` bounds how long the model may stay
    silent, before the first piece of text and between pieces. ``last_thread`` is the most recent
    generate thread (for tests and diagnostics).
    """

    kind = "local"
    engine = TRANSFORMERS

    def __init__(
        self,
        loaded: "LoadedModel",
        *,
        slots: threading.Semaphore | LocalSlots | SlotTicket | None = None,
        first_token_timeout_s: float = 120.0,
        join_timeout_s: float = 10.0,
    ) -> None:
        self.loaded = loaded
        self.slots = slots
        self.first_token_timeout_s = first_token_timeout_s
        self.join_timeout_s = join_timeout_s
        self.last_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ facts
    @property
    def name(self) -> str:
        return f"local · {self.loaded.display_name}"

    @property
    def model(self) -> str:
        return self.loaded.model_id or self.loaded.spec

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def describe(self) -> dict[str, Any]:
        lm = self.loaded
        return {
            "backend": self.kind,
            "engine": TRANSFORMERS,
            "model": self.model,
            "display_name": lm.display_name,
            "source": lm.source,
            "device": lm.device,
            "dtype": lm.dtype,
            "seq2seq": lm.is_seq2seq,
            "context_window": lm.context_window,
            "parameters": lm.n_params,
            "load_s": round(lm.load_s, 2),
            "from_cache": lm.from_cache,
            "chat_template": self.has_chat_template,
        }

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # ------------------------------------------------------------------ prompt inspection
    def render_prompt(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> str:
        """The prompt text exactly as fed to the model (after truncation, when ``max_new_tokens`` is given)."""
        return self.prepare(messages, max_new_tokens).text

    def prompt_tokens(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> list[tuple[int, str]]:
        """The prompt's token ids, each with the text piece it stands for."""
        ids = self.prepare(messages, max_new_tokens).ids
        return [(i, self.tokenizer.decode([i])) for i in ids]

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` is, without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prepare(self, messages: Sequence[Message], max_new_tokens: int | None = None) -> Prompt:
        """Build the prompt; with ``max_new_tokens``, drop old turns to fit the context window (or refuse)."""
        messages = list(messages)
        if self.loaded.is_seq2seq:
            return self._prepare_seq2seq(messages)
        return fit_prompt(messages, self._encode, window=self.loaded.context_window,
                          max_new_tokens=max_new_tokens, model=self.model)

    def _encode(self, messages: list[Message], dropped: int) -> Prompt:
        tok = self.tokenizer
        if self.has_chat_template:
            text = self._apply_template(messages)
            # The template already holds every special token (a BOS included): add none on top.
            add_special = False
        else:
            text = plain_prompt(messages)
            add_special = True
        ids = tok(text, add_special_tokens=add_special)["input_ids"]
        return Prompt(text, list(ids), dropped, add_special, tuple(messages))

    def _apply_template(self, messages: list[Message]) -> str:
        dicts = [m.to_dict() for m in messages]
        try:
            return self.tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - templates raise jinja errors of their own
            # Some templates (Gemma's, for one) refuse a system role: fold it into the first user turn.
            if any(m.role == "system" for m in messages):
                system = "\n\n".join(m.content for m in messages if m.role == "system")
                rest = [m.to_dict() for m in messages if m.role != "system"]
                if rest and rest[0]["role"] == "user":
                    rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
                    try:
                        return self.tokenizer.apply_chat_template(rest, tokenize=False, add_generation_prompt=True)
                    except Exception:  # noqa: BLE001 - report the original problem below
                        pass
            raise BackendError(f"The chat template of {self.model} rejected this conversation: {e}",
                               kind="bad_request", status=400) from e

    def _prepare_seq2seq(self, messages: list[Message]) -> Prompt:
        # An encoder-decoder model (Flan-T5) is not a chat model: it reads one instruction. Earlier turns
        # are not sent; they are reported as truncated.
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content.strip())
        last = messages[-1].content if messages else ""
        text = f"{system}\n\n{last}" if system else last
        ids = list(self.tokenizer(text)["input_ids"])  # with the tokenizer's own end token (T5: </s>)
        window = self.loaded.context_window
        if window is not None and len(ids) > window:
            raise BackendError(
                f"The message is too long for {self.model}: {len(ids):,} tokens, but it reads at most {window:,}. "
                "Shorten the message or the system prompt.", kind="bad_request", status=400)
        dropped = sum(1 for m in messages[:-1] if m.role != "system")
        return Prompt(text, ids, dropped, True, tuple(messages))

    # ------------------------------------------------------------------ generation
    def stream(
        self,
        messages: Sequence[Message],
        params: GenParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[Chunk]:
        check_conversation(messages)
        prompt = self.prepare(messages, params.max_new_tokens)
        if not self._acquire_slot(cancel):
            yield Chunk(usage=Usage(len(prompt.ids), 0), finish_reason="cancelled",
                        raw={"truncated_turns": prompt.truncated_turns})
            return
        run: _Run | None = None
        started = False
        try:
            run = _Run(self, prompt, params, cancel)
            run.thread.start()
            started = True
            self.last_thread = run.thread
            yield from run.consume()
        finally:
            # Reached on normal end, on an error and when the consumer closes the generator
            # (GeneratorExit): in every case the worker must stop and end.
            if run is not None:
                run.stop.set()
            if started and run is not None:
                run.thread.join(self.join_timeout_s)
                if run.thread.is_alive():
                    log.warning("generate thread %s still running %.0f s after it was told to stop",
                                run.thread.name, self.join_timeout_s)
            elif self.slots is not None:
                self.slots.release()

    def _acquire_slot(self, cancel: threading.Event | None) -> bool:
        """Wait for a generation slot; give up (False) if the request is cancelled while waiting."""
        if self.slots is None:
            return True
        if isinstance(self.slots, (LocalSlots, SlotTicket)):
            # The app's line: wait in place (FIFO) and leave it at once when cancelled.
            return self.slots.acquire(cancel=cancel)
        while not self.slots.acquire(timeout=_POLL_S * 4):
            if cancel is not None and cancel.is_set():
                return False
        if cancel is not None and cancel.is_set():  # cancelled while it waited, even if a slot just freed
            self.slots.release()
            return False
        return True


class _Generation:
    """What both decode paths share: the request, its stop event, the reading loop and the last chunk.

    A path supplies :meth:`_pieces` (its text as it arrives) and ``consume``; cancellation, the
    silence timeout, stop strings and the finish reason then behave the same on both.
    """

    def __init__(self, backend: LocalBackend, prompt: Prompt, params: GenParams,
                 cancel: threading.Event | None) -> None:
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.cancel = cancel
        #: Set to end this generation (cancel, a stop string, a timeout, the consumer gone).
        self.stop = threading.Event()

    def _pieces(self, answer: "_AnswerText") -> Iterator[str | None]:
        """The answer's text as it arrives: a piece for each token ("" for one that shows nothing yet),
        ``None`` when nothing came within one poll; the end of the answer ends the iterator."""
        raise NotImplementedError

    def _read(self, answer: "_AnswerText") -> Generator[Chunk, None, bool]:
        """Stream the answer's text chunks until it ends, a stop string completes or the caller cancels.

        Checks ``cancel`` before every read; raises a timeout :class:`BackendError` when the model stays
        silent longer than the backend's ``first_token_timeout_s``. Returns whether it was cancelled.
        """
        pieces = self._pieces(answer)
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
                        kind="timeout", retryable=True, status=504, partial_text=answer.shown) from None
                continue
            last = time.monotonic()
            if piece:
                yield from answer.feed(piece)
                if answer.stop_hit is not None:
                    self.stop.set()
                    return False
        yield from answer.flush()
        return False

    def _last_chunk(self, ids: list[int], n_out: int, *, cancelled: bool, ended: bool, stop_hit: str | None,
                    **raw: Any) -> Chunk:
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
            raw={"truncated_turns": self.prompt.truncated_turns, "stop_string": stop_hit, "generated_ids": ids,
                 **raw},
        )


class _Run(_Generation):
    """One generation: the worker thread, its streamer and stopping criteria, and the consuming loop."""

    def __init__(self, backend: LocalBackend, prompt: Prompt, params: GenParams,
                 cancel: threading.Event | None) -> None:
        super().__init__(backend, prompt, params, cancel)
        self.loaded = backend.loaded
        tok = self.loaded.tokenizer
        model = self.loaded.model
        # A new streamer per call: it holds this request's text queue. The short timeout only makes
        # the consumer wake up regularly to check for cancellation.
        self.streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=_POLL_S, skip_special_tokens=True)
        # What generate's input_ids hold before the first new token: the prompt (causal) or the
        # decoder start token (seq2seq).
        self.prefix_len = 1 if self.loaded.is_seq2seq else len(prompt.ids)
        self.watch = _StopOnEvent(self.stop, cancel, self.prefix_len)
        criteria = [self.watch]
        self.stop_text = _StopOnText(tok, params.stop, self.prefix_len) if params.stop else None
        if self.stop_text is not None:
            criteria.append(self.stop_text)
        processors = _sampling_processors(params, model.device)
        ids = torch.tensor([prompt.ids], dtype=torch.long, device=model.device)
        gen_cfg = model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
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
            repetition_penalty=params.repetition_penalty,
            streamer=self.streamer,
            stopping_criteria=StoppingCriteriaList(criteria),
            logits_processor=LogitsProcessorList(processors),
            pad_token_id=pad,
        )
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._work, name=f"llm-levels-generate-{next(_thread_ids)}",
                                       daemon=True)

    def _work(self) -> None:
        try:
            with torch.inference_mode():
                out = self.loaded.model.generate(**self.kwargs)
            self.result["ids"] = out[0, self.prefix_len:].tolist()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises BackendError
            self.result["error"] = e
            try:
                self.streamer.end()  # wake the consumer
            except Exception:  # noqa: BLE001
                self.streamer.text_queue.put(self.streamer.stop_signal)
        finally:
            if self.backend.slots is not None:
                self.backend.slots.release()

    def _pieces(self, answer: "_AnswerText") -> Iterator[str | None]:
        while True:
            try:
                piece = next(self.streamer)
            except StopIteration:
                return
            except queue.Empty:
                if not self.thread.is_alive() and self.streamer.text_queue.empty():
                    return  # the worker ended without signalling (should not happen): do not wait forever
                piece = None
            yield piece

    def consume(self) -> Iterator[Chunk]:
        answer = _AnswerText(self.params.stop)
        cancelled = yield from self._read(answer)
        self.thread.join(self.backend.join_timeout_s)
        error = self.result.get("error")
        if error is not None:
            raise _generate_error(error, answer.shown) from error
        ids: list[int] = self.result.get("ids", [])
        n_out = len(ids) if "ids" in self.result else self.watch.generated
        ended = (answer.stop_hit is not None or bool(self.stop_text is not None and self.stop_text.hit)
                 or bool(ids and ids[-1] in self.eos_ids))
        yield self._last_chunk(ids, n_out, cancelled=cancelled or self.watch.fired_by_cancel, ended=ended,
                               stop_hit=answer.stop_hit)


def _generate_error(error: BaseException, partial: str) -> BackendError:
    text = str(error)
    if isinstance(error, MemoryError) or "out of memory" in text.lower():
        return BackendError("The local model ran out of memory: lower max new tokens or shorten the conversation.",
                            kind="server", retryable=True, status=507, partial_text=partial)
    first = text.strip().splitlines()[0][:300] if text.strip() else ""
    return BackendError(f"The local model failed while generating ({type(error).__name__}: {first}). "
                        "Try again; if it keeps failing, try other settings.",
                        kind="internal", status=500, partial_text=partial)


# ------------------------------------------------------------------------------- generate plug-ins
class _StopOnEvent(StoppingCriteria):
    """Ends generation as soon as the request's stop event or the caller's cancel event is set."""

    def __init__(self, stop: threading.Event, cancel: threading.Event | None, prefix_len: int) -> None:
        self.stop = stop
        self.cancel = cancel
        self.prefix_len = prefix_len
        self.generated = 0
        self.fired_by_cancel = False

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        self.generated = int(input_ids.shape[1]) - self.prefix_len
        cancelled = self.cancel is not None and self.cancel.is_set()
        if cancelled:
            self.fired_by_cancel = True
        fired = cancelled or self.stop.is_set()
        return torch.full((input_ids.shape[0],), fired, dtype=torch.bool, device=input_ids.device)


class _StopOnText(StoppingCriteria):
    """Ends generation right after the token that completes a stop string (checked on decoded text)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], prefix_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.prefix_len = prefix_len
        # Decoding only the last few tokens is enough: a stop string is found the step it completes,
        # and a token is at least one character (a few spare tokens cover empty special ones).
        self.tail = max(len(s) for s in self.stops) + 8
        self.hit: str | None = None

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        new = input_ids[0, self.prefix_len:][-self.tail:].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        hit = next((s for s in self.stops if s in text), None)
        if hit is not None:
            self.hit = hit
        return torch.full((input_ids.shape[0],), hit is not None, dtype=torch.bool, device=input_ids.device)


def _sampling_processors(params: GenParams, device: Any) -> list[Any]:
    """Temperature, top-k and top-p warpers and a draw from a private generator; none for greedy."""
    if params.greedy:
        return []
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") & (2**63 - 1)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    # The same warpers, in the same order, as transformers' own sampling.
    out: list[Any] = []
    if params.temperature != 1.0:
        out.append(TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        out.append(TopKLogitsWarper(top_k=params.top_k))
    if params.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=params.top_p))
    out.append(_DrawToken(generator))
    return out


class _DrawToken(LogitsProcessor):
    """Draws the next token from the (warped) distribution with a private generator and leaves only it.

    Every other score becomes -inf, so generate's greedy selection picks exactly the drawn token.
    """

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        probs = torch.nn.functional.softmax(scores, dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, drawn, 0.0)


class _AnswerText:
    """The visible text of one answer: pieces cut at the first stop string, and all that was shown.

    ``stop_hit`` is the stop string found (then the answer is over); :attr:`shown` is the text so far,
    reported as ``partial_text`` when the generation fails.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._scanner = _StopScanner(stops)
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


class _StopScanner:
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

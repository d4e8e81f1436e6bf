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
3. ``model.generate`` runs in a worker thread and streams its tokens through a new ``TokenStreamer``
   (:mod:`.hf_token_stream`), with each token's probability when ``GenParams.top_logprobs`` asks for it.
   A stopping criterion watches a per-request event, set when the caller's ``cancel`` is set, when the
   consumer closes the generator (Gradio's Stop), on a stop string or a timeout, so the worker thread
   ends within one token and frees the CPU.

A conversation that ends with an assistant message is *continued*: the prompt is the rest of the
conversation rendered as usual (with the generation prompt), then that message's text, tokenized together;
only the continuation is streamed (:func:`~llm_levels.core.split_prefix`). Seq2seq models cannot continue.

Sampling (temperature > 0) draws from a *per-request* ``torch.Generator`` instead of torch's global
random state, so concurrent requests never disturb each other and a seed always reproduces its answer.
It is the same computation as ``torch.manual_seed(seed); model.generate(do_sample=True, ...)``
(temperature, then top-k, then top-p, then one multinomial draw), done by a logits processor that leaves
only the drawn token, which greedy selection then picks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..core import Backend, BackendError, Chunk, GenParams, Message, check_conversation, split_prefix
from ..engine import TRANSFORMERS
from ..slots import LocalSlots, SlotTicket
from .hf_generation import POLL_S, GenerateRun
from .prompt import Prompt, fit_prompt, fitted_or_stopped, stopped_in_line

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.transformers_loader import LoadedModel

log = logging.getLogger(__name__)


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

    provider = "local"
    engine = TRANSFORMERS

    def __init__(
        self,
        loaded: LoadedModel,
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
            "backend": self.provider,
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

    def prepare(
        self, messages: Sequence[Message], max_new_tokens: int | None = None, cancel: threading.Event | None = None
    ) -> Prompt:
        """Build the prompt; with ``max_new_tokens``, drop old turns to fit the context window (or refuse).

        A final assistant message is the start of the answer to continue: its text ends the prompt.
        """
        history, prefix = split_prefix(messages)
        if self.loaded.is_seq2seq:
            if prefix is not None:
                raise BackendError(
                    f"{self.model} is an encoder-decoder model: it cannot continue a started answer. "
                    "Use a chat (causal) model for that.",
                    kind="bad_request",
                    status=400,
                )
            return self._prepare_seq2seq(history)

        def encode(kept: list[Message], dropped: int) -> Prompt:
            return self._encode(kept, dropped) if prefix is None else self._encode(kept, dropped, prefix)

        return fit_prompt(
            history,
            encode,
            window=self.loaded.context_window,
            max_new_tokens=max_new_tokens,
            model=self.model,
            cancel=cancel,  # a long conversation's fitting stops at its next render once the turn is stopped
        )

    def _encode(self, messages: list[Message], dropped: int, prefix: str | None = None) -> Prompt:
        tok = self.tokenizer
        if self.has_chat_template:
            text = self._apply_template(messages)
            # The template already holds every special token (a BOS included): add none on top.
            add_special = False
        else:
            text = plain_prompt(messages)
            add_special = True
        if prefix is None:
            ids = tok(text, add_special_tokens=add_special)["input_ids"]
            return Prompt(text, list(ids), dropped, add_special, tuple(messages))
        # The answer's start is tokenized with the prompt, as the text a user sees.
        text += prefix
        ids = tok(text, add_special_tokens=add_special)["input_ids"]
        return Prompt(text, list(ids), dropped, add_special, (*messages, Message("assistant", prefix)))

    def _apply_template(self, messages: list[Message]) -> str:
        dicts = [m.to_dict() for m in messages]
        try:
            return self.tokenizer.apply_chat_template(dicts, tokenize=False, add_generation_prompt=True)
        except Exception as e:
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
            raise BackendError(
                f"The chat template of {self.model} rejected this conversation: {e}", kind="bad_request", status=400
            ) from e

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
                "Shorten the message or the system prompt.",
                kind="bad_request",
                status=400,
            )
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
        prompt = fitted_or_stopped(self.prepare, messages, params.max_new_tokens, cancel)
        if prompt is None:
            yield Chunk(finish_reason="cancelled")  # stopped while the prompt was being fitted
            return
        if not self._acquire_slot(cancel):
            yield stopped_in_line(prompt)
            return
        run: GenerateRun | None = None
        started = False
        try:
            run = GenerateRun(self, prompt, params, cancel)
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
                    log.warning(
                        "generate thread %s still running %.0f s after it was told to stop",
                        run.thread.name,
                        self.join_timeout_s,
                    )
            elif self.slots is not None:
                self.slots.release()

    def _acquire_slot(self, cancel: threading.Event | None) -> bool:
        """Wait for a generation slot; give up (False) if the request is cancelled while waiting."""
        if self.slots is None:
            return True
        if isinstance(self.slots, (LocalSlots, SlotTicket)):
            # The app's line: wait in place (FIFO) and leave it at once when cancelled.
            return self.slots.acquire(cancel=cancel)
        while not self.slots.acquire(timeout=POLL_S * 4):
            if cancel is not None and cancel.is_set():
                return False
        if cancel is not None and cancel.is_set():  # cancelled while it waited, even if a slot just freed
            self.slots.release()
            return False
        return True

"""The transformers engine's backend (LocalBackend), on the real embedded model (greedy, few tokens) and tiny
random models. The llama.cpp engine has its own tests (test_llama_cpp.py); prompt fitting, shared by both,
has unit tests in test_prompt.py."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from llm_levels.backends.local_hf import LocalBackend, plain_prompt
from llm_levels.backends.stop_strings import StopScanner
from llm_levels.core import BackendError, Chunk, GenParams, Message
from llm_levels.models import load_model
from llm_levels.slots import LocalSlots
from tests.fixtures.models import build_tiny_causal, cpu_settings

QUESTION = [Message("user", "What is the capital of France?")]
STORY = [Message("user", "Write a long story about a dragon who learns to cook.")]


def greedy(n: int, **kw) -> GenParams:
    return GenParams(max_new_tokens=n, temperature=0, **kw)


def direct_generate(lm, prompt_ids: list[int], **kwargs) -> list[int]:
    """What transformers itself generates for these prompt ids: the reference for the backend."""
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
    return out[0, len(prompt_ids) :].tolist()


def wait_dead(thread: threading.Thread, within_s: float) -> float:
    t0 = time.perf_counter()
    thread.join(within_s)
    assert not thread.is_alive(), f"generate thread still alive after {within_s} s"
    return time.perf_counter() - t0


@pytest.fixture()
def tiny_causal(tiny_causal_dir):
    # A fresh load per test: some tests replace model.generate.
    return load_model(str(tiny_causal_dir), cpu_settings())


# -------------------------------------------------------------------------------- the real model
@pytest.mark.slow
def test_stream_matches_complete_transformers_and_the_tokenizer(local_backend, embedded_model):
    chunks = list(local_backend.stream(STORY, greedy(8)))
    last = chunks[-1]
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    streamed = "".join(c.text for c in chunks)
    assert len([c for c in chunks if c.text]) >= 2  # really streamed, not one block
    assert last.finish_reason == "length"
    reply = local_backend.complete(STORY, greedy(8))
    assert reply.text == streamed and reply.usage == last.usage and reply.ttft_s is not None

    prompt = local_backend.render_prompt(STORY)
    prompt_ids = embedded_model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert prompt.endswith("<|im_start|>assistant\n")
    assert last.usage.input_tokens == len(prompt_ids)
    reference = direct_generate(embedded_model, prompt_ids, max_new_tokens=8, do_sample=False)
    assert last.usage.output_tokens == len(reference) == 8
    assert last.raw["generated_ids"] == reference
    assert streamed == embedded_model.tokenizer.decode(reference, skip_special_tokens=True)


@pytest.mark.slow
def test_a_short_answer_ends_with_stop(local_backend, embedded_model):
    chunks = list(local_backend.stream(QUESTION, greedy(24)))
    last = chunks[-1]
    text = "".join(c.text for c in chunks)
    assert last.finish_reason == "stop"
    assert "Paris" in text and "<|im_end|>" not in text
    ids = last.raw["generated_ids"]
    assert ids[-1] == embedded_model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert last.usage.output_tokens == len(ids) < 24


@pytest.mark.slow
def test_stop_strings_end_the_answer_and_are_trimmed(local_backend):
    full = local_backend.complete(QUESTION, greedy(24))
    assert "Paris" in full.text
    chunks = list(local_backend.stream(QUESTION, greedy(24, stop=("Paris",))))
    text = "".join(c.text for c in chunks)
    assert text == full.text[: full.text.index("Paris")]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].raw["stop_string"] == "Paris"
    # Generation stopped at the token that completed the stop string, not at the end of the answer.
    assert chunks[-1].usage.output_tokens < full.usage.output_tokens


@pytest.mark.slow
def test_seeded_sampling_reproduces_and_matches_transformers(local_backend, embedded_model):
    params = GenParams(max_new_tokens=8, temperature=0.9, top_p=0.95, top_k=40, seed=1234)
    a = local_backend.complete(STORY, params)
    b = local_backend.complete(STORY, params)
    assert a.text and a.text == b.text
    # The same computation as transformers' own sampling after torch.manual_seed.
    prompt_ids = local_backend.prepare(STORY).ids
    torch.manual_seed(1234)
    ref = direct_generate(
        embedded_model, prompt_ids, max_new_tokens=8, do_sample=True, temperature=0.9, top_p=0.95, top_k=40
    )
    assert a.text == embedded_model.tokenizer.decode(ref, skip_special_tokens=True)
    other = local_backend.complete(STORY, params.with_(seed=99))
    assert other.text != a.text


@pytest.mark.slow
def test_cancel_event_stops_the_worker(local_backend):
    cancel = threading.Event()
    gen = local_backend.stream(STORY, greedy(400), cancel)
    got = [next(gen), next(gen)]
    assert all(c.text for c in got)
    thread = local_backend.last_thread
    assert thread is not None and thread.is_alive() and thread.name.startswith("llm-levels-generate-")
    cancel.set()
    rest = list(gen)
    last = rest[-1]
    assert last.finish_reason == "cancelled"
    assert 2 <= last.usage.output_tokens < 400
    wait_dead(thread, 2.0)


@pytest.mark.slow
def test_closing_the_generator_stops_the_worker(local_backend):
    gen = local_backend.stream(STORY, greedy(400))
    next(gen), next(gen)
    thread = local_backend.last_thread
    assert thread.is_alive()
    t0 = time.perf_counter()
    gen.close()  # what Gradio does when the user presses Stop
    assert time.perf_counter() - t0 < 2.0
    wait_dead(thread, 0.1)
    assert not [t for t in threading.enumerate() if t is thread]


@pytest.mark.slow
def test_prompt_inspection(local_backend, embedded_model):
    msgs = [Message("system", "You are terse."), *QUESTION]
    text = local_backend.render_prompt(msgs)
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    tokens = local_backend.prompt_tokens(msgs)
    assert [i for i, _ in tokens] == embedded_model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(piece for _, piece in tokens) == text
    assert local_backend.count_tokens("Paris") == len(
        embedded_model.tokenizer("Paris", add_special_tokens=False)["input_ids"]
    )
    info = local_backend.describe()
    assert {"engine", "device", "dtype", "source", "context_window"} <= info.keys()
    assert info["engine"] == "transformers" == local_backend.engine and "fast_path" not in info
    assert info["source"] == "embedded-gguf" and info["device"] == embedded_model.device
    assert local_backend.name == "local · SmolLM2-135M-Instruct (embedded GGUF)"
    assert local_backend.model == "SmolLM2-135M-Instruct" and local_backend.provider == "local"


@pytest.mark.slow
def test_concurrent_requests_wait_in_line_and_get_their_own_answers(embedded_model):
    """On transformers, the app's line (TRANSFORMERS_CONCURRENCY=1) runs one generate call at a time:
    each answer is exactly the one the same question gets alone."""
    slots = LocalSlots(1)
    backend = LocalBackend(embedded_model, slots=slots)
    questions = [
        [Message("user", q)]
        for q in ("What is the capital of France?", "Name a large animal.", "Write a poem about the sea.")
    ]
    alone = [backend.complete(q, greedy(8)).text for q in questions]
    out: list = [None] * 3
    most = 0
    ths = [
        threading.Thread(target=lambda i=i: out.__setitem__(i, backend.complete(questions[i], greedy(8)).text))
        for i in range(3)
    ]
    for t in ths:
        t.start()
    while any(t.is_alive() for t in ths):
        most = max(most, slots.in_use)
        time.sleep(0.005)
    assert most == 1 and slots.in_use == 0 and slots.waiting == 0
    assert out == alone and "Paris" in out[0]


# ---------------------------------------------------------------------------- tiny random models
def test_an_exception_inside_generate_reaches_the_caller(tiny_causal, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(tiny_causal.model, "generate", broken)
    slots = threading.BoundedSemaphore(1)
    backend = LocalBackend(tiny_causal, slots=slots)
    with pytest.raises(BackendError, match="simulated kernel failure") as e:
        list(backend.stream(QUESTION, greedy(5)))
    assert isinstance(e.value.__cause__, RuntimeError) and e.value.kind == "internal"
    wait_dead(backend.last_thread, 2.0)
    assert slots.acquire(timeout=1), "the slot was not released after the failure"


def test_a_silent_model_times_out(tiny_causal, monkeypatch):
    real = tiny_causal.model.generate

    def slow_start(**kwargs):
        time.sleep(1.0)
        return real(**kwargs)

    monkeypatch.setattr(tiny_causal.model, "generate", slow_start)
    backend = LocalBackend(tiny_causal, first_token_timeout_s=0.3)
    with pytest.raises(BackendError) as e:
        list(backend.stream(QUESTION, greedy(200)))
    assert e.value.kind == "timeout" and e.value.retryable
    wait_dead(backend.last_thread, 3.0)


def test_slots_are_held_while_generating_and_released_after(tiny_causal):
    slots = threading.BoundedSemaphore(1)
    backend = LocalBackend(tiny_causal, slots=slots)
    gen = backend.stream(QUESTION, greedy(200))
    first = next(gen)
    assert isinstance(first, Chunk)
    assert not slots.acquire(blocking=False), "a running generation must hold its slot"
    # A second request waits; cancelling it while it waits ends it at once, with nothing generated.
    cancel = threading.Event()
    cancel.set()
    waiting = list(backend.stream(QUESTION, greedy(5), cancel))
    assert waiting[-1].finish_reason == "cancelled" and waiting[-1].usage.output_tokens == 0
    gen.close()
    wait_dead(backend.last_thread, 2.0)
    assert slots.acquire(timeout=1)
    slots.release()
    last = list(backend.stream(QUESTION, greedy(3)))[-1]
    assert last.finish_reason in ("length", "stop")
    assert slots.acquire(timeout=1)


def test_the_apps_line_a_request_cancelled_while_waiting_leaves_it_and_never_starts(tiny_causal):
    """With the app's LocalSlots (and with a ticket a page took itself, to show the wait)."""
    slots = LocalSlots(1)
    running = LocalBackend(tiny_causal, slots=slots).stream(QUESTION, greedy(200))
    assert isinstance(next(running), Chunk) and slots.in_use == 1
    for use_ticket in (False, True):
        ticket = slots.join() if use_ticket else None
        waiting = LocalBackend(tiny_causal, slots=ticket if use_ticket else slots)
        cancel = threading.Event()
        out: list[Chunk] = []
        t = threading.Thread(target=out.extend, args=(waiting.stream(QUESTION, greedy(5), cancel),))
        t.start()
        deadline = time.monotonic() + 5
        while slots.waiting == 0:  # it stands in line behind the running generation
            assert time.monotonic() < deadline and t.is_alive()
            time.sleep(0.01)
        if ticket is not None:
            assert ticket.ahead == 0
        cancel.set()
        t.join(2)
        assert not t.is_alive() and slots.waiting == 0, "a cancelled request must leave the line at once"
        assert out[-1].finish_reason == "cancelled" and out[-1].usage.output_tokens == 0
        assert waiting.last_thread is None  # never started
    running.close()
    deadline = time.monotonic() + 5
    while slots.in_use:  # the generate thread frees its slot when it has really ended
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # A ticket whose turn has come: the backend starts at once and gives the slot back at the end.
    ticket = slots.join()
    assert ticket.granted
    last = list(LocalBackend(tiny_causal, slots=ticket).stream(QUESTION, greedy(3)))[-1]
    assert last.finish_reason in ("length", "stop") and not ticket.granted and slots.in_use == 0


def test_old_turns_are_dropped_to_fit_the_context_window(tiny_causal):
    backend = LocalBackend(tiny_causal)  # context window: 256 tokens
    history = [Message("system", "Be brief.")]
    for i in range(12):
        history += [
            Message("user", f"Question number {i} about the quick brown fox?"),
            Message("assistant", f"Answer number {i}: the lazy dog."),
        ]
    history.append(Message("user", "And the last question?"))
    assert len(backend.prepare(history).ids) > 256 - 16
    chunks = list(backend.stream(history, greedy(16)))
    dropped = chunks[-1].raw["truncated_turns"]
    assert dropped > 0 and dropped % 2 == 0  # whole question/answer pairs
    assert chunks[-1].usage.input_tokens + 16 <= 256
    kept = backend.render_prompt(history, max_new_tokens=16)
    assert kept.startswith("<|im_start|>system\nBe brief.") and "And the last question?" in kept
    assert "Question number 0 " not in kept and "Question number 11 " in kept
    with pytest.raises(BackendError, match="too long") as e:
        list(backend.stream([Message("user", "fox " * 400)], greedy(16)))
    assert e.value.kind == "bad_request"


def test_a_tokenizer_without_chat_template_gets_the_plain_prompt(tmp_path):
    folder = build_tiny_causal(tmp_path / "plain", chat_template=None)
    backend = LocalBackend(load_model(str(folder), cpu_settings()))
    assert not backend.has_chat_template
    msgs = [Message("system", "Be brief."), Message("user", "hello")]
    assert backend.render_prompt(msgs) == "System: Be brief.\n\nUser: hello\n\nAssistant:" == plain_prompt(msgs)
    assert list(backend.stream(msgs, greedy(3)))[-1].usage.output_tokens <= 3


def test_seq2seq_reads_the_last_message_with_the_system_text(tiny_seq2seq):
    backend = LocalBackend(tiny_seq2seq)
    msgs = [
        Message("system", "Answer with one word."),
        Message("user", "hi"),
        Message("assistant", "hello"),
        Message("user", "Is the following sentence positive?"),
    ]
    text = backend.render_prompt(msgs)
    assert text == "Answer with one word.\n\nIs the following sentence positive?"
    chunks = list(backend.stream(msgs, greedy(6)))
    last = chunks[-1]
    assert last.usage.input_tokens == len(tiny_seq2seq.tokenizer(text)["input_ids"])
    assert last.raw["truncated_turns"] == 2
    reference = tiny_seq2seq.model.generate(
        **tiny_seq2seq.tokenizer(text, return_tensors="pt"), max_new_tokens=6, do_sample=False
    )[0, 1:].tolist()
    assert last.raw["generated_ids"] == reference and last.usage.output_tokens == len(reference)
    assert "".join(c.text for c in chunks) == tiny_seq2seq.tokenizer.decode(reference, skip_special_tokens=True)
    assert last.finish_reason == ("stop" if reference[-1] == tiny_seq2seq.tokenizer.eos_token_id else "length")


def test_conversation_errors_are_backend_errors(tiny_causal):
    backend = LocalBackend(tiny_causal)
    with pytest.raises(BackendError) as e:
        list(backend.stream([Message("assistant", "hi")], greedy(3)))
    assert e.value.kind == "bad_request"


@pytest.mark.parametrize(
    "pieces, stops, shown, hit",
    [
        (["Hello ", "wor", "ld. Bye"], ("world",), "Hello ", "world"),
        (["a<", "|e", "nd|>b"], ("<|end|>",), "a", "<|end|>"),
        (["no stop ", "here <"], ("<|end|>",), "no stop here <", None),
        (["xy", "z"], ("yz", "xyz"), "", "xyz"),
    ],
)
def test_stop_scanner(pieces, stops, shown, hit):
    scanner = StopScanner(stops)
    out, found = [], None
    for p in pieces:
        text, found = scanner.feed(p)
        out.append(text)
        if found:
            break
    if not found:
        out.append(scanner.flush())
    assert "".join(out) == shown and found == hit

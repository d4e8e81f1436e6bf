"""The llama.cpp engine's backend (LlamaCppBackend) on the real embedded GGUF, loaded through
``models.load_llama_cpp_model`` (about a second).

Every assertion on text is made on greedy answers (temperature 0) or on seeded ones compared with each other;
an unseeded sampled answer's content is never checked.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace

import pytest

from llm_levels.backends.llama_cpp import LlamaCppBackend
from llm_levels.config import Settings
from llm_levels.core import BackendError, Chunk, GenParams, Message, TokenLogprob
from llm_levels.models import load_llama_cpp_model
from llm_levels.slots import LocalSlots

pytestmark = pytest.mark.slow

QUESTION = [Message("user", "What is the capital of France?")]
STORY = [Message("user", "Write a long story about a dragon who learns to cook.")]
CONTEXT = 2048
#: The window of the second, small engine (the long-conversation test: fewer tokens to read).
SMALL_CONTEXT = 512


def greedy(n: int, **kw) -> GenParams:
    return GenParams(max_new_tokens=n, temperature=0, **kw)


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def wait_until(cond, within_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < within_s, f"{what}: not within {within_s} s"
        time.sleep(0.01)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def llama():
    settings = replace(Settings.from_env(), local_context=CONTEXT, local_concurrency=4, local_threads=0)
    model = load_llama_cpp_model("embedded", settings)
    yield model
    model.close()


@pytest.fixture(scope="module")
def small_llama():
    settings = replace(Settings.from_env(), local_context=SMALL_CONTEXT, local_concurrency=1, local_threads=0)
    model = load_llama_cpp_model("embedded", settings)
    yield model
    model.close()


@pytest.fixture(scope="module")
def backend(llama):
    return LlamaCppBackend(llama)


@pytest.fixture(scope="module")
def story_answer(backend) -> str:
    """The greedy answer to STORY (40 tokens): the reference several tests compare with."""
    return backend.complete(STORY, greedy(40)).text


# ------------------------------------------------------------------------------------------ the model
def test_the_model_and_describe(llama, backend):
    assert llama.engine == "llama.cpp" and llama.dtype == "Q4_1" and llama.source == "embedded-gguf"
    assert llama.context_window == CONTEXT and llama.parallel == 4 and llama.threads >= 1
    assert llama.gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and llama.load_s > 0
    info = backend.describe()
    assert info["engine"] == "llama.cpp" == backend.engine and info["backend"] == "local" == backend.provider
    assert (info["dtype"], info["context_window"], info["parallel"]) == ("Q4_1", CONTEXT, 4)
    assert info["source"] == "embedded-gguf" and info["model"] == "SmolLM2-135M-Instruct" == backend.model
    assert backend.name == "local · SmolLM2-135M-Instruct (embedded GGUF)"
    assert llama.label.startswith("llama.cpp · Q4_1 · ")


def test_the_request_sent_to_the_engine(backend):
    req = backend.request(
        STORY, GenParams(max_new_tokens=7, temperature=0.5, top_p=0.9, top_k=20, repetition_penalty=1.1)
    )
    assert req["messages"] == [{"role": "user", "content": STORY[0].content}]
    assert (req["max_tokens"], req["temperature"], req["top_p"], req["top_k"], req["repeat_penalty"]) == (
        7,
        0.5,
        0.9,
        20,
        1.1,
    )
    assert req["min_p"] == 0.0 and req["stream"] is True and req["stream_options"] == {"include_usage": True}
    assert "seed" not in req and "stop" not in req and "logprobs" not in req
    req = backend.request(STORY, GenParams(seed=5, stop=("END",), top_logprobs=3))
    assert req["seed"] == 5 and req["stop"] == ["END"] and (req["logprobs"], req["top_logprobs"]) == (True, 3)


# ------------------------------------------------------------------------------------------ streaming
def test_streams_deltas_with_usage_and_finish_reason_last(backend):
    chunks = list(backend.stream(STORY, greedy(12)))
    last = chunks[-1]
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    assert len([c for c in chunks if c.text]) >= 2  # really streamed, not one block
    assert last.finish_reason == "length" and last.text == ""
    assert last.usage.output_tokens == 12
    assert last.usage.input_tokens == len(backend.prepare(STORY).ids)
    assert last.raw["engine"] == "llama.cpp" and last.raw["truncated_turns"] == 0
    assert text_of(chunks).strip()
    assert not any(c.logprobs for c in chunks)  # not asked for


def test_a_short_answer_ends_with_stop(backend):
    # Room enough for the model to end the answer itself; the end token is counted, never shown.
    reply = backend.complete([Message("user", "What is 2 + 2? Answer with a number.")], greedy(100))
    assert reply.finish_reason == "stop" and reply.usage.output_tokens < 200
    assert reply.text.strip() and "<|im_end|>" not in reply.text


def test_greedy_is_deterministic(backend, story_answer):
    assert story_answer.strip()
    assert backend.complete(STORY, greedy(40)).text == story_answer
    assert backend.complete(STORY, greedy(12)).text == backend.complete(STORY, greedy(12)).text


def test_seeded_sampling_reproduces(backend):
    params = GenParams(max_new_tokens=16, temperature=0.9, top_p=0.95, top_k=40, seed=1234)
    a = backend.complete(STORY, params)
    b = backend.complete(STORY, params)
    assert a.text and a.text == b.text and a.usage == b.usage


def test_stop_strings_end_the_answer_and_are_not_shown(backend, story_answer):
    # A word from the middle of the greedy answer, where it first appears.
    words = [w.strip(".,;:!?\"'") for w in story_answer.split()]
    stop = next(w for w in words[4:] if len(w) >= 5 and w.isalpha())
    cut = story_answer.index(stop)
    assert cut > 0
    chunks = list(backend.stream(STORY, greedy(40, stop=(stop,))))
    assert text_of(chunks) == story_answer[:cut]
    assert stop not in text_of(chunks)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.output_tokens < 40  # the engine stopped there, not at the end of the answer


# ------------------------------------------------------------------------------------------ logprobs
def test_logprobs_carry_k_alternatives_and_greedy_picks_the_top_one(backend):
    k = 3
    chunks = list(backend.stream(STORY, greedy(12, top_logprobs=k)))
    texts = [c for c in chunks if c.text]
    assert texts and all(c.logprobs for c in texts)
    tokens = [t for c in chunks for t in c.logprobs]
    assert all(isinstance(t, TokenLogprob) for t in tokens)
    assert len(tokens) == chunks[-1].usage.output_tokens == 12
    assert "".join(t.token for t in tokens) == text_of(chunks)
    for t in tokens:
        assert len(t.top) == k
        assert t.logprob <= 0 and 0 < t.probability <= 1
        logprobs = [lp for _, lp in t.top]
        assert logprobs == sorted(logprobs, reverse=True) and len({tok for tok, _ in t.top}) == k
        assert t.top[0][0] == t.token and math.isclose(t.top[0][1], t.logprob, abs_tol=1e-5)  # greedy: top-1
    # Asking for probabilities does not change the greedy answer.
    assert text_of(chunks) == backend.complete(STORY, greedy(12)).text


# ------------------------------------------------------------------------------------------ the prompt
def test_prepare_is_the_engines_own_template_and_tokens(backend, llama):
    msgs = [Message("system", "You are terse."), *QUESTION]
    prompt = backend.prepare(msgs)
    assert prompt.text == llama.apply_template(msgs)
    assert prompt.text.startswith("<|im_start|>system\nYou are terse.<|im_end|>")
    assert prompt.text.endswith("<|im_start|>assistant\n")
    pairs = llama.tokenize(prompt.text)
    assert prompt.ids == [i for i, _ in pairs] and prompt.truncated_turns == 0
    assert "".join(piece for _, piece in pairs) == prompt.text
    assert backend.prompt_tokens(msgs) == pairs and backend.render_prompt(msgs) == prompt.text
    # The engine reads exactly these tokens.
    assert backend.complete(msgs, greedy(3)).usage.input_tokens == len(prompt.ids)


def test_a_message_too_long_is_refused_with_the_limits(backend):
    with pytest.raises(BackendError) as e:
        list(backend.stream([Message("user", "fox " * 2500)], greedy(16)))
    err = e.value
    assert err.status == 400 and err.kind == "bad_request" and "too long" in err.message
    assert f"{CONTEXT:,}" in err.message and "16 new tokens" in err.message


def test_the_engine_itself_refuses_a_prompt_beyond_its_context(llama):
    """What llama.cpp says when a prompt that passed fitting is still too long for its slot."""
    blind = LlamaCppBackend(replace(llama, context_window=100_000))  # same engine, fitting thinks it is huge
    with pytest.raises(BackendError) as e:
        list(blind.stream([Message("user", "fox " * 2500)], greedy(16)))
    err = e.value
    assert err.status == 400 and err.kind == "bad_request" and "too long" in err.message
    assert f"{CONTEXT}" in err.message


def test_a_long_conversation_keeps_the_newest_turns_with_few_renders(small_llama):
    backend = LlamaCppBackend(small_llama)
    window = small_llama.context_window
    assert window == SMALL_CONTEXT
    history = [Message("system", "Be brief.")]
    for i in range(25):  # about 1,200 tokens: more than twice the window
        history += [
            Message("user", f"Question number {i}: what does the quick brown fox do near the river today?"),
            Message("assistant", f"Answer number {i}: the quick brown fox jumps over the lazy dog again."),
        ]
    history.append(Message("user", "And the last question?"))
    assert len(backend.prepare(history).ids) > 2 * window

    renders = 0
    real = backend._encode

    def counting(messages, dropped):
        nonlocal renders
        renders += 1
        return real(messages, dropped)

    backend._encode = counting  # an instance attribute: prepare calls it
    try:
        prompt = backend.prepare(history, max_new_tokens=16)
    finally:
        del backend._encode
    assert renders <= 2 * math.log2(len(history)) + 3, renders
    assert prompt.truncated_turns > 0 and prompt.truncated_turns % 2 == 0
    assert len(prompt.ids) + 16 <= window
    kept = prompt.messages
    assert kept[0] == history[0] and kept[1].role == "user" and kept[-1] == history[-1]
    assert kept == (history[0], *history[1 + prompt.truncated_turns :])
    assert "Question number 0:" not in prompt.text and "Question number 24:" in prompt.text
    # The longest history that fits: one more question/answer pair would not.
    more = [history[0], *history[1 + prompt.truncated_turns - 2 :]]
    assert len(small_llama.tokenize(small_llama.apply_template(more))) + 16 > window

    last = list(backend.stream(history, greedy(16)))[-1]
    assert last.raw["truncated_turns"] == prompt.truncated_turns
    assert last.usage.input_tokens == len(prompt.ids) and last.usage.input_tokens + 16 <= window


# ------------------------------------------------------------------------------------------ stopping
def test_cancel_stops_the_request_and_frees_its_slot(llama):
    slots = LocalSlots(1)
    backend = LlamaCppBackend(llama, slots=slots)
    cancel = threading.Event()
    gen = backend.stream(STORY, greedy(1500), cancel)
    assert next(gen).text is not None and next(gen) is not None
    assert slots.in_use == 1
    thread = backend.last_thread
    assert thread is not None and thread.name.startswith("llm-levels-llama-")
    cancel.set()
    rest = list(gen)
    last = rest[-1]
    assert last.finish_reason == "cancelled" and last.usage.input_tokens == len(backend.prepare(STORY).ids)
    assert wait_until(lambda: slots.in_use == 0, 2.0, "the slot was not freed") < 2.0
    assert not thread.is_alive()
    # The engine serves the next request in full.
    reply = backend.complete(QUESTION, greedy(5))
    assert reply.finish_reason == "length" and reply.usage.output_tokens == 5 and slots.in_use == 0


def test_closing_the_generator_stops_the_request_and_frees_its_slot(llama, story_answer):
    slots = LocalSlots(1)
    backend = LlamaCppBackend(llama, slots=slots)
    gen = backend.stream(STORY, greedy(1500))
    next(gen), next(gen)
    assert slots.in_use == 1
    thread = backend.last_thread
    t0 = time.perf_counter()
    gen.close()  # what Gradio does when the user presses Stop
    assert time.perf_counter() - t0 < 2.0
    wait_until(lambda: slots.in_use == 0, 2.0, "the slot was not freed")
    assert not thread.is_alive()
    assert backend.complete(STORY, greedy(40)).text == story_answer  # the engine is fine afterwards


def test_a_request_cancelled_while_waiting_in_line_never_starts(llama):
    slots = LocalSlots(1)
    running = LlamaCppBackend(llama, slots=slots).stream(STORY, greedy(1500))
    assert isinstance(next(running), Chunk) and slots.in_use == 1
    try:
        for use_ticket in (False, True):
            ticket = slots.join() if use_ticket else None
            waiting = LlamaCppBackend(llama, slots=ticket if use_ticket else slots)
            cancel = threading.Event()
            out: list[Chunk] = []
            t = threading.Thread(target=out.extend, args=(waiting.stream(QUESTION, greedy(5), cancel),))
            t.start()
            wait_until(lambda: slots.waiting == 1, 5.0, "the request did not stand in line")
            cancel.set()
            t.join(2)
            assert not t.is_alive() and slots.waiting == 0, "a cancelled request must leave the line at once"
            assert out[-1].finish_reason == "cancelled" and out[-1].usage.output_tokens == 0
            assert not text_of(out) and waiting.last_thread is None  # never started
    finally:
        running.close()
    wait_until(lambda: slots.in_use == 0, 2.0, "the running request did not free its slot")


# ------------------------------------------------------------------------------------------ together
def test_four_concurrent_streams_each_get_their_own_answer(llama):
    slots = LocalSlots(4)
    backend = LlamaCppBackend(llama, slots=slots)
    questions = [
        [Message("user", q)]
        for q in (
            "Write a long story about a dragon who learns to cook.",
            "Name a large animal.",
            "Write a poem about the sea.",
            "Explain what a computer does.",
        )
    ]
    alone = [backend.complete(q, greedy(16)).text for q in questions]
    assert len(set(alone)) == 4

    out: list = [None] * 4
    start = threading.Barrier(4)

    def ask(i: int) -> None:
        start.wait()
        out[i] = backend.complete(questions[i], greedy(16))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    most = 0
    while any(t.is_alive() for t in threads):
        most = max(most, slots.in_use)
        time.sleep(0.002)
    for t in threads:
        t.join()
    assert most >= 2, "the requests never ran together"
    for reply, solo in zip(out, alone):
        assert reply.finish_reason in ("length", "stop") and 0 < reply.usage.output_tokens <= 16
        # Decoded together, the numbers may round a little differently from a request decoded alone, so
        # later words may differ: each answer starts like the same question answered alone.
        assert reply.text.split()[:2] == solo.split()[:2], (reply.text, solo)
    assert slots.in_use == 0


def test_a_stopped_turn_stops_while_its_long_conversation_is_being_fitted(backend, monkeypatch):
    """Stop during fitting (a conversation far over the window): no render after it, nothing generated."""
    long = [Message("user" if i % 2 == 0 else "assistant", f"turn {i} " + "word " * 40) for i in range(401)]
    cancel = threading.Event()
    renders = []
    encode = backend._encode

    def counted(*args, **kwargs):
        renders.append(1)
        cancel.set()  # Stop arrives while the first render runs
        return encode(*args, **kwargs)

    monkeypatch.setattr(backend, "_encode", counted)
    chunks = list(backend.stream(long, greedy(8), cancel))
    assert [c.finish_reason for c in chunks] == ["cancelled"] and not any(c.text for c in chunks)
    assert len(renders) == 1

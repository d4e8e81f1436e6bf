"""BatchScheduler on the real embedded model: each request its own answer, cancellation, errors.

Batched and solo answers are not bit-identical: a step with one row uses the one-row int8 form (see
``fastpath.qlinear``), a batch the per-row form; either rounds a little differently, so a greedy answer
may take another plausible path after some tokens. That a row never depends on its batch companions is
checked exactly in tests/fastpath/test_llama.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from llm_levels.fastpath import BatchScheduler

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoder(embedded_model):
    if embedded_model.fast is None:
        pytest.skip(f"the fast path is off here: {embedded_model.fast_path}")
    return embedded_model.fast.decoder


def ids_for(lm, text):
    return lm.tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                           tokenize=True)["input_ids"]


def drain(ticket, timeout=60):
    out = []
    while (t := ticket.get(timeout=timeout)) is not None:
        out.append(t)
    return out


def test_each_request_gets_its_own_answer(embedded_model, decoder):
    texts = ["What is the capital of France?", "Write a poem about the sea.", "Count from one to five."]
    prompts = [ids_for(embedded_model, t) for t in texts]
    solo = [list(decoder.generate(p, max_new_tokens=12)) for p in prompts]
    sched = BatchScheduler(decoder, max_batch=4)
    try:
        tickets = [sched.submit(p, max_new_tokens=12) for p in prompts]
        batched = [drain(t) for t in tickets]
    finally:
        sched.close()
    assert sched.max_rows_seen >= 2  # really decoded together
    for b, s in zip(batched, solo):  # each its own answer: it starts like the same prompt decoded alone
        assert b[:4] == s[:4]
    assert "Paris" in embedded_model.tokenizer.decode(batched[0], skip_special_tokens=True)


def test_requests_beyond_max_batch_wait_and_still_finish(embedded_model, decoder):
    p = ids_for(embedded_model, "Say hello.")
    sched = BatchScheduler(decoder, max_batch=2)
    try:
        tickets = [sched.submit(p, max_new_tokens=6, eos_token_ids=[]) for _ in range(3)]
        outs = [drain(t) for t in tickets]
    finally:
        sched.close()
    assert [len(o) for o in outs] == [6, 6, 6] and outs[0] == outs[1] == outs[2]
    assert sched.max_rows_seen == 2


def test_cancel_drops_the_request_within_a_step(embedded_model, decoder):
    p = ids_for(embedded_model, "Write a long story about a dragon.")
    sched = BatchScheduler(decoder, max_batch=4)
    stop = threading.Event()
    try:
        long_one = sched.submit(p, max_new_tokens=300, should_stop=stop.is_set)
        other = sched.submit(p, max_new_tokens=300)
        got = [long_one.get(timeout=60) for _ in range(3)]
        stop.set()
        other.cancel()
        rest = drain(long_one) + drain(other)
        deadline = time.monotonic() + 2
        while sched.active_count() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sched.active_count() == 0
    finally:
        sched.close()
    assert all(isinstance(t, int) for t in got)
    assert len(long_one.generated) < 10 and len(other.generated) < 300
    assert rest is not None


def test_a_failing_step_reaches_every_request_and_the_scheduler_recovers(embedded_model, decoder, monkeypatch):
    p = ids_for(embedded_model, "Say hello.")
    sched = BatchScheduler(decoder, max_batch=4)
    real = decoder.impl.decode

    def broken(tokens, caches):
        raise RuntimeError("kernel exploded")

    try:
        monkeypatch.setattr(decoder.impl, "decode", broken)
        tickets = [sched.submit(p, max_new_tokens=5) for _ in range(2)]
        for t in tickets:
            assert isinstance(t.get(timeout=60), int)  # the prompt's token came before the broken step
            with pytest.raises(RuntimeError, match="kernel exploded"):
                drain(t)
        monkeypatch.setattr(decoder.impl, "decode", real)
        assert len(drain(sched.submit(p, max_new_tokens=3, eos_token_ids=[]))) == 3
    finally:
        sched.close()


def test_bad_requests_are_refused_before_queueing(decoder):
    sched = BatchScheduler(decoder)
    with pytest.raises(ValueError):
        sched.submit([], max_new_tokens=3)
    with pytest.raises(ValueError):
        sched.submit([1, 2], max_new_tokens=3, top_p=0.0)
    assert sched.active_count() == 0

"""llm_levels.metrics: timing a stream while passing it on (small unit tests with scripted streams)."""

from __future__ import annotations

import time

import pytest

from llm_levels.core import BackendError, Chunk, ReplyBuilder, Usage, collect
from llm_levels.metrics import TurnMetrics, measure


def scripted(pieces, *, first_delay=0.0, gap=0.0, usage=None, finish="stop", log=None, fail_after=None):
    """A backend-like generator: text pieces with delays, then a last chunk with usage + finish reason."""
    try:
        time.sleep(first_delay)
        for i, p in enumerate(pieces):
            if fail_after is not None and i == fail_after:
                raise BackendError("The connection dropped: try again.", kind="stream_cut")
            if i:
                time.sleep(gap)
            yield Chunk(text=p)
        yield Chunk(usage=usage, finish_reason=finish)
    finally:
        if log is not None:
            log.append("closed")


def test_chunks_pass_through_unchanged_and_text_accumulates():
    src = list(scripted(["Hel", "lo", "!"], usage=Usage(5, 3)))
    m = measure(iter(src))
    seen = []
    for c in m:
        seen.append(c)
        assert m.text == "".join(x.text for x in seen)
    assert seen == src
    assert m.done and m.text == "Hello!"


def test_timings_follow_the_stream():
    m = measure(scripted(["a", "b", "c", "d"], first_delay=0.12, gap=0.05, usage=Usage(7, 4)))
    for _ in m:
        pass
    t = m.metrics
    assert t.ttft_s is not None and t.ttft_s >= 0.12
    assert t.total_s >= t.ttft_s + 3 * 0.05
    # Decode speed: the 3 tokens after the first over the time after the first token.
    assert t.tokens_per_s == pytest.approx(3 / (t.total_s - t.ttft_s))
    assert (t.input_tokens, t.output_tokens, t.finish_reason) == (7, 4, "stop")
    # The clock stopped at the end of the stream: reading later does not change it.
    time.sleep(0.05)
    assert m.metrics.total_s == t.total_s


def test_same_numbers_as_core_collect():
    """measure() and core.collect() share one accumulator (core.ReplyBuilder): same text, usage, finish."""
    chunks = list(scripted(["x", "y"], usage=Usage(2, 2), finish="length"))
    with measure(iter(chunks)) as m:
        list(m)
    reply = collect(iter(chunks))
    assert (m.reply.text, m.reply.usage, m.reply.finish_reason) == (reply.text, reply.usage, reply.finish_reason)
    assert m.metrics.summary().endswith("cut at the token limit")


def test_started_earlier_counts_the_setup_time():
    t0 = time.perf_counter()
    time.sleep(0.1)  # e.g. building the backend
    m = measure(scripted(["a"], usage=Usage(1, 1)), started=t0)
    list(m)
    assert m.metrics.ttft_s >= 0.1


def test_a_failure_stops_the_clock_and_keeps_the_partial_text():
    m = measure(scripted(["Hel", "lo", "!"], gap=0.01, fail_after=2))
    with pytest.raises(BackendError):
        for _ in m:
            pass
    assert m.done and m.text == "Hello"
    t = m.metrics
    assert t.output_tokens is None and t.tokens_per_s is None and t.finish_reason is None
    assert "unfinished" in t.summary()


def test_close_closes_the_backend_stream():
    """Stop in the UI closes the consumer; measure must pass that on so the backend stops working."""
    log: list[str] = []
    m = measure(scripted(["a", "b", "c"], log=log))
    next(m)
    m.close()
    assert log == ["closed"] and m.done
    with pytest.raises(StopIteration):
        next(m)


def test_context_manager_closes_on_early_exit():
    log: list[str] = []
    with measure(scripted(["a", "b"], log=log)) as m:
        for _ in m:
            break
    assert log == ["closed"]
    assert m.text == "a"


def test_to_dict_uses_the_command_line_keys():
    t = TurnMetrics(
        ttft_s=0.12345,
        total_s=1.5,
        tokens_per_s=12.345,
        input_tokens=10,
        output_tokens=20,
        finish_reason="stop",
        backend="local",
        model="m",
    )
    d = t.to_dict()
    assert d == {
        "backend": "local",
        "model": "m",
        "ttft_s": 0.123,
        "total_s": 1.5,
        "tokens_per_s": 12.3,
        "usage": {"input_tokens": 10, "output_tokens": 20},
        "finish_reason": "stop",
    }
    assert t.summary() == "0.12 s to first token · 12.3 tokens/s · 10 → 20 tokens · 1.5 s in all"


def test_reply_builder_matches_collect_chunk_by_chunk():
    chunks = [Chunk("a"), Chunk(""), Chunk("b", usage=Usage(1, 2)), Chunk(finish_reason="stop")]
    b = ReplyBuilder()
    for c in chunks:
        b.add(c)
    r = b.reply()
    assert (r.text, r.usage, r.finish_reason) == ("ab", Usage(1, 2), "stop")
    assert r.ttft_s is not None and r.total_s >= r.ttft_s

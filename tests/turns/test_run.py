"""The turn service on a fake backend (milliseconds) and on the real embedded model (the proof)."""

from __future__ import annotations

import threading
import time

import pytest

from llm_levels.config import Settings
from llm_levels.core import BackendError, Message
from llm_levels.runtime import AppRuntime
from llm_levels.turns import Delta, Done, Failed, Loading, Started, TurnRequest, Waiting, run_turn
from tests.fakes import FakeBackend

HELLO = (Message("user", "What is the capital of France?"),)


@pytest.fixture
def runtime() -> AppRuntime:
    return AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false", "REQUESTS_PER_MINUTE": "1000"}))


def test_a_turn_reports_started_deltas_and_done(runtime):
    events = list(
        run_turn(runtime, TurnRequest("fake", HELLO, {"max_new_tokens": 10}, backend=FakeBackend(truncated_turns=2)))
    )
    assert isinstance(events[0], Started) and events[0].name == "fake"
    assert [e.text for e in events if isinstance(e, Delta)] == ["Hello", ", ", "world"]
    done = events[-1]
    assert isinstance(done, Done) and done.text == "Hello, world" and done.finish_reason == "stop"
    assert done.metrics.output_tokens == 3 and done.truncated_turns == 2 and done.metrics.ttft_s is not None


def test_bad_input_is_refused_before_anything_happens(runtime):
    backend = FakeBackend()
    with pytest.raises(BackendError, match="temperature"):
        run_turn(runtime, TurnRequest("fake", HELLO, {"temperature": 9}, backend=backend))
    with pytest.raises(BackendError, match="empty"):
        run_turn(runtime, TurnRequest("fake", (Message("user", "  "),), backend=backend))
    assert backend.calls == []


def test_a_failure_keeps_the_partial_answer(runtime):
    events = list(run_turn(runtime, TurnRequest("fake", HELLO, backend=FakeBackend(fail_after=2))))
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.partial == "Hello, " and failed.error.kind == "server"
    assert not any(isinstance(e, Done) for e in events)


def test_a_bug_in_a_backend_is_one_failed_event(runtime):
    class Broken(FakeBackend):
        def stream(self, messages, params, cancel=None):
            yield from ()
            raise RuntimeError("boom")

    failed = list(run_turn(runtime, TurnRequest("fake", HELLO, backend=Broken())))[-1]
    assert isinstance(failed, Failed) and failed.error.kind == "internal" and "boom" not in failed.error.message


def test_closing_the_events_stops_the_backend(runtime):
    backend = FakeBackend(["a"] * 100, delay_s=0.01)
    events = run_turn(runtime, TurnRequest("fake", HELLO, backend=backend))
    for e in events:
        if isinstance(e, Delta):
            break
    events.close()
    assert backend.stopped.wait(2)


def test_token_probabilities_travel_with_the_deltas(runtime):
    events = list(run_turn(runtime, TurnRequest("fake", HELLO, {"top_logprobs": 2}, backend=FakeBackend())))
    assert all(len(e.tokens) == 1 for e in events if isinstance(e, Delta))
    assert [t.token for t in events[-1].tokens] == ["Hello", ", ", "world"]


# ------------------------------------------------------------------------------------ abuse (issue 14)
def test_text_from_outside_is_made_valid_before_the_backend_sees_it(runtime):
    """A lone surrogate (JSON can carry "\\ud800") cannot be encoded as UTF-8: a tokenizer, a log line or
    Gradio's encoder failed on it far from the entrance, and the session stayed broken. NUL goes too."""
    backend = FakeBackend()
    conv = (Message("system", "be\x00 brief"), Message("user", "a\ud800b \ud83d\ude00 \x1b[31m"))
    params = {"max_new_tokens": 10, "stop": ["\udfff", "ok"]}
    events = list(run_turn(runtime, TurnRequest("fake", conv, params, backend=backend)))
    assert isinstance(events[-1], Done)
    (messages, sent), *_ = backend.calls
    assert [m.content for m in messages] == ["be brief", "a\ufffdb \U0001f600 \x1b[31m"]  # controls but NUL kept
    assert sent.stop == ("\ufffd", "ok")
    for m in messages:
        m.content.encode("utf-8")  # valid everywhere now
    clean = (Message("user", "plain text"),)  # a valid conversation is passed on as it is (the same objects)
    list(run_turn(runtime, TurnRequest("fake", clean, backend=backend)))
    assert backend.calls[-1][0][0] is clean[0]


def test_too_many_messages_are_refused_at_once_before_anything_happens(runtime):
    backend = FakeBackend()
    flood = tuple([Message("user", "x")] * (runtime.settings.max_messages + 1))
    t0 = time.perf_counter()
    with pytest.raises(BackendError) as e:
        run_turn(runtime, TurnRequest("fake", flood, backend=backend))
    assert time.perf_counter() - t0 < 0.5 and backend.calls == []
    assert e.value.status == 400 and "MAX_MESSAGES" in e.value.message and "501" in e.value.message
    at_limit = tuple([Message("user", "x")] * runtime.settings.max_messages)
    assert isinstance(list(run_turn(runtime, TurnRequest("fake", at_limit, backend=backend)))[-1], Done)


def test_a_stop_string_too_long_to_look_for_is_refused(runtime):
    with pytest.raises(BackendError, match="stop string is too long"):
        run_turn(runtime, TurnRequest("fake", HELLO, {"stop": ["x" * 100_000]}, backend=FakeBackend()))


@pytest.mark.parametrize("messages", [["hello"], [None], "hello", [{"role": "user", "content": "x"}]])
def test_a_conversation_that_is_not_messages_is_refused(runtime, messages):
    with pytest.raises(BackendError, match="list of messages"):
        run_turn(runtime, TurnRequest("fake", messages, backend=FakeBackend()))


# ------------------------------------------------------------------------------------ the real engine
@pytest.mark.slow
def test_a_local_turn_waits_in_its_engines_line_and_leaves_it_when_stopped():
    rt = AppRuntime(
        Settings.from_env({"PRELOAD_MODEL": "false", "LOCAL_CONCURRENCY": "1", "REQUESTS_PER_MINUTE": "1000"})
    )
    long = (Message("user", "Write a long story about a robot who learns to paint."),)
    first = run_turn(rt, TurnRequest("local", long, {"max_new_tokens": 400, "temperature": 0}), poll_s=0.05)
    seen = []
    for e in first:  # the model loads (Loading), then the first turn streams
        seen.append(type(e))
        if isinstance(e, Delta):
            break
    assert Started in seen
    second = run_turn(rt, TurnRequest("local", HELLO, {"max_new_tokens": 5, "temperature": 0}), poll_s=0.05)
    waiting = next(e for e in second if not isinstance(e, Loading))
    assert isinstance(waiting, Waiting) and waiting.ahead == 0 and waiting.limit == 1
    second.close()  # stopped while in line: it never starts
    assert rt.line().waiting == 0
    first.close()
    deadline = time.monotonic() + 5
    while rt.line().in_use and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rt.line().in_use == 0
    events = list(run_turn(rt, TurnRequest("local", HELLO, {"max_new_tokens": 8, "temperature": 0})))
    assert isinstance(events[-1], Done) and events[-1].metrics.output_tokens >= 1
    again = list(run_turn(rt, TurnRequest("local", HELLO, {"max_new_tokens": 8, "temperature": 0})))
    assert again[-1].text == events[-1].text  # greedy: the same answer


@pytest.mark.slow
def test_a_cancel_event_ends_a_local_turn(runtime):
    cancel = threading.Event()
    events = run_turn(runtime, TurnRequest("local", HELLO, {"max_new_tokens": 300, "temperature": 0}), cancel=cancel)
    out = []
    for e in events:
        out.append(e)
        if isinstance(e, Delta):
            cancel.set()
    assert isinstance(out[-1], Done) and out[-1].finish_reason == "cancelled"

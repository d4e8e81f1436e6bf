"""fit_prompt (llm_levels/backends/prompt.py), with a fake encoder: which turns are kept, and how few renders
it takes. The real engines' fitting is tested in test_llama_cpp.py and test_local_hf.py."""

from __future__ import annotations

import math
import random

import pytest

from llm_levels.backends.prompt import Prompt, fit_prompt
from llm_levels.core import BackendError, Message

#: Tokens the fake template adds around every message, and at the end (the assistant's header).
PER_MESSAGE = 3
TAIL = 2


class FakeEncoder:
    """A template where every word is a token: counts its calls and remembers what it was asked to render."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []  # (messages rendered, turns dropped)

    def __call__(self, messages: list[Message], dropped: int) -> Prompt:
        self.calls.append((len(messages), dropped))
        text = "".join(f"<{m.role}>{m.content}</>" for m in messages) + "<assistant>"
        n = sum(len(m.content.split()) + PER_MESSAGE for m in messages) + TAIL
        return Prompt(text, list(range(n)), dropped, False, tuple(messages))


def cost(messages: list[Message]) -> int:
    return sum(len(m.content.split()) + PER_MESSAGE for m in messages) + TAIL


def chat(pairs: int, *, system: str | None = "Be brief.", words: int = 5) -> list[Message]:
    msgs = [Message("system", system)] if system else []
    for i in range(pairs):
        msgs += [
            Message("user", f"question{i} " + "w " * (words - 1)),
            Message("assistant", f"answer{i} " + "w " * (words - 1)),
        ]
    return msgs + [Message("user", "last " + "w " * (words - 1))]


def brute_force(messages: list[Message], budget: int) -> tuple[list[Message], int] | None:
    """The reference: the earliest allowed start whose prompt fits, by trying every start in order."""
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]
    if cost(messages) <= budget:
        return messages, 0
    for i in range(1, len(turns)):
        if turns[i].role == "user" or i == len(turns) - 1:
            kept = system + turns[i:]
            if cost(kept) <= budget:
                return kept, i
    return None


def test_a_prompt_that_fits_is_rendered_once_and_kept_whole():
    enc = FakeEncoder()
    msgs = chat(3)
    p = fit_prompt(msgs, enc, window=1000, max_new_tokens=100, model="m")
    assert p.messages == tuple(msgs) and p.truncated_turns == 0 and len(p.ids) == cost(msgs)
    assert enc.calls == [(len(msgs), 0)]


@pytest.mark.parametrize("window, max_new", [(None, 16), (10, None), (None, None)])
def test_without_a_window_or_an_answer_budget_nothing_is_fitted(window, max_new):
    enc = FakeEncoder()
    msgs = chat(50)
    p = fit_prompt(msgs, enc, window=window, max_new_tokens=max_new, model="m")
    assert p.messages == tuple(msgs) and len(enc.calls) == 1


def test_the_newest_turns_that_fit_are_kept_with_the_system_message():
    enc = FakeEncoder()
    msgs = chat(20)  # 1 system + 40 turns + the last question; 8 tokens per message
    window, max_new = 100, 20
    p = fit_prompt(msgs, enc, window=window, max_new_tokens=max_new, model="m")
    assert len(p.ids) <= window - max_new
    assert p.messages[0] == msgs[0] and p.messages[-1] == msgs[-1]
    assert p.messages[1].role == "user"  # the kept history starts with a question
    assert p.truncated_turns > 0 and p.truncated_turns % 2 == 0  # whole question/answer pairs
    assert p.messages == (msgs[0], *msgs[1 + p.truncated_turns :])
    # The longest history that fits: one more pair would not.
    one_more = [msgs[0], *msgs[1 + p.truncated_turns - 2 :]]
    assert cost(one_more) > window - max_new
    assert "question19" in p.text and "question0 " not in p.text


def test_the_kept_history_never_starts_with_an_answer():
    enc = FakeEncoder()
    # A question followed by several answers (a retried or streamed-in-parts reply), then more turns.
    msgs = (
        [Message("user", "q0 " + "w " * 20)]
        + [Message("assistant", "a " + "w " * 20)] * 4
        + [Message("user", "q1 w w"), Message("assistant", "a1 w w"), Message("user", "last w")]
    )
    budget = cost(msgs[-3:])  # room for exactly the last question, answer and question
    p = fit_prompt(msgs, enc, window=budget + 10, max_new_tokens=10, model="m")
    assert p.messages == tuple(msgs[-3:]) and p.truncated_turns == len(msgs) - 3
    assert p.messages[0].role == "user"


def test_only_the_last_message_kept_when_nothing_else_fits():
    enc = FakeEncoder()
    msgs = chat(5, words=30)
    budget = cost([msgs[0], msgs[-1]])
    p = fit_prompt(msgs, enc, window=budget + 8, max_new_tokens=8, model="m")
    assert p.messages == (msgs[0], msgs[-1]) and p.truncated_turns == len(msgs) - 2


def test_a_message_too_long_even_alone_is_refused_with_the_numbers():
    enc = FakeEncoder()
    msgs = [Message("system", "Be brief."), Message("user", "w " * 3000)]
    with pytest.raises(BackendError) as e:
        fit_prompt(msgs, enc, window=2048, max_new_tokens=64, model="TinyModel")
    err = e.value
    assert err.status == 400 and err.kind == "bad_request"
    assert "TinyModel" in err.message and f"{cost(msgs):,} tokens" in err.message
    assert "2,048" in err.message and "64" in err.message and "max new tokens" in err.message
    # A long history whose last question alone is too long: refused too, naming the shortest prompt.
    msgs = chat(30)[:-1] + [Message("user", "w " * 3000)]
    with pytest.raises(BackendError, match="too long") as e:
        fit_prompt(msgs, enc, window=2048, max_new_tokens=64, model="m")
    assert f"{cost([msgs[0], msgs[-1]]):,} tokens" in e.value.message


@pytest.mark.parametrize("pairs", [10, 100, 1000])
def test_fitting_takes_a_logarithmic_number_of_renders(pairs):
    enc = FakeEncoder()
    msgs = chat(pairs)
    n = len(msgs)
    p = fit_prompt(msgs, enc, window=200, max_new_tokens=50, model="m")
    assert len(p.ids) <= 150 and p.truncated_turns > 0
    assert len(enc.calls) <= 2 * math.log2(n) + 3, (len(enc.calls), n)


def test_bisection_agrees_with_trying_every_start():
    rng = random.Random(7)
    for _ in range(300):
        msgs: list[Message] = [Message("system", "s " * rng.randint(0, 10))] if rng.random() < 0.6 else []
        for _ in range(rng.randint(0, 12)):
            role = rng.choice(("user", "user", "assistant"))
            msgs.append(Message(role, "w " * rng.randint(1, 25)))
        msgs.append(Message("user", "w " * rng.randint(1, 25)))
        window, max_new = rng.randint(20, 300), rng.randint(1, 40)
        expected = brute_force(msgs, window - max_new)
        enc = FakeEncoder()
        if expected is None:
            with pytest.raises(BackendError):
                fit_prompt(msgs, enc, window=window, max_new_tokens=max_new, model="m")
            continue
        p = fit_prompt(msgs, enc, window=window, max_new_tokens=max_new, model="m")
        kept, start = expected
        assert p.messages == tuple(kept) and p.truncated_turns == start, (msgs, window, max_new)


def test_a_flood_of_tiny_messages_costs_what_fits_the_window_not_its_length():
    """Issue 14: thousands of one-word messages used to be rendered whole, then in halves: the work (and the
    wait before the first token) grew with the conversation. Now the renders are the same whatever its
    length, each at most about twice what fits."""
    window, max_new = 400, 100
    renders = {}
    for n in (1_000, 10_000, 100_000):
        enc = FakeEncoder()
        msgs = [Message("user", "x")] * n
        p = fit_prompt(msgs, enc, window=window, max_new_tokens=max_new, model="m")
        kept = len(p.messages)
        assert p.messages == tuple(msgs[-kept:]) and len(p.ids) <= window - max_new
        assert cost(msgs[-kept - 1 :]) > window - max_new  # the longest history that fits
        renders[n] = [size for size, _ in enc.calls]
        assert max(renders[n]) <= 2 * kept + 1 and len(renders[n]) <= 2 * math.log2(kept) + 4, renders[n]
    assert renders[1_000] == renders[10_000] == renders[100_000]


def test_fitting_stops_at_its_next_render_once_cancelled():
    import threading

    cancel = threading.Event()
    enc = FakeEncoder()
    inner = enc.__call__

    def encode(messages, dropped):
        if len(enc.calls) == 2:
            cancel.set()  # the client went away during the search
        return inner(messages, dropped)

    with pytest.raises(BackendError) as e:
        fit_prompt([Message("user", "x")] * 5000, encode, window=200, max_new_tokens=50, model="m", cancel=cancel)
    assert e.value.kind == "cancelled" and len(enc.calls) == 3

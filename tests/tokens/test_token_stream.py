"""The transformers engine's per-token streamer and aligner, on a small byte-level tokenizer (no model)."""

from __future__ import annotations

import queue

import pytest
import torch

from llm_levels.backends.hf_token_stream import CaptureLogprobs, TokenAligner, TokenStreamer
from llm_levels.backends.stop_strings import AnswerText
from llm_levels.core import TokenLogprob
from tests.fixtures.models import tiny_tokenizer

TEXT = "Paris, café 中文 🙂\nthe end."


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(eos="</s>")


def drain(streamer: TokenStreamer) -> list[tuple[str, TokenLogprob | None]]:
    out = []
    while True:
        try:
            out.append(next(streamer))
        except StopIteration:
            return out


def test_each_token_adds_its_text_and_split_characters_come_whole(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(TEXT.split())  # the non-ASCII characters are split over byte tokens
    prompt = tok("question:", add_special_tokens=False)["input_ids"]
    s = TokenStreamer(tok, context_ids=prompt[-1:], skip_ids={tok.eos_token_id}, timeout=0.01)
    s.put(torch.tensor([prompt]))  # the prompt comes first and is skipped
    for i in [*ids, tok.eos_token_id]:
        s.put(torch.tensor([i]))
    s.end()
    pieces = drain(s)
    texts = [t for t, _ in pieces]
    assert "".join(texts) == TEXT and not any("\ufffd" in t for t in texts)
    assert all(token is None for _, token in pieces)  # nothing captured: no probabilities asked for
    with pytest.raises(queue.Empty):
        TokenStreamer(tok, timeout=0.01).__next__()


def test_captured_steps_become_token_entries_and_the_end_token_none(tok):
    ids = tok("the end", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    capture = CaptureLogprobs(2)
    s = TokenStreamer(tok, skip_ids={tok.eos_token_id}, capture=capture, timeout=0.01)
    s.put(torch.tensor([[0]]))
    torch.manual_seed(0)
    steps = []
    for i in ids:
        scores = torch.randn(1, len(tok))
        steps.append(torch.log_softmax(scores[0], dim=-1))
        assert capture(None, scores) is scores  # the scores pass unchanged
        s.put(torch.tensor([i]))
    s.end()
    pieces = drain(s)
    assert len(pieces) == len(ids) - 1 and not capture.steps  # every step read once; the end token reported none
    for (text, token), i, lp in zip(pieces, ids, steps):
        assert token is not None and token.token == text and len(token.top) == 2
        assert token.logprob == pytest.approx(lp[i].item(), abs=1e-6)
        assert [v for _, v in token.top] == pytest.approx(torch.topk(lp, 2).values.tolist(), abs=1e-6)


def test_the_aligner_gives_each_chunk_its_tokens_and_drops_a_stop_strings():
    answer, aligner = AnswerText(("END",)), TokenAligner()
    shown = []
    for text in ["Hi", " there", " E", "ND", " more"]:
        aligner.add(text, TokenLogprob(text, -0.5))
        shown += list(aligner.attach(answer.feed(text)))
        if answer.stop_hit:
            break
    assert "".join(c.text for c in shown) == "Hi there "
    # " E" showed its space but the stop string took its "E": that token is not handed out.
    assert [[t.token for t in c.logprobs] for c in shown] == [["Hi"], [" there"], []]
    # A token that adds no text (a split character's first byte) goes out alone once shown.
    aligner = TokenAligner()
    aligner.add("", TokenLogprob("", -1.0))
    out = list(aligner.attach([]))
    assert len(out) == 1 and out[0].text == "" and out[0].logprobs[0].logprob == -1.0

"""Per-token probabilities, continuing an answer from a token, and the next-token distribution, on both local
engines with the real embedded model. Every assertion on text is on greedy answers or seeded ones."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from llm_levels.backends.llama_cpp import LlamaCppBackend
from llm_levels.config import Settings
from llm_levels.core import GenParams, Message
from llm_levels.models import load_llama_cpp_model
from llm_levels.tokens import continue_with, next_token_distribution

pytestmark = pytest.mark.slow

QUESTION = [Message("user", "What is the capital of France?")]
STORY = [Message("user", "Write a long story about a dragon who learns to cook.")]
SAMPLED = GenParams(max_new_tokens=10, temperature=1.3, top_k=30, top_p=0.9, repetition_penalty=1.3, seed=7)


def greedy(n: int, **kw) -> GenParams:
    return GenParams(max_new_tokens=n, temperature=0, **kw)


@pytest.fixture(scope="module")
def llama_backend():
    settings = replace(Settings.from_env(), local_context=1024, local_concurrency=2, local_threads=0)
    model = load_llama_cpp_model("embedded", settings)
    yield LlamaCppBackend(model)
    model.close()


@pytest.fixture(params=["llama.cpp", "transformers"])
def engine(request, llama_backend, local_backend):
    return llama_backend if request.param == "llama.cpp" else local_backend


def tokens_and_text(backend, messages, params):
    chunks = list(backend.stream(messages, params))
    return [t for c in chunks for t in c.logprobs], "".join(c.text for c in chunks), chunks


# ----------------------------------------------------------------------------- transformers: the numbers
@pytest.mark.parametrize(
    "params", [greedy(10, top_logprobs=5), SAMPLED.with_(top_logprobs=5)], ids=["greedy", "sampled"]
)
def test_transformers_probabilities_are_the_softmax_of_the_models_own_logits(local_backend, embedded_model, params):
    """Each reported probability (the chosen token's and the top 5) against a softmax of the logits the model
    itself gives for the same positions, in one forward pass: within 1e-4. Sampled with a repetition penalty
    too: the report is the model's distribution, before the penalty, temperature, top-k and top-p."""
    tokens, text, chunks = tokens_and_text(local_backend, STORY, params)
    ids = chunks[-1].raw["generated_ids"]
    assert len(tokens) == len(ids) == 10 and "".join(t.token for t in tokens) == text
    prompt = local_backend.prepare(STORY).ids
    with torch.inference_mode():
        logits = embedded_model.model(torch.tensor([prompt + ids])).logits[0].float()
    probs = torch.softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(ids)], dim=-1)
    tok = embedded_model.tokenizer
    for step, (token_id, t) in enumerate(zip(ids, tokens)):
        assert abs(probs[step, token_id].item() - t.probability) < 1e-4
        values, top_ids = torch.topk(probs[step], 5)
        assert len(t.top) == 5
        for (alt, lp), p, i in zip(t.top, values.tolist(), top_ids.tolist()):
            assert abs(math.exp(lp) - p) < 1e-4
            assert alt == (t.token if i == token_id else tok.decode([i]))
        if params.greedy:
            assert t.top[0][0] == t.token  # greedy picks the most likely token
    # Asking for them changes nothing in the answer.
    assert local_backend.complete(STORY, params.with_(top_logprobs=None)).text == text


def test_transformers_stop_string_keeps_tokens_and_text_together(local_backend):
    full = local_backend.complete(QUESTION, greedy(24))
    assert "Paris" in full.text
    tokens, text, _ = tokens_and_text(local_backend, QUESTION, greedy(24, stop=("Paris",), top_logprobs=2))
    assert text == full.text[: full.text.index("Paris")]
    # The tokens that complete the stop string are not reported, even one whose start is shown (" Paris"
    # cut before "Paris" leaves its space in the text): the tokens' text is the answer up to that token.
    joined = "".join(t.token for t in tokens)
    assert text.startswith(joined) and text[len(joined) :] in ("", " ") and len(tokens) >= 4


# ----------------------------------------------------------------------------------------- both engines
def test_top_logprobs_zero_gives_each_tokens_own_probability_only(engine):
    tokens, text, chunks = tokens_and_text(engine, QUESTION, greedy(6, top_logprobs=0))
    assert len(tokens) == chunks[-1].usage.output_tokens == 6 and "".join(t.token for t in tokens) == text
    assert all(t.top == () and 0 < t.probability <= 1 for t in tokens)


def test_continuing_from_a_token(engine):
    """Greedy answer, cut at token i, alternative j in its place, continued: the result starts with the chosen
    prefix; with j = 0 (the greedy token itself) it is the greedy answer again."""
    n, i = 12, 4
    tokens, text, _ = tokens_and_text(engine, STORY, greedy(n, top_logprobs=3))
    assert len(tokens) == n
    same = continue_with(STORY, tokens, i, 0)
    assert same[:-1] == STORY and same[-1] == Message("assistant", "".join(t.token for t in tokens[: i + 1]))
    rest = engine.complete(same, greedy(n - i - 1))
    assert same[-1].content + rest.text == text  # only the continuation is streamed
    other = continue_with(STORY, tokens, i, 1)
    chosen = "".join(t.token for t in tokens[:i]) + tokens[i].top[1][0]
    assert other[-1] == Message("assistant", chosen) and tokens[i].top[1][0] != tokens[i].token
    cont, cont_text, chunks = tokens_and_text(engine, other, greedy(6, top_logprobs=2))
    assert cont_text and (chosen + cont_text).startswith(chosen)
    assert chunks[-1].usage.input_tokens == len(engine.prepare(other).ids)
    # The continuation's first token is the most likely one after the chosen prefix.
    dist = next_token_distribution(engine, other, 5)
    assert cont[0].token == dist.tokens[0].token and abs(cont[0].probability - dist.tokens[0].probability) < 2e-3


def test_the_prompt_of_a_continuation_ends_with_the_started_answer(engine):
    started = [*QUESTION, Message("assistant", "The capital")]
    prompt = engine.prepare(started)
    plain = engine.prepare(QUESTION)
    assert prompt.text == plain.text + "The capital" and prompt.ids[: len(plain.ids)] == plain.ids
    assert prompt.messages[-1] == started[-1]


def test_next_token_distribution_matches_the_first_generated_token(engine):
    dist = next_token_distribution(engine, QUESTION, 20)
    assert len(dist.tokens) == 20 and dist.engine == engine.engine and dist.model == engine.model
    probs = [t.probability for t in dist.tokens]
    assert probs == sorted(probs, reverse=True) and 0 <= dist.other < 1
    assert dist.prompt_tokens == len(engine.prepare(QUESTION).ids)
    first = tokens_and_text(engine, QUESTION, greedy(1, top_logprobs=20))[0][0]
    assert first.token == dist.tokens[0].token  # greedy takes the top bar
    assert [a for a, _ in first.top[:5]] == [t.token for t in dist.tokens[:5]]
    assert all(abs(math.exp(lp) - t.probability) < 2e-3 for (_, lp), t in zip(first.top, dist.tokens))


def test_the_end_token_is_named_in_the_distribution(engine):
    dist = next_token_distribution(engine, [*QUESTION, Message("assistant", "Paris is the capital of France.")], 5)
    special = [t for t in dist.tokens if t.special]
    assert special and special[0].token == "<|im_end|>" and special[0].probability > 0.05

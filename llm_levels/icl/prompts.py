"""Prompt templates, few-shot example selection and reading a label out of a free-text answer.

A :class:`Template` turns (sentence, examples, labels) into chat :class:`~llm_levels.core.Message` s.
Chat models render them through their own chat template (never string surgery on template tokens);
models without one (Flan-T5 and other seq2seq or base models) get :meth:`Template.single_turn`, the
same prompt folded into one plain-text user message.

Templates:

- ``article``: the prompts of the seed article (Peixeiro, "Catch up on Large Language Models", 2023),
  which ran google/flan-t5-base on the Financial PhraseBank: the question "Is the following sentence
  positive, negative or neutral?" followed by the sentence; for one-shot the same question, an example
  sentence and its label come first. One user message, no system prompt.
- ``instruct``: a system prompt that defines each label for financial news and asks for one word; each
  example is a user turn (the sentence) answered by an assistant turn (the label).
- ``list``: the classic few-shot layout in one user message: the definitions, then ``Sentence: ...`` /
  ``Sentiment: ...`` pairs, ending with the sentence to classify.

Example selection (:func:`select_examples`) is balanced across labels, drawn only from the pool (never
from the evaluated rows), and deterministic for a given seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core import Message
from .data import Example

SENTIMENT = ("negative", "neutral", "positive")

#: The article's question, verbatim; its label order (positive, negative, neutral) is kept.
ARTICLE_QUESTION = "Is the following sentence positive, negative or neutral?"

#: What each sentiment label means in financial news (from an investor's point of view).
FINANCE_DEFINITIONS = {
    "positive": "good news for the company or its investors (profit, sales or orders up, a new contract, "
    "a raised forecast, an upgrade)",
    "negative": "bad news for the company or its investors (a loss, falling sales or profit, job cuts, "
    "a profit warning, a downgrade)",
    "neutral": "a plain fact with no good or bad news (who, where, when, what the company does)",
}


def or_list(words: Sequence[str]) -> str:
    """``a, b or c``."""
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _is_sentiment(labels: Sequence[str]) -> bool:
    return set(labels) == set(SENTIMENT)


def _label_order(labels: Sequence[str]) -> list[str]:
    # The sentiment labels in the order people (and the article) say them; others as given.
    return ["positive", "negative", "neutral"] if _is_sentiment(labels) else list(labels)


def _definitions(labels: Sequence[str]) -> str:
    lines = [f"- {lab}: {FINANCE_DEFINITIONS[lab]}" for lab in _label_order(labels) if lab in FINANCE_DEFINITIONS]
    return "\n".join(lines)


def _task(labels: Sequence[str]) -> str:
    if _is_sentiment(labels):
        return (
            "Classify the sentiment of a sentence from financial news, as an investor in the company "
            "would read it.\n" + _definitions(labels)
        )
    return f"Classify the sentence into one of these labels: {or_list(_label_order(labels))}."


@dataclass(frozen=True)
class Template:
    """A named way to ask for a label; :meth:`messages` builds the prompt for one sentence."""

    name: str
    title: str
    description: str
    build: Callable[[str, Sequence[Example], Sequence[str]], list[Message]]

    def messages(self, text: str, examples: Sequence[Example], labels: Sequence[str]) -> list[Message]:
        """The chat messages for classifying ``text`` after ``examples`` (may be empty)."""
        return self.build(text, examples, labels)

    def single_turn(self, text: str, examples: Sequence[Example], labels: Sequence[str]) -> list[Message]:
        """The same prompt as one plain user message, for models without a chat template (seq2seq).

        System text comes first; each example turn pair becomes ``<user text>`` + newline + ``<label>``.
        """
        msgs = self.build(text, examples, labels)
        if len(msgs) == 1:
            return msgs
        parts = [m.content for m in msgs]
        return [Message("user", "\n\n".join(parts))]


# -------------------------------------------------------------------------------------- the templates
def _article(text: str, examples: Sequence[Example], labels: Sequence[str]) -> list[Message]:
    question = ARTICLE_QUESTION if _is_sentiment(labels) else f"Is the following sentence {or_list(labels)}?"
    blocks = [f"{question}\n{e.text}\n{e.label}" for e in examples]
    blocks.append(f"{question}\n{text}")
    return [Message("user", "\n\n".join(blocks))]


def _instruct(text: str, examples: Sequence[Example], labels: Sequence[str]) -> list[Message]:
    system = _task(labels) + f"\nAnswer with one word: {or_list(_label_order(labels))}."
    msgs = [Message("system", system)]
    for e in examples:
        msgs.append(Message("user", f"Sentence: {e.text}"))
        msgs.append(Message("assistant", e.label))
    msgs.append(Message("user", f"Sentence: {text}"))
    return msgs


def _list(text: str, examples: Sequence[Example], labels: Sequence[str]) -> list[Message]:
    head = _task(labels) + f"\nAnswer with one word: {or_list(_label_order(labels))}."
    key = "Sentiment" if _is_sentiment(labels) else "Label"
    shots = "".join(f"Sentence: {e.text}\n{key}: {e.label}\n\n" for e in examples)
    return [Message("user", f"{head}\n\n{shots}Sentence: {text}\n{key}:")]


TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "article",
            "The article's prompts (verbatim)",
            "“Is the following sentence positive, negative or neutral?” then the sentence; examples are "
            "the same question with its answer. As the seed article ran it on Flan-T5.",
            _article,
        ),
        Template(
            "instruct",
            "Instruction + chat examples",
            "A system prompt defines each label for financial news and asks for one word; each example "
            "is a user turn answered by an assistant turn.",
            _instruct,
        ),
        Template(
            "list",
            "Instruction + Sentence/Sentiment list",
            "Definitions, then 'Sentence: … / Sentiment: …' pairs in one message, ending with "
            "'Sentiment:' for the model to complete.",
            _list,
        ),
    )
}
DEFAULT_TEMPLATE = "instruct"


def get_template(name: str) -> Template:
    from .data import data_error

    try:
        return TEMPLATES[name]
    except KeyError:
        raise data_error(f"Unknown template {name!r}: use one of {', '.join(TEMPLATES)}.") from None


# ---------------------------------------------------------------------------------- example selection
def select_examples(
    pool: Sequence[Example],
    k: int,
    labels: Sequence[str],
    seed: int,
    *,
    exclude: Sequence[Example] = (),
) -> list[Example]:
    """``k`` examples from ``pool``, balanced across ``labels`` (round-robin), deterministic for ``seed``.

    Rows whose text is in ``exclude`` (the evaluated rows) are never chosen, even if the pool holds a
    duplicate of them. Which label gets the extra example when ``k`` is not a multiple of the number of
    labels is drawn by the seed too, and the final order is shuffled so the last example (the one the
    model reads right before the question) is not always the same label.
    """
    if k <= 0:
        return []
    banned = {" ".join(e.text.split()).lower() for e in exclude}
    rng = random.Random(f"shots:{seed}:{k}")
    by_label: dict[str, list[Example]] = {lab: [] for lab in labels}
    seen: set[str] = set()
    for e in pool:
        key = " ".join(e.text.split()).lower()
        if e.label in by_label and key not in banned and key not in seen:
            by_label[e.label].append(e)
            seen.add(key)
    for lab in by_label:
        rng.shuffle(by_label[lab])
    available = sum(len(v) for v in by_label.values())
    if available < k:
        from .data import data_error

        raise data_error(f"The example pool has only {available} usable rows, fewer than the {k} shots asked for.")
    order = list(labels)
    rng.shuffle(order)
    chosen: list[Example] = []
    taken = {lab: 0 for lab in labels}
    while len(chosen) < k:
        for lab in order:
            if len(chosen) == k:
                break
            if taken[lab] < len(by_label[lab]):
                chosen.append(by_label[lab][taken[lab]])
                taken[lab] += 1
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------------------------------- answer parsing
#: Other words a model may use for the sentiment labels.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "positive": ("pos", "bullish", "favorable", "favourable", "optimistic", "upbeat", "good"),
    "negative": ("neg", "bearish", "unfavorable", "unfavourable", "pessimistic", "bad"),
    "neutral": ("neu", "neutrality", "objective", "factual"),
}
#: Words that make an answer invalid however it goes on ("neither positive nor negative").
REFUSALS = ("neither", "unclear", "cannot determine", "can't determine", "unknown", "not sure")
_NEGATORS = ("not", "no", "isn't", "isnt", "wasn't", "nor", "non")


def _variants(labels: Sequence[str]) -> list[tuple[str, str]]:
    """(surface word, label) pairs, longest first so 'non-positive' style overlaps resolve sensibly."""
    pairs = [(lab, lab) for lab in labels]
    for lab in labels:
        for syn in SYNONYMS.get(lab, ()):
            if syn not in labels:
                pairs.append((syn, lab))
    return sorted(pairs, key=lambda p: -len(p[0]))


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label a free-text answer gives, or ``None`` (invalid).

    Case and punctuation are ignored; synonyms count ("Bullish." -> positive); a negated mention
    ("not positive") does not count. The answer's first line is read first, then the rest. Within it,
    one distinct label (however often mentioned, negated mentions aside: ``"Positive. Not negative."``)
    wins; several distinct labels make the answer ambiguous (an echo of the question, "positive or
    negative") and invalid. "Neither", "unclear" and the like are invalid.
    """
    text = (answer or "").strip().lower()
    if not text:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    for chunk in (lines[0], " ".join(lines[1:])):
        verdict, label = _mentions(chunk, labels)
        if verdict == "label":
            return label
        if verdict in ("refused", "ambiguous"):
            return None
    return None


def _mentions(chunk: str, labels: Sequence[str]) -> tuple[str, str | None]:
    """("label", label) | ("refused", None) | ("ambiguous", None) | ("none", None) for one piece of text."""
    words = re.findall(r"\w[\w'\-]*", chunk)
    if not words:
        return "none", None
    joined = " ".join(words)
    if any(re.search(rf"\b{re.escape(r)}\b", joined) for r in REFUSALS):
        return "refused", None
    hits: list[tuple[int, str]] = []
    variants = _variants(labels)
    for i in range(len(words)):
        for surface, lab in variants:
            s_words = surface.split()
            if words[i : i + len(s_words)] == s_words:
                if not (i > 0 and words[i - 1] in _NEGATORS):
                    hits.append((i, lab))
                break
    if not hits:
        return "none", None
    if len({lab for _, lab in hits}) == 1:
        return "label", hits[0][1]
    return "ambiguous", None

"""Text from the outside made valid before it goes anywhere (see :func:`clean_text`)."""

from __future__ import annotations

import re
from typing import Any

# A lone surrogate (U+D800..U+DFFF; JSON can carry one as "\ud800") cannot be encoded as UTF-8: a
# tokenizer, a log line, Gradio's JSON encoder or an HTTP body holding one raises UnicodeEncodeError far
# from where the text came in. NUL ends a C string inside the engines, cutting the text silently. Other
# control characters are valid text and are kept exactly (a user may paste ANSI colours on purpose).
_INVALID = re.compile("[\ud800-\udfff\x00]")
#: What a lone surrogate becomes (U+FFFD, the replacement character, as a UTF-8 decoder shows bad bytes).
REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` made safe to tokenize, log and encode as UTF-8: a surrogate pair split in two code points
    becomes its character, each lone surrogate becomes U+FFFD, and NUL characters are removed. Valid text
    comes back unchanged (the same object), after one scan."""
    if not isinstance(text, str):
        text = str(text)
    if _INVALID.search(text) is None:
        return text
    text = text.replace("\x00", "")
    if _INVALID.search(text) is not None:  # surrogates: UTF-16 pairs them up, and replaces the lone ones
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def clean_value(value: Any, depth: int = 0, max_depth: int = 32) -> Any:
    """``value`` with :func:`clean_text` applied to every string inside lists, tuples and dict values (and
    dict keys), up to ``max_depth`` levels; anything else is returned as it is."""
    if isinstance(value, str):
        return clean_text(value)
    if depth >= max_depth:
        return value
    if isinstance(value, list):
        return [clean_value(v, depth + 1, max_depth) for v in value]
    if isinstance(value, tuple):
        return tuple(clean_value(v, depth + 1, max_depth) for v in value)
    if isinstance(value, dict):
        return {clean_value(k, depth + 1, max_depth): clean_value(v, depth + 1, max_depth) for k, v in value.items()}
    return value

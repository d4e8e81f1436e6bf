"""Low-level helpers for reading labelled files: decoding the bytes, guessing the format, checking a row.

Split out of :mod:`llm_levels.icl.data`, which still exports every name here.
"""

from __future__ import annotations

from pathlib import Path

MAX_LABEL_CHARS = 40


def decode(raw: bytes) -> str:
    """UTF-8 (with or without a BOM) when the bytes are valid UTF-8, else Latin-1 (the PhraseBank's encoding).

    A Latin-1 file that decodes as UTF-8 is plain ASCII, which reads the same either way.
    """
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def detect_format(content: str, source: str = "") -> str:
    """Guess the format: by the file extension, else by the first non-empty line."""
    suffix = Path(source).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    first = next((ln.strip() for ln in content.splitlines() if ln.strip()), "")
    if first.startswith(("{", "[")):
        return "jsonl"
    if "@" in first:
        label = first.rpartition("@")[2].strip()
        if label and " " not in label and len(label) <= MAX_LABEL_CHARS:
            return "phrasebank"
    return "csv"


def _check(text: str, label: str) -> str | None:
    """Why a (text, label) pair is unusable, or None."""
    if not text.strip():
        return "the text is empty"
    if not label.strip():
        return "the label is empty"
    if len(label.strip()) > MAX_LABEL_CHARS:
        return f"the label is longer than {MAX_LABEL_CHARS} characters (is a column or separator missing?)"
    if "\n" in label:
        return "the label spans several lines"
    return None


def _norm_label(label: str) -> str:
    return " ".join(label.split()).lower()

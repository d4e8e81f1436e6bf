"""Reading labelled files for the lab: CSV/TSV, JSONL, or the Financial PhraseBank format.

Every format yields :class:`Example` rows with the 1-based line number they came from. A line that
cannot be read is never dropped silently: it becomes a :class:`Problem` ("line 7: no '@' between the
sentence and the label") that the CLI prints and the Lab tab shows; ``strict=True`` turns problems into
a :class:`~llm_levels.core.BackendError`.

The Financial PhraseBank (Malo et al., 2014; CC BY-NC-SA 3.0, not shipped with this project) stores one
``sentence@label`` per line in Latin-1. The demo set that ships with the project
(``llm_levels/data/financial_demo*.csv``) is original text written for this project in the same style.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core import BackendError
from .formats import MAX_LABEL_CHARS, _check, _norm_label, decode, detect_format  # noqa: F401 - MAX_LABEL_CHARS re-exported

Format = Literal["auto", "csv", "jsonl", "phrasebank"]
FORMATS: tuple[str, ...] = ("auto", "csv", "jsonl", "phrasebank")

#: Column / key names recognised for the text and the label (case-insensitive), in order of preference.
TEXT_KEYS = ("text", "sentence", "sentences", "content", "headline", "review", "input")
LABEL_KEYS = ("label", "sentiment", "labels", "class", "category", "target", "output")

MAX_PROBLEMS_SHOWN = 10

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_EVAL = DATA_DIR / "financial_demo.csv"
DEMO_POOL = DATA_DIR / "financial_demo_pool.csv"
DEMO_NAME = "demo"


@dataclass(frozen=True)
class Example:
    """One labelled row: its text, its (lower-cased) label, and where it came from."""

    text: str
    label: str
    line: int = 0
    source: str = ""


@dataclass(frozen=True)
class Problem:
    """A line that could not be read, and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class LabelledData:
    """The rows read from one file, the label set, and the lines that were skipped (with reasons)."""

    examples: list[Example]
    source: str
    format: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(sorted({e.label for e in self.examples}))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.examples:
            out[e.label] = out.get(e.label, 0) + 1
        return dict(sorted(out.items()))

    def problem_summary(self) -> str:
        """One line naming the skipped lines (at most ten), or ``""``."""
        if not self.problems:
            return ""
        shown = "; ".join(str(p) for p in self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        return f"{self.source}: skipped {len(self.problems)} bad line(s): {shown}" + (
            f"; and {more} more" if more > 0 else ""
        )


def data_error(message: str) -> BackendError:
    return BackendError(message, kind="bad_request", status=400)


# ------------------------------------------------------------------------------------------- reading
def load_labelled(
    path: str | Path,
    fmt: str = "auto",
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    strict: bool = False,
) -> LabelledData:
    """Read a labelled file. ``fmt`` is ``auto`` (by extension, then by content), ``csv``, ``jsonl`` or
    ``phrasebank``. Raises :class:`BackendError` when the file is missing, empty, has no usable rows, or
    (with ``strict``) has any bad line."""
    p = Path(path)
    if not p.is_file():
        raise data_error(f"No file at {str(path)!r}: check the path.")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise data_error(f"Could not read {p.name}: {e.strerror or e}.") from e
    return parse_labelled(
        decode(raw), fmt, source=p.name, text_column=text_column, label_column=label_column, strict=strict
    )


def parse_labelled(
    content: str,
    fmt: str = "auto",
    *,
    source: str = "data",
    text_column: str | None = None,
    label_column: str | None = None,
    strict: bool = False,
) -> LabelledData:
    """Parse labelled text already in memory (see :func:`load_labelled`)."""
    if fmt not in FORMATS:
        raise data_error(f"Unknown format {fmt!r}: use one of {', '.join(FORMATS)}.")
    if not content.strip():
        raise data_error(f"{source} is empty.")
    if fmt == "auto":
        fmt = detect_format(content, source)
    if fmt == "phrasebank":
        examples, problems = _parse_phrasebank(content, source)
    elif fmt == "jsonl":
        examples, problems = _parse_jsonl(content, source, text_column, label_column)
    else:
        examples, problems = _parse_csv(content, source, text_column, label_column, tab=source.lower().endswith(".tsv"))
    data = LabelledData(examples, source, fmt, problems)
    if problems and strict:
        raise data_error(data.problem_summary())
    if not examples:
        detail = f" {data.problem_summary()}" if problems else ""
        raise data_error(f"{source} has no usable labelled rows ({fmt} format).{detail}")
    if len(data.labels) < 2:
        raise data_error(f"{source} has only one label ({data.labels[0]!r}): a classifier needs at least two.")
    return data


def _keep_row(examples: list[Example], problems: list[Problem], line: int, text: str, label: str, source: str) -> None:
    """Add a read (text, label) row to ``examples``, or to ``problems`` with the reason it is unusable.

    The last step of every format's parser, so all formats check and normalise rows the same way.
    """
    why = _check(text, label)
    if why:
        problems.append(Problem(line, why))
    else:
        examples.append(Example(text.strip(), _norm_label(label), line, source))


def _parse_phrasebank(content: str, source: str) -> tuple[list[Example], list[Problem]]:
    examples: list[Example] = []
    problems: list[Problem] = []
    for no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines carry no data
        if "@" not in line:
            problems.append(Problem(no, "no '@' between the sentence and the label"))
            continue
        # The label is after the *last* '@': sentences may contain '@' themselves.
        text, _, label = line.rpartition("@")
        _keep_row(examples, problems, no, text, label, source)
    return examples, problems


def _pick_key(keys: Sequence[str], wanted: str | None, candidates: tuple[str, ...], what: str, source: str) -> str:
    lower = {k.strip().lower(): k for k in keys if isinstance(k, str)}
    if wanted:
        if wanted in keys:
            return wanted
        if wanted.strip().lower() in lower:
            return lower[wanted.strip().lower()]
        raise data_error(f"{source} has no {what} column {wanted!r} (it has: {', '.join(map(str, keys))}).")
    for c in candidates:
        if c in lower:
            return lower[c]
    raise data_error(
        f"{source}: cannot tell which column holds the {what} (it has: {', '.join(map(str, keys))}). "
        f"Name it one of {', '.join(candidates)}, or pass --{what}-column."
    )


def _pick_columns(
    keys: Sequence[str], text_column: str | None, label_column: str | None, source: str
) -> tuple[str, str]:
    """The (text, label) column or key names among ``keys``: the ones asked for, else recognised names."""
    return (
        _pick_key(keys, text_column, TEXT_KEYS, "text", source),
        _pick_key(keys, label_column, LABEL_KEYS, "label", source),
    )


def _parse_csv(
    content: str, source: str, text_column: str | None, label_column: str | None, *, tab: bool = False
) -> tuple[list[Example], list[Problem]]:
    sample = content[:8192]
    if tab:
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(sample.splitlines()[0] if sample else "", delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as e:
        raise data_error(f"{source}: could not read the CSV header ({e}).") from None
    header = [h.strip() for h in header]
    t_key, l_key = _pick_columns(header, text_column, label_column, source)
    ti, li = header.index(t_key), header.index(l_key)
    examples: list[Example] = []
    problems: list[Problem] = []
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append(Problem(start, f"unreadable CSV ({e})"))
            last_line = reader.line_num
            continue
        last_line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(ti, li):
            problems.append(
                Problem(
                    start,
                    f"{len(row)} field(s), expected at least {max(ti, li) + 1} (is a quote or a delimiter missing?)",
                )
            )
            continue
        text, label = row[ti], row[li]
        _keep_row(examples, problems, start, text, label, source)
    return examples, problems


def _parse_jsonl(
    content: str, source: str, text_column: str | None, label_column: str | None
) -> tuple[list[Example], list[Problem]]:
    stripped = content.lstrip()
    if stripped.startswith("["):  # a JSON array of objects: accepted too, numbered by item
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise data_error(f"{source}: not valid JSON (line {e.lineno}: {e.msg}).") from e
        numbered: Iterable[tuple[int, object]] = enumerate(items, start=1)
    else:
        numbered = _jsonl_lines(content)
    examples: list[Example] = []
    problems: list[Problem] = []
    t_key = l_key = None
    for no, obj in numbered:
        if isinstance(obj, Problem):
            problems.append(obj)
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(no, "not a JSON object"))
            continue
        if t_key is None:
            t_key, l_key = _pick_columns(list(obj), text_column, label_column, source)
        if t_key not in obj or l_key not in obj:
            problems.append(Problem(no, f"missing {t_key!r} or {l_key!r}"))
            continue
        text, label = obj[t_key], obj[l_key]
        if not isinstance(text, str) or isinstance(label, (dict, list)) or label is None:
            problems.append(Problem(no, "the text must be a string and the label a string or number"))
            continue
        label = str(label)
        _keep_row(examples, problems, no, text, label, source)
    return examples, problems


def _jsonl_lines(content: str) -> Iterable[tuple[int, object]]:
    for no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield no, json.loads(line)
        except json.JSONDecodeError as e:
            yield no, Problem(no, f"not valid JSON ({e.msg})")


# --------------------------------------------------------------------------------- demo and splits
def load_demo() -> tuple[LabelledData, LabelledData]:
    """The demo set that ships with the project: (rows to evaluate, pool of few-shot examples).

    150 original sentences in the style of financial news (50 per label) and a separate pool of 36
    (12 per label); written for this project and licensed with it.
    """
    return load_labelled(DEMO_EVAL, "csv", strict=True), load_labelled(DEMO_POOL, "csv", strict=True)


def split_pool(data: LabelledData, per_label: int, seed: int) -> tuple[LabelledData, LabelledData]:
    """Split one file into (pool, eval): ``per_label`` rows of each label go to the pool, chosen by ``seed``.

    Used when no separate pool is given, so that few-shot examples never come from the evaluated rows.
    Each label keeps at least one row for evaluation.
    """
    rng = random.Random(f"pool-split:{seed}")
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(data.examples):
        by_label.setdefault(e.label, []).append(i)
    pool_idx: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label][:]
        rng.shuffle(idx)
        take = max(0, min(per_label, len(idx) - 1))
        pool_idx.update(idx[:take])
    pool = [e for i, e in enumerate(data.examples) if i in pool_idx]
    rest = [e for i, e in enumerate(data.examples) if i not in pool_idx]
    return (
        LabelledData(pool, data.source + " (pool split)", data.format),
        LabelledData(rest, data.source, data.format, list(data.problems)),
    )


def sample_eval(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """The rows to evaluate: all of them, or ``limit`` rows chosen by ``seed`` with every label kept in
    proportion (stratified), in the file's order."""
    if limit is None or limit <= 0 or limit >= len(examples):
        return list(examples)
    rng = random.Random(f"eval-sample:{seed}")
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_label.setdefault(e.label, []).append(i)
    n = len(examples)
    quotas = {lab: len(idx) * limit / n for lab, idx in by_label.items()}
    take = {lab: int(q) for lab, q in quotas.items()}
    # Hand out the remaining rows by largest remainder, ties broken by label name.
    rest = limit - sum(take.values())
    for lab in sorted(quotas, key=lambda lab: (-(quotas[lab] - take[lab]), lab))[:rest]:
        take[lab] += 1
    chosen: list[int] = []
    for lab in sorted(by_label):
        idx = by_label[lab][:]
        rng.shuffle(idx)
        chosen.extend(idx[: take[lab]])
    return [examples[i] for i in sorted(chosen)]

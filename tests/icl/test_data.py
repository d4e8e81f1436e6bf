"""Reading labelled files: each format, bad lines reported with their line number, the demo set."""

from __future__ import annotations

import pytest

from llm_levels.core import BackendError
from llm_levels.icl.data import load_demo, load_labelled, parse_labelled


def test_phrasebank_latin1_and_bad_lines(tmp_path):
    raw = (
        "Profit rose to EUR 5 mn .@positive\n"
        "The caf\xe9 chain employs 40 people .@neutral\n"
        "no separator on this line\n"
        "\n"
        "Sales fell by 10 % .@negative\n"
        "Empty label here@\n"
    ).encode("latin-1")
    f = tmp_path / "Sentences_AllAgree.txt"
    f.write_bytes(raw)
    data = load_labelled(f)
    assert data.format == "phrasebank"
    assert [(e.line, e.label) for e in data.examples] == [(1, "positive"), (2, "neutral"), (5, "negative")]
    assert "café" in data.examples[1].text
    assert [(p.line, p.message) for p in data.problems] == [
        (3, "no '@' between the sentence and the label"),
        (6, "the label is empty"),
    ]
    assert "line 3" in data.problem_summary() and "line 6" in data.problem_summary()
    with pytest.raises(BackendError, match="line 3"):
        load_labelled(f, strict=True)


def test_csv_columns_quotes_and_bad_line_numbers():
    content = (
        'id,sentence,sentiment\n'
        '1,"Profit, at last, rose",Positive\n'
        '2,A plain fact,neutral\n'
        '3\n'
        '4,"Sales fell",\n'
        '5,"Loss widened",negative\n'
    )
    data = parse_labelled(content, "csv", source="x.csv")
    assert [(e.line, e.text, e.label) for e in data.examples] == [
        (2, "Profit, at last, rose", "positive"),
        (3, "A plain fact", "neutral"),
        (6, "Loss widened", "negative"),
    ]
    assert [p.line for p in data.problems] == [4, 5]


def test_jsonl_and_auto_detection():
    content = (
        '{"text": "Profit rose", "label": "positive"}\n'
        '{"text": "Loss", "label": "negative"\n'
        '["not", "an", "object"]\n'
        '{"text": "A fact", "label": "neutral"}\n'
    )
    data = parse_labelled(content, "auto", source="upload")
    assert data.format == "jsonl"
    assert [e.line for e in data.examples] == [1, 4]
    assert [p.line for p in data.problems] == [2, 3]
    assert "not valid JSON" in data.problems[0].message


def test_errors_are_clear():
    with pytest.raises(BackendError, match="No file"):
        load_labelled("/nonexistent/file.csv")
    with pytest.raises(BackendError, match="only one label"):
        parse_labelled("text,label\na,x\nb,x\n", "csv")
    with pytest.raises(BackendError, match="cannot tell which column"):
        parse_labelled("foo,bar\na,x\n", "csv")


def test_demo_set_is_balanced_and_disjoint():
    ev, pool = load_demo()
    assert ev.counts() == {"negative": 50, "neutral": 50, "positive": 50}
    assert set(pool.counts()) == set(ev.counts())
    assert not {e.text.lower() for e in ev.examples} & {e.text.lower() for e in pool.examples}

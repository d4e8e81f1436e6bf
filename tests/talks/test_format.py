"""Talk files: the shipped talk parses; every kind of mistake names the file, the line and the field."""

from __future__ import annotations

import pytest

from llm_levels.talks import STEP_FIELDS, TABS, RehearsalStore, TalkError, load_talk, parse_talk, step_key, talk_names

GOOD = """\
title: T
steps:
  - title: "Level 2: temperature 0 vs 2"
    tab: api
    prompt: Hi
    temperatures: [0, 2]
    seed: 7
  - title: Lab
    tab: lab
"""


def test_the_shipped_talk_parses_and_follows_both_articles() -> None:
    talk = load_talk("default")
    assert "default" in talk_names()
    assert len(talk.steps) >= 10
    tabs = [s.tab for s in talk.steps]
    assert set(tabs) == set(TABS)  # every tab is visited
    titles = " | ".join(s.title for s in talk.steps)
    for needle in ("Level 1", "Level 2", "Level 3", "max_tokens = 1", "temperature 0 vs 2", "Lab"):
        assert needle in titles
    five = next(s for s in talk.steps if s.n == 5)
    assert five.params.max_new_tokens == 1
    assert any(s.examples and s.system for s in talk.steps)  # the few-shot system prompt
    assert talk.header(2) == "Step 3 of 12 — Level 2: temperature 0 vs 2"


def test_a_good_file_gives_typed_steps() -> None:
    talk = parse_talk(GOOD, "mine.yaml")
    assert talk.name == "mine" and talk.title == "T"
    first, lab = talk.steps
    assert first.temperatures == (0.0, 2.0) and first.params.seed == 7 and first.line == 3
    assert lab.shots == (0, 1, 3) and lab.prompt == ""


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (GOOD.replace("    seed: 7", "    temprature: 1"), 7, "temprature", "did you mean 'temperature'"),
        (GOOD.replace("    seed: 7", "    temperature: 3"), 7, "temperature", "between 0 and 2"),
        (GOOD.replace("    seed: 7", "    temperature: hot"), 7, "temperature", "must be a number"),
        (GOOD.replace("tab: api", "tab: slides"), 4, "tab", "must be one of"),
        (GOOD.replace("    prompt: Hi\n", ""), 3, "prompt", "is required"),
        (GOOD.replace("[0, 2]", "[0, 9]"), 6, "temperatures", "from 0 to 2"),
        (GOOD.replace("    seed: 7", "    n: 50"), 7, "n", "from 1 to 8"),
        (GOOD.replace("    seed: 7", "    examples: [hi]"), 7, "examples", "[user, assistant] pairs"),
        (
            GOOD.replace("  - title: Lab\n    tab: lab\n", "  - title: Lab\n    tab: lab\n    shots: [0, -1]\n"),
            10,
            "shots",
            "",
        ),
        (GOOD.replace('  - title: "Level 2: temperature 0 vs 2"\n', "  - \n"), None, None, ""),
        ("title: T\nsteps: []\n", 2, "steps", "at least one step"),
        ("title: T\nsteps:\n  - title: [unclosed\n", 3, None, "not valid YAML"),
        ("- just a list\n", 1, None, "a mapping"),
    ],
)
def test_a_mistake_names_the_line_and_the_field(text: str, line: int | None, field: str | None, words: str) -> None:
    with pytest.raises(TalkError) as err:
        parse_talk(text, "mine.yaml")
    e = err.value
    assert str(e).startswith("mine.yaml")
    if line is not None:
        assert e.line == line and f"line {line}" in str(e)
    if field is not None:
        assert e.field == field and f"field '{field}'" in str(e)
    assert words in str(e)


def test_a_talk_name_is_never_a_path(tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text(GOOD)
    assert load_talk("mine", tmp_path).title == "T"
    for bad in ("../default", "/etc/passwd", "a/b", ""):
        with pytest.raises(TalkError, match="not a talk name"):
            load_talk(bad, tmp_path)
    with pytest.raises(TalkError, match="no such talk"):
        load_talk("nope", tmp_path)


def test_every_step_field_is_documented_and_accepted() -> None:
    assert {"title", "tab", "prompt", "note", "temperature", "top_p", "max_tokens", "seed", "n"} <= set(STEP_FIELDS)


def test_rehearsal_records_follow_the_step_settings(tmp_path) -> None:
    store = RehearsalStore(tmp_path)
    talk = parse_talk(GOOD, "mine.yaml")
    step = talk.steps[0]
    assert store.lookup("mine", step) is None
    rec = store.record("mine", step, ["calm", "w1ld"], ["temperature 0", "temperature 2"], model="local")
    again = RehearsalStore(tmp_path).lookup("mine", step)
    assert again == rec and again.label.startswith("recorded at rehearsal, ")
    edited = parse_talk(GOOD.replace("prompt: Hi", "prompt: Hello"), "mine.yaml").steps[0]
    assert step_key(edited) != step_key(step) and store.lookup("mine", edited) is None
    (tmp_path / "mine.json").write_text("{not json")
    assert store.lookup("mine", step) is None  # an unreadable record is an empty one

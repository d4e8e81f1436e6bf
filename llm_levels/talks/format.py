"""Talk files: a presentation as a list of steps, written in YAML, checked with line-numbered errors.

A talk file looks like this (the shipped one is ``library/default.yaml``)::

    title: Three levels of using an LLM
    steps:
      - title: "Level 2: temperature 0 vs 2"      # the header shows "Step 3 of 12 — <title>"
        tab: compare                              # chat | api | local | compare | lab
        prompt: Name a colour.
        temperatures: [0, 2]                      # one answer per temperature, side by side
        max_tokens: 24
        note: |                                   # the speaker note (shown folded)
          Same prompt, same model: only the temperature changed.

Every field a step may have is in :data:`STEP_FIELDS` with its meaning. The generation settings
(``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``seed``, ``top_logprobs``) are checked against
the same ranges as the app's sliders. A mistake raises :class:`TalkError` naming the file, the line and the
field, and nothing else is touched.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..core import BackendError, GenParams

#: The tabs a step can show.
TABS = ("chat", "api", "local", "compare", "lab")

#: Most answers one step may ask for (``n`` samples, or a temperature sweep's columns).
MAX_ANSWERS = 8

#: Every field a step may have, and what it means (the talk-file reference in the README is built from this).
STEP_FIELDS: dict[str, str] = {
    "title": "what the header shows after 'Step i of n —' (required)",
    "tab": "the tab the step runs in: " + ", ".join(TABS) + " (required)",
    "prompt": "the user's message (required except on the lab tab)",
    "note": "the speaker note, shown in a folded panel",
    "backend": "where the answer comes from: local, local:transformers, app-endpoint or hosted:<name>",
    "backends": "compare: the backends answering side by side (default: every local engine)",
    "model": "api tab: the model id sent to the endpoint",
    "system": "a system prompt",
    "examples": "few-shot pairs before the prompt: a list of [user, assistant] pairs",
    "temperature": "sampling temperature, 0 (greedy) to 2",
    "temperatures": "compare: a temperature sweep, one answer per value (e.g. [0, 0.7, 1.5, 2])",
    "top_p": "nucleus sampling, 0.01 to 1",
    "top_k": "local engines: sample from the k most likely tokens (0: off)",
    "max_tokens": "the most tokens to generate",
    "seed": "fixes the random choices (n samples use seed, seed+1, ...)",
    "n": "how many answers to draw for the prompt, side by side (1 to 8)",
    "top_logprobs": "show each token's probability and this many alternatives (0 to 20)",
    "shots": "lab: the numbers of examples in the prompt to score, e.g. [0, 1, 3]",
}

_PARAM_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_new_tokens",
    "seed": "seed",
    "top_logprobs": "top_logprobs",
}
_TALK_FIELDS = {"title": "the talk's title (required)", "description": "one paragraph about it", "steps": "the steps"}


class TalkError(ValueError):
    """A mistake in a talk file: where (file, line, field) and what."""

    def __init__(self, source: str, line: int | None, where: str | None, problem: str) -> None:
        self.source, self.line, self.field, self.problem = source, line, where, problem
        place = source + (f", line {line}" if line else "") + (f", field '{where}'" if where else "")
        super().__init__(f"{place}: {problem}")


@dataclass(frozen=True)
class Step:
    """One step of a talk: where it runs, what it asks, with which settings, and what the speaker says."""

    title: str
    tab: str
    prompt: str = ""
    note: str = ""
    backend: str | None = None
    backends: tuple[str, ...] = ()
    model: str | None = None
    system: str | None = None
    examples: tuple[tuple[str, str], ...] = ()
    params: GenParams = field(default_factory=GenParams)
    temperatures: tuple[float, ...] = ()
    n: int = 1
    shots: tuple[int, ...] = ()
    line: int = 0

    def settings(self) -> dict[str, Any]:
        """The step's settings as plain values (what a rehearsal record is keyed on, what the page shows)."""
        return {
            "tab": self.tab,
            "prompt": self.prompt,
            "backend": self.backend,
            "backends": list(self.backends),
            "model": self.model,
            "system": self.system,
            "examples": [list(p) for p in self.examples],
            "params": self.params.to_dict(),
            "temperatures": list(self.temperatures),
            "n": self.n,
            "shots": list(self.shots),
        }


@dataclass(frozen=True)
class Talk:
    """A parsed talk file: its title, description and steps (at least one)."""

    name: str
    title: str
    steps: tuple[Step, ...]
    description: str = ""

    def header(self, index: int) -> str:
        """The presenter header for step ``index`` (0-based): ``Step 3 of 12 — Level 2: temperature 0 vs 2``."""
        return f"Step {index + 1} of {len(self.steps)} — {self.steps[index].title}"


def parse_talk(text: str, source: str = "talk") -> Talk:
    """Parse and check a talk file's text; :class:`TalkError` names the line and field of the first mistake."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if mark and e.context_mark and mark.line >= len(text.splitlines()):  # at the end: where it was opened
            mark = e.context_mark
        raise TalkError(source, mark.line + 1 if mark else None, None, f"not valid YAML: {e.problem}") from None
    except yaml.YAMLError as e:
        raise TalkError(source, None, None, f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise TalkError(source, 1, None, "a talk file is a mapping with 'title' and 'steps'")
    lines = _key_lines(node)
    _no_unknown(source, data, _TALK_FIELDS, lines, ())
    title = _text(source, data, "title", lines, (), required=True)
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise TalkError(source, lines.get(("steps",)), "steps", "a talk needs a list of at least one step")
    steps = tuple(_step(source, raw, lines, i) for i, raw in enumerate(steps_raw))
    name = source.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
    return Talk(name, title, steps, _text(source, data, "description", lines, ()))


def _key_lines(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """Each key's (and each list item's) 1-based line, by its path of keys and indexes."""
    out: dict[tuple, int] = {}
    if node is None:
        return out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            out.update(_key_lines(value, sub))
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_key_lines(item, (*path, i)))
    return out


def _no_unknown(source: str, data: Mapping, known: Mapping[str, str], lines: dict, path: tuple) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            raise TalkError(source, lines.get((*path, key)), str(key), "unknown field" + hint)


def _text(source: str, data: Mapping, key: str, lines: dict, path: tuple, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise TalkError(source, lines.get(path), key, "is required")
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise TalkError(source, lines.get((*path, key)), key, "must be text")
    return str(value)


def _step(source: str, raw: Any, lines: dict, i: int) -> Step:
    path: tuple = ("steps", i)
    if not isinstance(raw, dict):
        raise TalkError(source, lines.get(path), None, f"step {i + 1} must be a mapping of fields")
    _no_unknown(source, raw, STEP_FIELDS, lines, path)

    def at(key: str) -> int | None:
        return lines.get((*path, key), lines.get(path))

    def fail(key: str, problem: str) -> TalkError:
        return TalkError(source, at(key), key, problem)

    title = _text(source, raw, "title", lines, path, required=True)
    tab = _text(source, raw, "tab", lines, path, required=True)
    if tab not in TABS:
        raise fail("tab", f"must be one of {', '.join(TABS)} (got '{tab}')")
    prompt = _text(source, raw, "prompt", lines, path, required=tab != "lab")
    if tab != "lab" and not prompt.strip():
        raise fail("prompt", "must not be empty")
    params = _params(raw, fail)
    n = _int(raw.get("n", 1), "n", 1, MAX_ANSWERS, fail)
    temperatures = tuple(_number_list(raw, "temperatures", 0.0, 2.0, fail, float))
    if len(temperatures) > MAX_ANSWERS:
        raise fail("temperatures", f"at most {MAX_ANSWERS} values")
    shots = tuple(_number_list(raw, "shots", 0, 10, fail, int))
    if tab == "lab" and not shots:
        shots = (0, 1, 3)
    backends = tuple(_text_list(raw, "backends", fail))
    return Step(
        title=title,
        tab=tab,
        prompt=prompt,
        note=_text(source, raw, "note", lines, path),
        backend=_text(source, raw, "backend", lines, path) or None,
        backends=backends,
        model=_text(source, raw, "model", lines, path) or None,
        system=_text(source, raw, "system", lines, path) or None,
        examples=_examples(raw, fail),
        params=params,
        temperatures=temperatures,
        n=n,
        shots=shots,
        line=lines.get(path, 0),
    )


def _params(raw: Mapping, fail: Any) -> GenParams:
    values = {_PARAM_FIELDS[k]: raw[k] for k in _PARAM_FIELDS if k in raw}
    for key in _PARAM_FIELDS:  # check one at a time, so the error names the line of the bad one
        if key in raw:
            try:
                GenParams.from_dict({_PARAM_FIELDS[key]: raw[key]})
            except BackendError as e:
                raise fail(key, str(e).removeprefix("Invalid settings: ").rstrip(".")) from None
    return GenParams.from_dict(values)


def _int(value: Any, key: str, low: int, high: int, fail: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(key, f"must be a whole number from {low} to {high} (got {value!r})")
    return value


def _number_list(raw: Mapping, key: str, low: float, high: float, fail: Any, kind: type) -> list:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(key, "must be a list, e.g. [0, 1, 3]")
    out = []
    for v in value:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
        if not ok or not low <= v <= high:
            what = "whole numbers" if kind is int else "numbers"
            raise fail(key, f"must hold {what} from {low:g} to {high:g} (got {v!r})")
        out.append(kind(v))
    return out


def _text_list(raw: Mapping, key: str, fail: Any) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail(key, "must be a list of names")
    return list(value)


def _examples(raw: Mapping, fail: Any) -> tuple[tuple[str, str], ...]:
    value = raw.get("examples")
    if value is None:
        return ()
    pairs = []
    for pair in value if isinstance(value, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise fail("examples", "must be a list of [user, assistant] pairs of text")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)

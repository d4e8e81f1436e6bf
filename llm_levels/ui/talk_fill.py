"""Talk mode fills the step's tab: its message box and settings widgets show the step's prompt and settings.

A step still runs (and shows its answers) in the presenter panel; the tab it switches to shows the same
request in its own widgets, so the audience sees where each setting lives. Where a step has several columns
(a temperature sweep, ``n`` samples), the tab shows the first column's request, the one the presenter's
"request in Python" panel prints; a Compare step with a sweep or samples fills Compare's "Sampling side by
side" panel instead, which has a widget for each.

The widgets are found once, when the page is built, by ``elem_id`` or, for the few without one, by label
inside their tab (:class:`Spot`); a widget that is not found is left out (its tab still works, it is just
not filled). Nothing here runs a tab's own handlers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gradio as gr

from ..talks.format import Step
from ..talks.runner import LAB_ROWS, plan
from .talk_view import request_code

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import AppRuntime

Updates = dict[Any, Any]

#: A value a widget cannot show (e.g. a backend that is not in its list): the widget is left as it is.
SKIP = object()


@dataclass(frozen=True)
class Spot:
    """Where a widget is: its ``elem_id``, or its ``label`` (and type) inside ``within``, a tab's id or an
    enclosing block's ``elem_id``."""

    elem_id: str | None = None
    label: str | None = None
    within: str | None = None
    kind: type = gr.components.Component


def by_id(elem_id: str) -> Spot:
    return Spot(elem_id=elem_id)


def by_label(label: str, within: str, kind: type) -> Spot:
    return Spot(label=label, within=within, kind=kind)


#: A tab's token-probabilities slider beside its "Show token probabilities" box (``<tab>-tok-show``).
ALTERNATIVES = "alternatives per token (top_logprobs)"

#: Every widget a step may fill, by key ("<tab>.<setting>").
SPOTS: dict[str, Spot] = {
    "chat.prompt": by_id("chat-input"),
    "chat.backend": by_id("chat-backend"),
    "chat.max_tokens": by_label("Longest answer (tokens)", "chat", gr.Slider),
    "chat.tok_show": by_id("chat-tok-show"),
    "chat.tok_k": by_label(ALTERNATIVES, "chat", gr.Slider),
    "api.prompt": by_id("api-input"),
    "api.endpoint": by_id("api-endpoint"),
    "api.model": by_id("api-model"),
    "api.system": by_id("api-system"),
    "api.temperature": by_id("api-temperature"),
    "api.top_p": by_id("api-top-p"),
    "api.max_tokens": by_id("api-max-tokens"),
    "api.seed": by_id("api-seed"),
    "api.tok_show": by_id("api-tok-show"),
    "api.tok_k": by_label(ALTERNATIVES, "api", gr.Slider),
    "api.snippet": by_label("This request in Python (runs as is)", "api", gr.Code),
    "local.prompt": by_id("local-input"),
    "local.engine": by_id("local-engine"),
    "local.system": by_id("local-system"),
    "local.do_sample": by_id("local-do-sample"),
    # Made by local_layout.slider(), which takes no elem_id: found by their labels in the Local tab.
    "local.temperature": by_label("temperature", "local", gr.Slider),
    "local.top_k": by_label("top_k", "local", gr.Slider),
    "local.top_p": by_label("top_p", "local", gr.Slider),
    "local.max_tokens": by_id("local-max-new-tokens"),
    "local.seed": by_id("local-seed"),
    "local.tok_show": by_id("local-tok-show"),
    "local.tok_k": by_label(ALTERNATIVES, "local", gr.Slider),
    "compare.prompt": by_id("compare-prompt"),
    "compare.system": by_id("compare-system"),
    "compare.backends": by_id("compare-backends"),
    "compare.max_tokens": by_id("compare-max-tokens"),
    "compare.temperature": by_id("compare-temperature"),
    "compare.tok_show": by_id("compare-token-probs"),
    # Compare's "Sampling side by side" panel (sampling.py), for a sweep or n samples.
    "sampling.box": by_id("sampling-box"),
    "sampling.prompt": by_id("sampling-prompt"),
    "sampling.backend": by_id("sampling-backend"),
    "sampling.mode": by_label("Columns", "sampling-box", gr.Radio),
    "sampling.n": by_label("n (draws)", "sampling-box", gr.Slider),
    "sampling.temperatures": by_id("sampling-temps"),
    "sampling.temperature": by_label("Temperature (draws)", "sampling-box", gr.Slider),
    "sampling.seed": by_label("Seed", "sampling-box", gr.Number),
    "sampling.max_tokens": by_label("Max new tokens", "sampling-box", gr.Slider),
    "lab.shots": by_id("lab-shots"),
    "lab.limit": by_id("lab-limit"),
    "lab.method": by_label("Method", "lab", gr.Radio),
}


def step_values(step: Step, default_engine: str) -> dict[str, Any]:
    """What each widget of the step's tab should show (by :data:`SPOTS` key), before range checks."""
    if step.tab == "lab":
        return {"lab.shots": ",".join(str(k) for k in step.shots), "lab.limit": LAB_ROWS, "lab.method": "score"}
    first = plan(step)[0]
    p = first.params
    seed = "" if p.seed is None else str(p.seed)
    tokens: dict[str, Any] = {f"{step.tab}.tok_show": p.top_logprobs is not None}
    if p.top_logprobs:
        tokens[f"{step.tab}.tok_k"] = p.top_logprobs
    system = step.system or ""
    if step.tab == "chat":
        return {
            "chat.prompt": step.prompt,
            "chat.backend": first.option_id,
            "chat.max_tokens": p.max_new_tokens,
            **tokens,
        }
    if step.tab == "api":
        out: dict[str, Any] = {"api.prompt": step.prompt, "api.endpoint": first.option_id, "api.system": system}
        out |= {"api.temperature": p.temperature, "api.top_p": p.top_p, "api.max_tokens": p.max_new_tokens}
        return out | {"api.seed": seed, **tokens} | ({"api.model": first.model} if first.model else {})
    if step.tab == "local":
        engine = first.option_id.removeprefix("local:") if first.option_id.startswith("local:") else default_engine
        out = {"local.prompt": step.prompt, "local.engine": engine, "local.system": system}
        out |= {"local.do_sample": not p.greedy, "local.max_tokens": p.max_new_tokens, "local.seed": seed}
        out |= {"local.top_k": p.top_k, "local.top_p": p.top_p}
        # The slider starts at 0.05: greedy decoding is do_sample off, whatever the temperature says.
        return out | ({} if p.greedy else {"local.temperature": p.temperature}) | tokens
    return _compare_values(step)


def _compare_values(step: Step) -> dict[str, Any]:
    """Compare's own widgets for a step with backends; its sampling panel for a sweep or ``n`` samples."""
    first = plan(step)[0]
    if step.temperatures or step.n > 1:
        return {
            "sampling.box": True,  # the panel, open
            "sampling.prompt": step.prompt,
            "sampling.backend": first.option_id,
            "sampling.mode": "sweep" if step.temperatures else "samples",
            "sampling.temperatures": ", ".join(f"{t:g}" for t in step.temperatures),
            "sampling.n": step.n,
            "sampling.temperature": step.params.temperature,
            "sampling.seed": step.params.seed,
            "sampling.max_tokens": step.params.max_new_tokens,
        }
    return {
        "compare.prompt": step.prompt,
        "compare.system": step.system or "",
        "compare.backends": [p.option_id for p in plan(step)],
        "compare.max_tokens": step.params.max_new_tokens,
        "compare.temperature": step.params.temperature,
        "compare.tok_show": step.params.top_logprobs is not None,
    }


def _inside(block: Any, within: str) -> bool:
    parent = getattr(block, "parent", None)
    while parent is not None:
        if parent.elem_id == within or (isinstance(parent, gr.Tab) and parent.id == within):
            return True
        parent = getattr(parent, "parent", None)
    return False


def find(blocks: list[Any], spot: Spot) -> Any | None:
    """The first block at ``spot`` (in the order they were made), or None."""
    for b in blocks:
        if spot.elem_id is not None and b.elem_id == spot.elem_id:
            return b
        labelled = spot.label is not None and isinstance(b, spot.kind) and getattr(b, "label", None) == spot.label
        if labelled and (spot.within is None or _inside(b, spot.within)):
            return b
    return None


def _choice_ids(component: Any) -> set[Any]:
    return {c[1] if isinstance(c, tuple) else c for c in getattr(component, "choices", None) or []}


def _checked(component: Any, value: Any) -> Any:
    """``value`` as ``component`` can show it (a slider's range, a picker's choices), or :data:`SKIP`."""
    if isinstance(component, gr.Slider) and isinstance(value, (int, float)):
        return min(max(value, component.minimum), component.maximum)
    if isinstance(component, gr.CheckboxGroup):
        ids = _choice_ids(component)
        return [v for v in value if v in ids] or SKIP
    if isinstance(component, (gr.Dropdown, gr.Radio)) and not getattr(component, "allow_custom_value", False):
        return value if value in _choice_ids(component) else SKIP
    return value


@dataclass
class TabWidgets:
    """The widgets of every tab that a step fills, found on the page (:meth:`find_on`)."""

    runtime: Any = None
    widgets: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def find_on(cls, demo: gr.Blocks, runtime: AppRuntime) -> TabWidgets:
        """Look every :data:`SPOTS` widget up among ``demo``'s blocks (call once every tab is built)."""
        blocks = list(demo.blocks.values())
        found = {key: find(blocks, spot) for key, spot in SPOTS.items()}
        return cls(runtime, {key: c for key, c in found.items() if c is not None})

    @property
    def components(self) -> list[Any]:
        """Every widget found (a step's event outputs them all)."""
        return list(dict.fromkeys(self.widgets.values()))

    def updates(self, step: Step, only: tuple[str, ...] | None = None) -> Updates:
        """``{widget: value}`` showing ``step``'s prompt and settings in its tab (``only``: these keys)."""
        engine = self.runtime.settings.local_engine if self.runtime is not None else "llama.cpp"
        out: Updates = {}
        values = step_values(step, engine)
        if step.tab == "api" and self.runtime is not None:  # the tab's Python panel shows the step's request
            values["api.snippet"] = request_code(self.runtime, step)
        for key, value in values.items():
            component = self.widgets.get(key)
            if component is None or (only is not None and key not in only):
                continue
            if isinstance(component, gr.Accordion):
                out[component] = gr.Accordion(open=bool(value))
                continue
            shown = _checked(component, value)
            if shown is not SKIP:
                out[component] = gr.update(value=shown)
        return out

"""Export and import, for a tab with a conversation: Markdown and JSON (settings, seed, model, usage,
timings), the Python that replays it at the tab's level, and a saved JSON loaded back into the chat.

A tab calls :func:`build` with its conversation components and a function that says how its conversation
was made (:class:`Made`: backend, model, settings); the panel does the rest. Files are written to a fresh
temporary folder per export and handed to the browser as downloads; nothing holds an API key.

Events (``api_name``): ``<tab>_export``, ``<tab>_import``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from .. import history as H
from ..core import BackendError, GenParams
from ..replay import replay_script
from ..runtime import AppRuntime
from ..transcript import Transcript, history_messages, transcript_from_json


@dataclass(frozen=True)
class Made:
    """How a tab's conversation was made: where it went, which model, with what settings."""

    backend: str
    model: str
    params: GenParams = field(default_factory=GenParams)
    system: str | None = None
    base_url: str | None = None
    engine: str | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "conversation"


def export_files(
    runtime: AppRuntime, level: str, history: Sequence[Any], made: Made, turns: Sequence[dict] = ()
) -> list[str]:
    """Write ``conversation.md``, ``.json`` and ``replay.py`` for ``history``; their paths."""
    messages = history_messages(history)
    if not any(m.role == "user" for m in messages):
        raise BackendError("There is no conversation to export yet.", kind="bad_request")
    transcript = Transcript(
        level=level,
        backend=made.backend,
        model=made.model,
        messages=messages,
        params=made.params,
        system=made.system,
        base_url=made.base_url,
        engine=made.engine,
        turns=tuple(turns),
    )
    folder = Path(tempfile.mkdtemp(prefix="llm-levels-export-"))
    stem = f"{level}-{_slug(messages[0].content)}"
    paths = [folder / f"{stem}.md", folder / f"{stem}.json"]
    paths[0].write_text(transcript.to_markdown(), encoding="utf-8")
    paths[1].write_text(transcript.to_json(), encoding="utf-8")
    try:
        script = replay_script(runtime, transcript)
    except BackendError:
        script = ""  # nothing to replay yet (no question): the two files still help
    if script:
        paths.append(folder / f"{stem}-replay.py")
        paths[2].write_text(script, encoding="utf-8")
    return [str(p) for p in paths]


def import_history(path: str | None) -> list[dict[str, Any]]:
    """A saved transcript's messages as a chat history (what the tab shows and sends next)."""
    if not path:
        raise BackendError("Choose a .json file exported by this app.", kind="bad_request")
    data = Path(path).read_bytes()
    transcript = transcript_from_json(data)
    return H.from_messages(transcript.messages)


def build(
    runtime: AppRuntime,
    level: str,
    history: gr.State,
    shown: Sequence[Any],
    made: Callable[..., Made],
    made_inputs: Sequence[Any] = (),
) -> None:
    """The Export / import panel (inside the current block). ``shown`` are the components that display the
    conversation (its Chatbot): an import fills them and ``history``."""
    with gr.Accordion("Export / import this conversation", open=False, elem_id=f"{level}-export-box"):
        gr.Markdown(
            "Download the conversation as **Markdown** (to read) and **JSON** (settings, seed, model, usage, "
            "timings), and a **Python script** that replays it at this level. Load a saved JSON to continue it."
        )
        with gr.Row():
            export_btn = gr.Button("Export", elem_id=f"{level}-export")
            upload = gr.UploadButton("Import a saved JSON", file_types=[".json"], elem_id=f"{level}-import")
        files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id=f"{level}-export-files")

    def do_export(hist: list[dict[str, Any]], *values: Any) -> dict[Any, Any]:
        try:
            return {files: export_files(runtime, level, hist or [], made(*values))}
        except BackendError as e:
            gr.Warning(str(e))
            return {files: gr.skip()}

    def do_import(file: Any) -> dict[Any, Any]:
        path = getattr(file, "name", file)
        try:
            hist = import_history(path)
        except BackendError as e:
            gr.Warning(str(e))
            return {history: gr.skip()}
        return {history: hist, **{c: hist for c in shown}}

    export_btn.click(do_export, [history, *made_inputs], [files], api_name=f"{level}_export")
    upload.upload(do_import, [upload], [history, *shown], api_name=f"{level}_import")

"""Export / import of a tab's conversation: the three files, and a saved JSON restoring the chat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_levels import history as H
from llm_levels.config import Settings
from llm_levels.core import BackendError, GenParams
from llm_levels.runtime import AppRuntime
from llm_levels.ui.export_panel import Made, export_files, import_history

HIST = [H.user("Hi"), H.assistant("Hello!"), H.note("something failed"), H.user("Name a fruit."), H.assistant("Apple.")]


@pytest.fixture(scope="module")
def runtime() -> AppRuntime:
    return AppRuntime(Settings.from_env({"PRELOAD_MODEL": "false"}))


def test_export_writes_markdown_json_and_a_replay_script_and_import_restores(runtime) -> None:
    made = Made("app-endpoint", "local", GenParams(temperature=0.0, seed=4, max_new_tokens=16), system="Be brief.")
    md, js, py = export_files(runtime, "api", HIST, made)
    assert Path(md).read_text().startswith("# Conversation — api level") and "seed 4" in Path(md).read_text()
    data = json.loads(Path(js).read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant", "user", "assistant"]  # notes left out
    assert data["settings"]["seed"] == 4 and data["system"] == "Be brief." and data["model"] == "local"
    code = Path(py).read_text()
    compile(code, "replay", "exec")
    assert "Name a fruit." in code and "Apple." not in code
    restored = import_history(js)
    assert [H.role_of(m) for m in restored] == ["user", "assistant", "user", "assistant"]
    assert H.content_text(restored[-1]["content"]) == "Apple."


def test_nothing_to_export_and_a_bad_file_say_so(runtime, tmp_path) -> None:
    with pytest.raises(BackendError, match="no conversation"):
        export_files(runtime, "chat", [], Made("local", "m"))
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(BackendError, match="not a transcript"):
        import_history(str(bad))
    with pytest.raises(BackendError, match="Choose a .json"):
        import_history(None)

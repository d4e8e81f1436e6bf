"""Every example request in README.md answers sensibly on the embedded model, read from the README itself.

Each example — the ``/v1`` curl body, the ``openai`` client snippet, the local ``chat`` command lines — runs
five times against the real served app (``app_server``) or as the real command line, and each answer must
contain what a sensible answer to its prompt contains (:data:`SENSIBLE`). Only greedy examples are run
(``temperature`` 0): an example that samples fails here instead, as its answers could not be checked.
A new example prompt needs its entry in :data:`SENSIBLE`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.commands.test_chat_cli import local_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RUNS = 5
README_URL = "http://127.0.0.1:7860/v1"
#: prompt -> what each answer to it must contain (case-insensitive), in any order.
SENSIBLE = {
    "Name the capital of France.": ["paris"],
    "Name three primary colors.": ["red", "blue", "yellow"],
}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def check_answer(prompt: str, answer: str) -> None:
    assert prompt in SENSIBLE, f"README example prompt {prompt!r} has no entry in SENSIBLE"
    missing = [word for word in SENSIBLE[prompt] if word not in answer.lower()]
    assert not missing, f"{prompt!r} answered {answer!r}: no {missing}"


def curl_bodies() -> list[dict]:
    """The JSON bodies of the README's curl calls to /v1/chat/completions."""
    calls = [c for b in blocks("bash") for c in re.findall(r"curl (\S+)(.*?)-d '(\{.*?\})'", b, flags=re.S)]
    assert calls, "no curl example found in README.md"
    assert all(url == README_URL + "/chat/completions" for url, _h, _b in calls)
    return [json.loads(body) for _url, _h, body in calls]


def openai_snippets() -> list[str]:
    found = [b for b in blocks("python") if "OpenAI(" in b]
    assert found, "no openai client example found in README.md"
    return found


def local_chat_commands() -> list[list[str]]:
    """The README's ``chat --backend local`` command lines, as arguments after ``chat``."""
    out = []
    for line in "\n".join(blocks("bash")).replace("\\\n", " ").splitlines():
        if not line.startswith(".venv/bin/"):
            continue
        words = shlex.split(line, comments=True)
        if words[:2] == [".venv/bin/llm-levels", "chat"]:
            out.append(words[2:])
        elif words[:4] == [".venv/bin/python", "-m", "llm_levels", "chat"]:
            out.append(words[4:])
    local = [w for w in out if w[w.index("--backend") + 1] == "local"]
    assert local, "no local chat command found in README.md"
    return local


def option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


@pytest.mark.parametrize("body", curl_bodies(), ids=lambda b: b["messages"][-1]["content"])
def test_the_curl_example(app_server, body):
    assert body.get("temperature") == 0, "the curl example samples: make it greedy (\"temperature\": 0)"
    url = app_server.url + "v1/chat/completions"
    for _ in range(RUNS):
        req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.load(r)["choices"][0]["message"]["content"]
        check_answer(body["messages"][-1]["content"], answer)


@pytest.mark.parametrize("code", openai_snippets(), ids=lambda c: "openai-client")
def test_the_openai_client_example(app_server, code):
    assert re.search(r"temperature=0\b", code), "the openai example samples: make it greedy (temperature=0)"
    (prompt,) = re.findall(r'"content": "([^"]+)"', code)
    assert README_URL in code
    code = code.replace(README_URL, app_server.url + "v1")
    for _ in range(RUNS):  # run as written (in this process: the openai import once, not five times)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md", "exec"), {})
        check_answer(prompt, printed.getvalue())


@pytest.mark.parametrize("words", local_chat_commands(), ids=lambda w: option(w, "--engine") or "default engine")
def test_the_command_line_example(words):
    assert option(words, "--temperature") == "0", f"the example {words} samples: make it greedy (--temperature 0)"
    for _ in range(RUNS):
        p = subprocess.run(
            [sys.executable, "-m", "llm_levels", "chat", *words],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            env=local_env(),  # the defaults: no local-model overrides from this environment
        )
        assert p.returncode == 0, p.stderr
        answer = json.loads(p.stdout)["text"] if "--json" in words else p.stdout
        check_answer(option(words, "--prompt") or "", answer)

"""``make setup`` / ``make setup-dev`` (what ``make run`` and ``make test`` start with) show what they install
while they install: a line per step saying what and roughly how long, then pip's own lines as pip prints
them (not held back to the end, not silenced), and a note when pip goes quiet to unpack.

The real Makefile runs against a stand-in venv whose ``python`` acts as pip does: it prints like pip, with
pauses, and prints nothing with ``-q``. A real first setup takes minutes; this takes seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Stands in for ``$(VENV)/bin/python -m pip install ...``: pip's kind of output, slowly; -q silences it.
FAKE_PYTHON = """#!/bin/sh
case " $* " in *" -q "*) sleep 0.3; exit 0;; esac
echo "Requirement already satisfied: six in ./venv"
echo "Collecting pkg-a"
echo "  Downloading pkg_a-1.0-py3-none-any.whl (12.0 MB)"
sleep 1
echo "Installing collected packages: pkg-a"
sleep 1
echo "Successfully installed pkg-a-1.0"
"""


@pytest.fixture
def fake_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return venv


def timed_lines(cmd: list[str]) -> list[tuple[float, str]]:
    """Run ``cmd``; each line of its output with the second it arrived."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = [(time.monotonic() - t0, raw.decode().rstrip("\n")) for raw in iter(proc.stdout.readline, b"")]
    assert proc.wait(timeout=60) == 0, out
    return out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_setup_says_what_it_installs_and_shows_pips_progress_as_it_comes(fake_venv):
    lines = timed_lines(["make", "--no-print-directory", f"VENV={fake_venv}", "setup-dev"])
    text = [t for _s, t in lines]
    # A line per step (with its continuation lines): what, and roughly how long.
    steps = [i for i, t in enumerate(text) if re.match(r"(Step \d/3: |Installing the test tools)", t)]
    assert len(steps) == 4, text
    for i in steps:
        said = " ".join(text[i : i + 3]).split(str(fake_venv))[0]  # up to the echoed pip command
        assert re.search(r"\d+(\.\d+)? (to \d+(\.\d+)? )?(s|min)\b|a few seconds", said), said
    assert "requirements.txt" in text[steps[0]] and "torch" in text[steps[0]]
    # pip's own lines, as it prints them: the download line long before pip is done.
    collecting = [s for s, t in lines if t.startswith("Collecting pkg-a")]
    done = [s for s, t in lines if t.startswith("Successfully installed pkg-a")]
    assert len(collecting) == 3 and len(done) == 3, text  # requirements, the model, the test tools
    assert all(d - c >= 1.5 for c, d in zip(collecting, done)), lines
    # The quiet part is announced when it starts; packages already there are not listed one by one.
    notes = [i for i, t in enumerate(text) if t.startswith("  ... pip unpacks them now")]
    assert notes and all(text[i - 1].startswith("Installing collected packages") for i in notes), text
    assert not any(t.startswith("Requirement already satisfied") for t in text)
    assert "Setup done." in text

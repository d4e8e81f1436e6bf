"""The Lab tab, driven through gradio_client against the real running app (embedded model, llm-katan)."""

from __future__ import annotations

import json
import time

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

pytestmark = pytest.mark.slow

FIELDS = ("status", "table", "plot", "confusion", "per_class", "files", "examples")
KATAN = "hosted:OpenAI-compatible"


def args(
    file=None,
    fmt="auto",
    backend="local",
    method="score",
    template="list",
    shots="0,1",
    limit=6,
    seed=0,
    calibrate="batch",
    max_new=10,
) -> list:
    return [file, fmt, backend, method, template, shots, limit, seed, calibrate, max_new]


def run(client, **kw) -> dict:
    return dict(zip(FIELDS, client.predict(*args(**kw), api_name="/lab_run")))


def _paths(files) -> list[str]:
    items = files if isinstance(files, list) else [files]
    return [f if isinstance(f, str) else (f.get("path") or f.get("value")) for f in items]


def test_score_run_on_the_demo_set(app_server):
    out = run(app_server.client())
    assert "Done" in out["status"] and "12/12 rows" in out["status"]
    table = out["table"]
    rows = [dict(zip(table["headers"], r)) for r in table["data"]]
    assert [r["k"] for r in rows] == [0, 1] and all(r["n"] == 6 and r["invalid %"] == 0 for r in rows)
    assert out["plot"].count('class="k-tick"') == 2 and 'data-metric="accuracy"' in out["plot"]
    conf = out["confusion"]
    assert sum(sum(r[1:]) for r in conf["data"]) == 6  # one cell per evaluated row
    assert {r[0] for r in out["per_class"]["data"]} == {"negative", "neutral", "positive"}
    assert "k=1" in out["examples"]
    paths = _paths(out["files"])
    doc = json.loads(open(next(p for p in paths if p.endswith(".json"))).read())
    assert [r["shots"] for r in doc["runs"]] == [0, 1] and doc["runs"][0]["n"] == 6
    csv_text = open(next(p for p in paths if p.endswith(".csv"))).read()
    assert len(csv_text.strip().splitlines()) == 13


def test_score_refused_for_a_hosted_backend_and_bad_shots(app_server):
    client = app_server.client()
    with pytest.raises(AppError, match="score method"):
        run(client, backend=KATAN)
    with pytest.raises(AppError, match="whole numbers"):
        run(client, shots="one")


def test_generate_with_a_phrasebank_upload_via_the_hosted_api(app_server, tmp_path):
    f = tmp_path / "bank.txt"
    lines = [f"Sentence {i} on results .@{lab}" for i, lab in enumerate(["positive", "negative", "neutral"] * 2)]
    lines.insert(2, "broken line")
    f.write_bytes("\n".join(lines).encode("latin-1"))
    out = run(app_server.client(), file=handle_file(str(f)), backend=KATAN, method="generate", shots="0", limit=None)
    assert "line 3" in out["status"] and "Done" in out["status"]
    (row,) = [dict(zip(out["table"]["headers"], r)) for r in out["table"]["data"]]
    assert row["n"] == 6 and "generate" in out["status"]
    assert app_server.api_key not in json.dumps(out)


def test_stop_keeps_the_rows_done(app_server):
    client = app_server.client()
    job = client.submit(*args(shots="0,1,3,5", limit=None, template="instruct"), api_name="/lab_run")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        outs = job.outputs()
        if outs and "Running" in str(outs[-1][0]):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the run never reported progress")
    stopped = dict(zip(FIELDS, client.predict(api_name="/lab_stop")))
    assert "Stopped" in stopped["status"]
    (first, *_rest) = [dict(zip(stopped["table"]["headers"], r)) for r in stopped["table"]["data"]]
    done = int(str(first["n"]).split("/")[0])
    assert 0 < done < 150 and str(first["n"]).endswith("/150")
    doc = json.loads(open(next(p for p in _paths(stopped["files"]) if p.endswith(".json"))).read())
    assert doc["runs"][0]["n"] == done and doc["runs"][0]["complete"] is False


def test_generate_with_the_local_model_goes_through_the_turn_service(app_server):
    out = run(app_server.client(), method="generate", shots="0", limit=3, template="instruct", max_new=4)
    assert "Done" in out["status"] and "llama.cpp" in out["status"] and "3/3 rows" in out["status"]
    assert "left" not in out["status"]  # no "about 0 s left" once done
    (row,) = [dict(zip(out["table"]["headers"], r)) for r in out["table"]["data"]]
    assert row["n"] == 3 and "generate · template instruct" in out["status"]
    # One k is still drawn: its three bars, with k under them as a whole number.
    assert out["plot"].count('class="bar"') == 3 and '<text class="k-tick"' in out["plot"]


# ------------------------------------------------------------------ the generate method's ask, in-process
@pytest.fixture
def hosted_runtime(katan_echo, monkeypatch):
    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime

    monkeypatch.setenv("OPENAI_API_KEY", katan_echo.api_key)
    runtime = AppRuntime(
        Settings.from_env(
            {
                "OPENAI_BASE_URL": katan_echo.base_url,
                "OPENAI_MODEL": katan_echo.model,
                "OPENAI_API_KEY": katan_echo.api_key,
                "PRELOAD_MODEL": "false",
            }
        )
    )
    # Two requests per second per session, so the limit shows within the test.
    runtime.rate_limiter = type(runtime.rate_limiter)(2, window_s=1.0)
    return runtime


def test_a_lab_run_counts_once_against_the_session_limit(hosted_runtime):
    """The runtime allows 2 requests a minute per session here: a Lab run's rows are one request's work,
    so they are not counted one by one (the tab counts the run itself once, before it starts)."""
    from llm_levels.core import BackendError, GenParams, Message
    from llm_levels.ui.lab import LabRun, SessionAsk

    said: list[str] = []
    state = LabRun()
    ask = SessionAsk(
        hosted_runtime,
        KATAN,
        state,
        api_key=None,
        session_id=None,
        progress=lambda fraction, desc="": said.append(desc),
    )
    params = GenParams(temperature=0.0, max_new_tokens=8)
    answers = [ask([Message("user", f"say nonce-{i}")], params) for i in range(4)]
    assert all(f"nonce-{i}" in a for i, a in enumerate(answers))
    assert state.backend  # the backend's own name, from the turn's Started event
    hosted_runtime.rate_limiter.check("lab-session")
    hosted_runtime.rate_limiter.check("lab-session")
    with pytest.raises(BackendError, match="Too many requests"):
        hosted_runtime.rate_limiter.check("lab-session")  # a third run in the same minute is refused
    state.cancel.set()  # Stop: a row asked after it returns at once, without an answer
    t0 = time.monotonic()
    assert ask([Message("user", "more")], params) == "" and time.monotonic() - t0 < 3


def test_a_failed_turn_raises_its_one_error(hosted_runtime):
    from llm_levels.core import BackendError, GenParams, Message
    from llm_levels.ui.lab import LabRun, SessionAsk

    ask = SessionAsk(
        hosted_runtime, "hosted:nowhere", LabRun(), api_key=None, session_id="s", progress=lambda *a, **k: None
    )
    with pytest.raises(BackendError, match="No hosted endpoint named"):
        ask([Message("user", "hi")], GenParams(temperature=0.0, max_new_tokens=4))


def test_the_chart_and_a_discarded_run(tmp_path):
    import os
    import re

    from llm_levels.icl.runner import LabConfig, Progress, RowResult, RunResult
    from llm_levels.ui.lab import LabRun
    from llm_levels.ui.lab_chart import EMPTY, chart_html

    labels = ("negative", "neutral", "positive")
    runs = []
    for k in (3, 0):  # in the order of the shots box; the chart goes by k
        run = RunResult(k, "generate", "instruct", labels, [], 2, complete=True)
        run.rows = [RowResult(1, "a", "positive", "positive", "positive"), RowResult(2, "b", "neutral", None, "?")]
        runs.append(run)
    svg = chart_html(runs)
    assert re.findall(r'class="k-tick"[^>]*>(\d+)<', svg) == ["0", "3"]  # whole numbers, in k's order
    bars = re.findall(r'data-k="(\d+)" data-metric="([^"]+)" data-value="([\d.]+)" x="([\d.]+)"', svg)
    assert [(k, m) for k, m, _v, _x in bars] == [
        (k, m) for k in ("0", "3") for m in ("accuracy", "weighted F1", "macro F1")
    ]
    assert all(0 <= float(v) <= 1 for _k, _m, v, _x in bars)
    xs = [float(x) for *_rest, x in bars]
    assert xs == sorted(xs) and len(set(xs)) == 6  # side by side, never on top of each other
    runs[0].complete = False  # a run stopped early is marked as such under its k
    assert "(2/2 rows)" in chart_html(runs)
    assert EMPTY in chart_html([]) and "<svg" not in chart_html([])

    state = LabRun(source="demo", backend="fake", config=LabConfig(shots=(0, 3), method="generate"))
    state.progress = Progress(4, 4, 1.0, runs, finished=True)
    first, second = state.save(), state.save()
    assert first != second and all(os.path.exists(p) for p in first + second)
    LabRun.discard(state)  # what Gradio calls when the session's value expires
    assert state.cancel.is_set() and not any(os.path.exists(p) for p in first + second)
    LabRun.discard(None)

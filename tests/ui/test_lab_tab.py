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


def args(file=None, fmt="auto", backend="local", method="score", template="list", shots="0,1", limit=6, seed=0,
         calibrate="batch", max_new=10) -> list:
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
    plot = out["plot"]
    assert plot is not None and "accuracy" in json.dumps(plot)
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
    assert row["n"] == 6 and row["method"] == "generate"
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

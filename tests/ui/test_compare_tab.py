"""The Compare tab, driven through gradio_client against the real running app."""

from __future__ import annotations

import json
import time

import pytest
from gradio_client.exceptions import AppError

from llm_levels.ui.compare_layout import ADAPTER_COLUMNS
from tests.fixtures.app_server import APP_ENDPOINT, DEAD, KATAN, LOCAL

#: The other local engine (the same weights in transformers), offered but not ticked by default.
LOCAL_TRANSFORMERS = "local:transformers"

pytestmark = pytest.mark.slow

#: The app's backend options in picker order (the order of compare_run's answer outputs).
OPTIONS = [LOCAL, LOCAL_TRANSFORMERS, KATAN, DEAD, APP_ENDPOINT]
ROW_NAMES = {
    LOCAL: "Local model",
    LOCAL_TRANSFORMERS: "Local model · transformers",
    KATAN: "OpenAI-compatible",
    DEAD: "dead",
    APP_ENDPOINT: "App endpoint (/v1)",
}


def run(client, prompt, backends, *, max_tokens=8, temperature=0.0, system=""):
    return client.submit(prompt, system, max_tokens, temperature, backends, api_name="/compare_run")


def unpack(result):
    n = len(OPTIONS)
    answers = dict(zip(OPTIONS, result[:n]))  # then the columns kept for adapters (none here: empty)
    assert list(result[n:-4]) == [""] * ADAPTER_COLUMNS
    table, ttft, tps, status = result[-4:]
    return answers, table, ttft, tps, status


def test_every_column_and_the_table_fill_and_a_failure_stays_in_its_column(app_server):
    client = app_server.client()
    job = run(client, "Name one colour.", OPTIONS, system="Answer in a few words.")
    answers, table, ttft, tps, status = unpack(job.result(timeout=300))

    assert answers[KATAN].startswith("[echo] model=") and "messages=2 " in answers[KATAN]  # system + user
    assert answers[LOCAL].strip() and "▌" not in answers[LOCAL]
    # The same model behind two faces (in-process and the /v1 endpoint), greedy: the same first word. (Not
    # always every word: the two run at once, so some of their steps are decoded together, which rounds a
    # little differently from a request decoded alone.)
    assert answers[APP_ENDPOINT].split()[:1] == answers[LOCAL].split()[:1]
    # The same weights on the other engine (float32 transformers instead of llama.cpp's Q4_1 kernels): it
    # answers too, in its own column and row.
    assert answers[LOCAL_TRANSFORMERS].strip() and "Not answered" not in answers[LOCAL_TRANSFORMERS]
    assert "Not answered" in answers[DEAD] and "connect" in answers[DEAD].lower()

    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert set(rows) == set(ROW_NAMES.values())
    for opt in (LOCAL, LOCAL_TRANSFORMERS, KATAN, APP_ENDPOINT):
        row = rows[ROW_NAMES[opt]]
        assert float(row["TTFT (s)"]) > 0 and float(row["Total (s)"]) >= float(row["TTFT (s)"])
        assert int(row["In tokens"]) > 0 and int(row["Out tokens"]) > 0
    assert rows["Local model"]["Cost"] == rows["App endpoint (/v1)"]["Cost"] == "free (your hardware)"
    assert rows["OpenAI-compatible"]["Cost"] == "unknown"  # katan-echo has no price
    assert rows["OpenAI-compatible"]["Model"] == app_server.katan.model
    assert rows["dead"]["Finish"] == "error"
    assert rows["Local model · transformers"]["Cost"] == "free (your hardware)"
    assert {r[0] for r in ttft["data"]} == {ROW_NAMES[o] for o in (LOCAL, LOCAL_TRANSFORMERS, KATAN, APP_ENDPOINT)}
    assert all(v > 0 for _, v in tps["data"])
    assert status.startswith("Done")
    assert app_server.api_key not in json.dumps(job.outputs())

    # Concurrent, not one after another: the hosted answer was complete while the transformers column (it
    # loads on first use, seconds) was still waiting or streaming.
    n = len(OPTIONS)
    assert any(
        out[2].startswith("[echo]") and (out[1].startswith("⏳") or out[1].endswith("▌"))
        for out in job.outputs()[:-1]
        if len(out) > n
    )


def test_only_the_ticked_backends_run(app_server):
    answers, table, _, _, _ = unpack(run(app_server.client(), "hi", [KATAN]).result(timeout=120))
    assert answers[KATAN].startswith("[echo]") and answers[LOCAL] == answers[DEAD] == answers[APP_ENDPOINT] == ""
    assert [r[0] for r in table["data"]] == ["OpenAI-compatible"]


def test_input_is_checked_before_anything_runs(app_server):
    client = app_server.client()
    with pytest.raises(AppError, match="Type a prompt"):
        run(client, "  ", OPTIONS).result(timeout=60)
    with pytest.raises(AppError, match="Tick at least one"):
        run(client, "hi", []).result(timeout=60)
    with pytest.raises(AppError, match="greater than maximum"):  # the slider refuses it
        run(client, "hi", [KATAN], max_tokens=10**6).result(timeout=60)


def test_stop_stops_every_backend(app_server):
    client = app_server.client()
    job = run(client, "Tell a long story about the sea.", [LOCAL, KATAN], max_tokens=400, temperature=0.7)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until the local column streams
        outs = job.outputs()
        if outs and outs[-1][0].endswith("▌"):
            break
        time.sleep(0.1)
    job.cancel()
    t0 = time.monotonic()
    answers, table, _, _, _ = unpack(run(client, "Say yes.", [LOCAL], max_tokens=3).result(timeout=300))
    assert answers[LOCAL].strip()
    assert time.monotonic() - t0 < 60, "the stopped local generation kept the model busy"

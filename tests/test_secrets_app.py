"""Secrets and abuse on a public deployment, end to end through the running ``hardened_app``.

The app runs with ``PUBLIC_DEPLOYMENT=true`` and five recognisable fake keys (the main llm-katan key and one
per extra endpoint; see tests/fixtures/hardened_app.py). Every byte these tests get back is searched for
every key (and for a key a session types): the page HTML, ``/config``, ``/gradio_api/info``, the raw
server-sent events of Gradio's REST API for each event (answers, snippets, raw request/response JSON,
error notes), gradio_client outputs, error messages, and at the end the app's whole log. Servers that
quote the key back in their error bodies (llm-katan does on 401; our scripted server is told to) must
not get it through. Also checked: the SSRF guard on typed base URLs, downloads off, the public defaults.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from gradio_client.exceptions import AppError

from llm_levels import history as H
from tests.fixtures.hardened_app import EXTRA_KEYS, H_ERRORS, H_KATAN, H_SCRIPTED
from tests.fixtures.katan import Act

pytestmark = pytest.mark.slow

TYPED_KEY = "sk-test-SECRET-typed-9q8w7e6r5t"
SCRIPTED_KEY = EXTRA_KEYS["SCRIPTED_KEY"]


def secrets_of(app) -> list[str]:
    return [*app.secrets, TYPED_KEY]


def assert_clean(app, text: str, where: str) -> None:
    for key in secrets_of(app):
        assert key not in text, f"a key leaked in {where}"
        assert key[-12:] not in text, f"the end of a key leaked in {where}"


#: The token-probability inputs every send endpoint takes last (off): the REST API wants every input.
NO_PROBS = (False, 5)


def raw_event(app, api_name: str, data: list, timeout: float = 60) -> str:
    """Run an event through Gradio's REST API and return the raw server-sent-event text."""
    base = app.url.rstrip("/") + "/gradio_api/call/"
    r = httpx.post(base + api_name, json={"data": data}, timeout=timeout)
    assert r.status_code == 200, r.text
    event_id = r.json()["event_id"]
    with httpx.stream("GET", f"{base}{api_name}/{event_id}", timeout=timeout) as s:
        return "".join(s.iter_text())


# ------------------------------------------------------------------------------------------- pages
def test_page_config_and_api_description_hold_no_key(hardened_app):
    base = hardened_app.url.rstrip("/")
    for path in ("/", "/config", "/gradio_api/info", "/gradio_api/openapi.json", "/v1/models", "/theme.css"):
        r = httpx.get(base + path, timeout=30)
        assert_clean(hardened_app, r.text, path)
        assert_clean(hardened_app, json.dumps(dict(r.headers)), f"{path} headers")
    config = httpx.get(base + "/config", timeout=30).json()
    # gr.State (where a typed key lives) is never part of what the page gets.
    assert all(
        c.get("type") != "state" or c.get("props", {}).get("value") in (None, [], "") for c in config["components"]
    )


def test_every_event_output_is_free_of_keys(hardened_app):
    """Answers, snippets, raw JSON panels and error notes, as raw SSE bytes, for every endpoint."""
    srv = hardened_app.scripted
    # Servers that quote the key back: a 401 body and an error event inside a stream.
    srv.push(
        Act.status(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {SCRIPTED_KEY}. Authorization: Bearer {SCRIPTED_KEY}",
                    "type": "auth",
                }
            },
        )
    )
    texts = [raw_event(hardened_app, "chat_send", ["scripted 401", H_SCRIPTED, 16, *NO_PROBS])]
    srv.push(Act.events(Act.text_chunk("partial "), {"error": {"message": f"upstream failed for key {SCRIPTED_KEY}"}}))
    texts.append(raw_event(hardened_app, "chat_send", ["scripted error event", H_SCRIPTED, 16, *NO_PROBS]))
    srv.push(Act.status(500, f"proxy error: key={SCRIPTED_KEY}"))
    texts.append(
        raw_event(
            hardened_app,
            "api_send",
            ["scripted 500", H_SCRIPTED, "", "scripted-model", "", 0.0, 1.0, 16, "", True, *NO_PROBS],
        )
    )
    for backend in (H_KATAN, H_ERRORS):
        texts.append(raw_event(hardened_app, "chat_send", [f"hello {backend}", backend, 16, *NO_PROBS]))
        texts.append(
            raw_event(
                hardened_app,
                "api_send",
                [f"api {backend}", backend, "", "katan-echo", "sys", 0.5, 0.9, 16, "7", False, *NO_PROBS],
            )
        )
    texts.append(raw_event(hardened_app, "api_list_models", [H_KATAN, "", "katan-echo"]))
    texts.append(raw_event(hardened_app, "compare_run", ["compare", "", 16, 0.0, [H_KATAN, H_ERRORS], False]))
    texts.append(raw_event(hardened_app, "model_status", []))
    joined = "\n".join(texts)
    assert "event: complete" in joined and "User: hello hosted:OpenAI-compatible" in joined
    assert "rejected the API key" in joined  # the 401 was reported ...
    assert_clean(hardened_app, joined, "event outputs")  # ... without the key it quoted
    assert "Bearer sk-" not in joined


def test_a_typed_key_is_used_but_never_shown_or_logged(hardened_app):
    """A visitor's key: sent to the server (llm-katan checks it: wrong, so a real 401 that quotes it),
    never in any output, error or log line; another session never sees or uses it."""
    client, other = hardened_app.client(), hardened_app.client()
    field, status = client.predict(TYPED_KEY, api_name="/api_set_key")
    assert field == "" and TYPED_KEY not in status
    outs = [client.predict("with my key", H_KATAN, "", "katan-echo", "", 0.0, 1.0, 16, "", True, api_name="/api_send")]
    assert "401" in json.dumps(outs[0][0], ensure_ascii=False)
    outs.append(client.predict("chat with my key", H_KATAN, 16, api_name="/chat_send"))
    outs.append(client.predict("compare with my key", "", 16, 0.0, [H_KATAN], api_name="/compare_run"))
    with pytest.raises(AppError) as info:
        client.predict(H_KATAN, "", "katan-echo", api_name="/api_list_models")
    outs.append(str(info.value))
    # The other session still uses the operator's key and gets answers.
    out = other.predict("other session", H_KATAN, 16, api_name="/chat_send")
    assert "User: other session" in H.to_messages(out[0])[-1].content
    assert_clean(hardened_app, json.dumps(outs, ensure_ascii=False, default=str), "typed-key outputs")


def test_the_log_never_holds_a_key(hardened_app):
    """Runs after the tests above (file order): every line the app logged, for every key."""
    # A failing request whose server error quotes the key ...
    hardened_app.scripted.push(Act.status(401, {"error": {"message": f"bad key {SCRIPTED_KEY}"}}))
    hardened_app.client().predict("log me", H_SCRIPTED, 8, api_name="/chat_send")
    # ... and a refused event (gr.Error) whose chained cause quotes a typed key and the operator's key
    # (llm-katan's 401 says "got '<typed>', expected '<configured>'"): a refusal logs one line, no traceback.
    client = hardened_app.client()
    client.predict(TYPED_KEY, api_name="/api_set_key")
    with pytest.raises(AppError):
        client.predict(H_KATAN, "", "katan-echo", api_name="/api_list_models")
    time.sleep(0.5)
    log = hardened_app.log()
    assert "api_list_models: refused:" in log and "Traceback" not in log, log[-3000:]
    assert_clean(hardened_app, log, "the app log")


# -------------------------------------------------------------------------------------------- SSRF
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{app}/v1",  # the app's own OpenAI-compatible endpoint
        "http://localhost:{katan}/v1",
        "http://[::1]:{katan}/v1",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://10.0.0.7:8000/v1",
        "http://0.0.0.0:{katan}/v1",
        "http://2130706433:{katan}/v1",  # 127.0.0.1 as one integer
    ],
)
def test_a_typed_base_url_may_not_reach_private_addresses(hardened_app, katan_echo, url):
    url = url.format(katan=katan_echo.port, app=hardened_app.port)
    client = hardened_app.client()
    seen = katan_echo.count_log("POST /v1/chat/completions")
    t0 = time.monotonic()
    out = client.predict("ssrf?", "custom", url, "katan-echo", "", 0.0, 1.0, 8, "", True, api_name="/api_send")
    chat = out[0]
    note = chat[-1]
    assert H.is_note(note), chat
    text = H.content_text(note["content"])
    assert "ALLOW_PRIVATE_BASE_URL" in text or "not allowed" in text or "private" in text.lower(), text
    assert "\n" not in text.strip()
    assert time.monotonic() - t0 < 10
    assert katan_echo.count_log("POST /v1/chat/completions") == seen, "the request reached the server"
    assert_clean(hardened_app, json.dumps(out, ensure_ascii=False, default=str), "ssrf outputs")


def test_a_typed_base_url_never_gets_the_operators_key(hardened_app):
    """Typing the URL of an operator-configured endpoint (trusted: no SSRF check) as a custom base URL
    reaches it, but with a placeholder key, never the key configured for that endpoint."""
    srv = hardened_app.scripted
    before = len(srv.requests)
    client = hardened_app.client()
    out = client.predict("x", "custom", srv.base_url, "m", "", 0.0, 1.0, 8, "", True, api_name="/api_send")
    assert H.to_messages(out[0])[-1].content == "Hello, world"  # the scripted default answer
    (req,) = srv.requests[before:]
    assert req.headers["authorization"] == "Bearer not-needed"
    assert SCRIPTED_KEY not in json.dumps(req.headers)
    # The configured entry for the same server does send its key (the operator's choice).
    client.predict("y", H_SCRIPTED, 8, api_name="/chat_send")
    assert srv.requests[-1].headers["authorization"] == f"Bearer {SCRIPTED_KEY}"


# ---------------------------------------------------------------------------------- public defaults
def test_public_deployment_defaults_are_closed():
    """PUBLIC_DEPLOYMENT (or SPACE_ID) turns custom URLs, private targets and downloads off by default,
    and the Hosted-API tab then offers no custom base URL (built in-process, no model)."""
    import gradio as gr

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime
    from llm_levels.ui.app import build_ui

    for env in (
        {"PUBLIC_DEPLOYMENT": "true"},
        {"SPACE_ID": "someone/llm-levels"},
        {"SPACE_ID": "x/y", "GRADIO_SERVER_NAME": "0.0.0.0"},
    ):
        s = Settings.from_env(env)
        assert s.public and not s.allow_custom_base_url and not s.allow_private_base_url
        assert not s.allow_model_downloads
        assert s.max_new_tokens_cap == 1024 and s.max_prompt_chars == 20_000 and s.requests_per_minute == 30
    laptop = Settings.from_env({})
    assert laptop.allow_custom_base_url and laptop.allow_private_base_url and laptop.allow_model_downloads
    exposed = Settings.from_env({"GRADIO_SERVER_NAME": "0.0.0.0"})
    assert exposed.allow_custom_base_url and not exposed.allow_private_base_url

    demo = build_ui(AppRuntime(Settings.from_env({"PUBLIC_DEPLOYMENT": "true", "OPENAI_API_KEY": "sk-x" * 5})))
    endpoint = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Endpoint")
    assert "custom" not in [v for _, v in endpoint.choices]


def test_model_downloads_are_off_on_the_public_app(hardened_app):
    client = hardened_app.client()
    t0 = time.monotonic()
    with pytest.raises(AppError) as info:
        client.predict("Qwen/Qwen2.5-0.5B-Instruct", api_name="/local_load_model")
    msg = str(info.value)
    assert "Downloading new models is turned off" in msg and "ALLOW_MODEL_DOWNLOADS" in msg
    assert time.monotonic() - t0 < 20


def test_caps_hold_through_the_public_api(hardened_app):
    client = hardened_app.client()
    with pytest.raises(AppError, match="between 1 and 1024"):
        client.predict("hi", H_KATAN, 5000, api_name="/chat_send")
    with pytest.raises(AppError, match="too long"):
        client.predict("y" * 20_001, H_KATAN, 8, api_name="/chat_send")
    with pytest.raises(AppError, match="at most 1,024 new tokens|1024"):
        client.predict("hi", "", 5000, 0.0, [H_KATAN], api_name="/compare_run")

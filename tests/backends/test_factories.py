"""The backend factories: which key goes to which server."""

from llm_levels.backends import make_hosted
from llm_levels.config import HostedEndpoint, Settings

OPERATOR_KEY = "sk-operator-SECRET-0001"


def test_configured_url_gets_the_operators_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPERATOR_KEY)
    backend = make_hosted(Settings.from_env({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}))
    assert backend._api_key == OPERATOR_KEY


def test_session_typed_url_never_gets_the_operators_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPERATOR_KEY)
    monkeypatch.setenv("VLLM_KEY", OPERATOR_KEY)
    settings = Settings.from_env({})
    typed = "http://attacker.example/v1"
    assert make_hosted(settings, base_url=typed)._api_key is None
    endpoint = HostedEndpoint("vLLM", "http://127.0.0.1:9/v1", "m", "VLLM_KEY")
    assert make_hosted(settings, endpoint, base_url=typed)._api_key is None
    # The key the session typed itself does go along.
    assert make_hosted(settings, base_url=typed, api_key="sk-session-1")._api_key == "sk-session-1"

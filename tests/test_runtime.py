"""AppRuntime's shared services that are not covered elsewhere: the stream pacer, the line in front of each
local engine, the picker ids that name the engines, and the local backend each engine gets."""

from __future__ import annotations

import threading

import pytest

from llm_levels.runtime import StreamPacer


def test_one_stream_updates_at_the_base_rate_and_many_share_a_budget():
    pacer = StreamPacer(base=0.05, cap=0.5)
    assert pacer.interval() == 0.05 and pacer.active == 0
    with pacer.streaming():
        assert pacer.interval() == 0.05 and pacer.active == 1
        with pacer.streaming(), pacer.streaming(), pacer.streaming():
            assert pacer.active == 4
            assert abs(pacer.interval() - 0.2) < 1e-9  # 4 streams: each updates 5 times a second
        assert pacer.active == 1
    assert pacer.active == 0


def test_the_interval_is_capped_and_the_count_survives_errors_and_threads():
    pacer = StreamPacer(base=0.05, cap=0.5)
    try:
        with pacer.streaming():
            raise RuntimeError("a handler failed")
    except RuntimeError:
        pass
    assert pacer.active == 0
    inside, release = threading.Barrier(41), threading.Event()

    def stream():
        with pacer.streaming():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=stream) for _ in range(40)]
    for t in threads:
        t.start()
    inside.wait()
    assert pacer.active == 40 and pacer.interval() == 0.5
    release.set()
    for t in threads:
        t.join()
    assert pacer.active == 0


# ------------------------------------------------------------------------------------ the local engines
def runtime_for(**changes):
    from dataclasses import replace

    from llm_levels.config import Settings
    from llm_levels.runtime import AppRuntime

    return AppRuntime(replace(Settings.from_env({}), preload_model=False, **changes))


def test_one_line_per_engine_sized_by_its_setting():
    rt = runtime_for(local_concurrency=3, transformers_concurrency=2)
    assert set(rt.lines) == {"llama.cpp", "transformers"}
    assert (rt.lines["llama.cpp"].limit, rt.lines["transformers"].limit) == (3, 2)
    assert rt.line() is rt.line("llama.cpp") is rt.local_slots  # the default engine's line
    assert rt.line("transformers") is not rt.line("llama.cpp")
    rt = runtime_for(local_engine="transformers")
    assert rt.line() is rt.lines["transformers"] is rt.local_slots


def test_picker_ids_name_the_engines():
    rt = runtime_for()
    assert rt.engine_of("local") == "llama.cpp"
    assert rt.engine_of("local:llama.cpp") == "llama.cpp" and rt.engine_of("local:transformers") == "transformers"
    assert rt.engine_of("local:vllm") is None and rt.engine_of("hosted:OpenAI") is None
    assert rt.engine_of("app-endpoint") is None
    assert rt.local_option() == rt.local_option("llama.cpp") == "local"
    assert rt.local_option("transformers") == "local:transformers"
    ids = [o.id for o in rt.backend_options()]
    assert ids[:2] == ["local", "local:transformers"] and "local:llama.cpp" not in ids
    # With transformers as the default engine, "local" means transformers and llama.cpp gets its own id.
    rt = runtime_for(local_engine="transformers")
    assert rt.engine_of("local") == "transformers" and rt.local_option("llama.cpp") == "local:llama.cpp"
    assert [o.id for o in rt.backend_options()][:2] == ["local", "local:llama.cpp"]


def test_local_backend_on_each_engine_waits_in_its_own_line(tiny_causal_dir):
    from llm_levels.backends.local_hf import LocalBackend
    from llm_levels.core import BackendError, GenParams, Message

    rt = runtime_for(local_model=str(tiny_causal_dir), local_device="cpu", local_dtype="float32")
    backend = rt.local_backend(engine="transformers")
    assert isinstance(backend, LocalBackend) and backend.slots is rt.lines["transformers"]
    reply = backend.complete([Message("user", "hi")], GenParams(max_new_tokens=3, temperature=0))
    assert reply.usage.output_tokens <= 3 and rt.lines["transformers"].in_use == 0
    assert isinstance(rt.backend("local:transformers"), LocalBackend)
    # A model folder on llama.cpp (the default engine): a message that says which engine reads it.
    with pytest.raises(BackendError, match="transformers engine"):
        rt.local_backend()
    assert rt.models.status().state == "error" and rt.models.status(engine="transformers").state == "ready"


@pytest.mark.slow
def test_the_default_local_backend_is_llama_cpp_in_its_line():
    from llm_levels.backends.llama_cpp import LlamaCppBackend
    from llm_levels.core import GenParams, Message

    rt = runtime_for()
    backend = rt.backend("local")
    try:
        assert isinstance(backend, LlamaCppBackend) and backend.slots is rt.lines["llama.cpp"]
        assert rt.local_backend().loaded is backend.loaded  # loaded once, shared
        chunks = list(backend.stream([Message("user", "Say hello.")], GenParams(max_new_tokens=4, temperature=0)))
        assert chunks[-1].usage.output_tokens <= 4 and rt.lines["llama.cpp"].in_use == 0
        assert rt.models.loaded() == [backend.loaded]
    finally:
        backend.loaded.close()

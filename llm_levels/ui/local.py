"""Level 3, the Local model tab: a model running inside this app on the engine the user picks, with every knob.

Two engines (:mod:`llm_levels.engine`): llama.cpp (the default, ``xllamacpp`` on the GGUF file as is)
and ``transformers`` (the code this level teaches; loaded on first use, never at start). The model (the
embedded default, a GGUF or model folder, or a Hub id) is loaded here, on this machine; the tab shows
which engine runs it and how (llama.cpp: weight type, threads, slots, context per request;
transformers: device, dtype, parameters), the sampling settings (do_sample, temperature, top_k, top_p,
repetition penalty, max new tokens, seed), and, beside the chat, what the model really reads: the prompt
rendered by the chat template, its tokens with their ids, the Python for the engine that answered
(``xllamacpp`` or plain ``transformers``), and per turn TTFT, decode speed and memory.

Events (``api_name``): ``local_send``, ``local_retry``, ``local_undo``, ``local_clear``,
``local_load_model``, ``local_render_prompt``. The engine is the last API parameter of send, retry,
render and load (``"llama.cpp"`` or ``"transformers"``; left out, the app's default ``LOCAL_ENGINE``), so
clients written before it existed keep working. Stop cancels a running send/retry. Send and retry run
in the tab's own Gradio lane and wait for the model in the engine's line (``runtime.line(engine)``, shared
with Chat, Compare, the Lab and ``/v1``), showing their place there ("N ahead of you"); a model that is
not loaded yet shows its loading progress in the chat instead.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

import gradio as gr
import pandas as pd

from .. import history as H
from .. import inspect as I
from ..core import PARAM_SPECS, BackendError, GenParams
from ..engine import ENGINES, LLAMA_CPP, TRANSFORMERS
from ..runtime import AppRuntime
from ..snippets import local_snippet
from .shared import (WAIT_POLL_S, BackendOpener, chat_panel, checked_slider, lane, local_queue,
                     model_status_fields)

log = logging.getLogger(__name__)


ABOUT = """
**Level 3 — the model on your own machine.** The weights are downloaded once and run here: nothing
leaves this computer, nothing is billed, and every step is open — the chat template that turns messages
into one prompt, the tokens the model reads, each sampling knob. Two engines run the same model:
**llama.cpp** reads the quantized GGUF file as is and is fast on a CPU; Hugging Face **transformers**
is the Python most tutorials use (here it turns the GGUF into float32 weights the first time, which
takes a while). The *Python* panel shows the code for the engine that answered. The price is effort
and hardware: small models that fit a laptop are slower and much less capable than the hosted ones.
"""

ENGINE_INFO = "llama.cpp: fast on a CPU. transformers: the tutorials' Python (loads on first use)."

SAMPLING_INFO = "Off: greedy decoding (always the most likely token; temperature, top-k and top-p are ignored)."


def build(runtime: AppRuntime, session: Any) -> None:
    """Build the Local model tab inside the current ``gr.Tab``."""
    settings = runtime.settings
    cap = settings.max_new_tokens_cap
    P = PARAM_SPECS

    # ------------------------------------------------------------------ layout
    with gr.Accordion("About this level", open=False):
        gr.Markdown(ABOUT)
    state = gr.State([])                      # the exact conversation (history.py dicts)
    rows = gr.State([])                       # metric rows of this session's turns
    spec_state = gr.State(settings.local_model)  # the model this session talks to
    default_engine = settings.local_engine
    with gr.Row():
        with gr.Column(scale=5):
            chatbot, textbox, send_btn, stop_btn, retry_btn, undo_btn, clear_btn, metrics_md, extra = chat_panel(
                "local", label="Conversation (the model runs in this app)",
                placeholder="### Level 3: your own model\nEverything runs here, in the open.",
                extra_buttons=["Show the prompt"])
            render_btn = extra[0]
            with gr.Accordion("Model", open=True):
                with gr.Row(equal_height=True):
                    # The session's engine: a value of this page (and the last API parameter of each event).
                    engine_radio = gr.Radio(list(ENGINES), value=default_engine, label="Engine", scale=3,
                                            info=ENGINE_INFO, elem_id="local-engine")
                    model_box = gr.Textbox(
                        value=settings.local_model, label="Model", scale=4,
                        info="'embedded' (SmolLM2-135M-Instruct, offline), a local folder or a Hub id"
                             + ("" if settings.allow_model_downloads else " already on this machine (downloads are off)")
                             + ".")
                    load_btn = gr.Button("Load", scale=1, min_width=90)
                model_info = gr.Markdown(_model_info(runtime, settings.local_model, default_engine),
                                         elem_id="local-model-info")
                # Keeps the line above current while the model loads at start-up (then stops polling).
                info_timer = gr.Timer(1.0)
            with gr.Accordion("Sampling", open=True):
                system = gr.Textbox(label="System prompt", lines=2, max_lines=6,
                                    placeholder="e.g. You are a helpful assistant.",
                                    info="Becomes the first message; the chat template decides how the model sees it.")
                with gr.Row():
                    do_sample = gr.Checkbox(value=False, label="do_sample", info=SAMPLING_INFO)
                    max_new = checked_slider(P["max_new_tokens"].minimum, cap, value=min(128, cap), step=1,
                                        label="max_new_tokens", info=P["max_new_tokens"].description)
                with gr.Row():
                    temperature = _slider("temperature", P, minimum=0.05)
                    top_k = _slider("top_k", P, maximum=200)
                with gr.Row():
                    top_p = _slider("top_p", P)
                    rep = _slider("repetition_penalty", P)
                # A text box, not gr.Number: a number field cannot be left empty (= random) in the browser.
                seed = gr.Textbox(value="", label="seed", placeholder="empty = random",
                                  info=P["seed"].description + " Used only with do_sample.")
        with gr.Column(scale=4):
            gr.Markdown("### Under the hood")
            with gr.Tabs():
                with gr.Tab("Prompt"):
                    prompt_code = gr.Code("", language=None, label="What the model reads (chat template applied)",
                                          max_lines=30, wrap_lines=True, buttons=["copy"])
                with gr.Tab("Tokens"):
                    tokens_md = gr.Markdown("Send a message (or press *Show the prompt*) to see its tokens.")
                    tokens_view = gr.HighlightedText(value=[], label="Prompt tokens (piece · id)",
                                                     show_legend=False, show_inline_category=True,
                                                     combine_adjacent=False)
                with gr.Tab("Python"):
                    snippet = gr.Code("", language="python",
                                      label="The same call in plain Python, on the engine that answered",
                                      max_lines=40, wrap_lines=True, buttons=["copy", "download"],
                                      elem_id="local-snippet")
                with gr.Tab("Metrics"):
                    table = gr.Dataframe(pd.DataFrame(columns=I.LOCAL_METRIC_COLUMNS),
                                         headers=I.LOCAL_METRIC_COLUMNS, label="Per turn", interactive=False,
                                         wrap=True)
                    gr.Markdown("TTFT = time to first token (reading the prompt). Tokens/s = decode speed after "
                                "the first token. RSS = memory of the whole app process; CUDA = GPU memory held "
                                "by torch. Cost: free (your hardware).", elem_classes="turn-metrics")

    # ------------------------------------------------------------------ helpers
    def params_from(sample: bool, temp: float, topk: float, topp: float, repp: float, max_tokens: float,
                    seed_value: Any) -> dict[str, Any]:
        """Raw values for GenParams.from_dict (which coerces and checks them); do_sample off = greedy."""
        return {"temperature": temp if sample else 0.0, "top_k": topk, "top_p": topp,
                "repetition_penalty": repp, "max_new_tokens": max_tokens, "seed": seed_value}

    def checked(p: dict[str, Any]) -> dict[str, Any]:
        """Validate before anything changes on screen: a bad value is an input error, nothing is lost."""
        try:
            GenParams.from_dict(p)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        return p

    def under_the_hood(backend: Any, messages: list, params: GenParams) -> tuple[str, Any, str, str]:
        """The rendered prompt, its tokens (view + summary) and the code for the backend's engine."""
        prompt = backend.prepare(messages, params.max_new_tokens)
        pairs, summary = I.token_view(_prompt_tokens(backend, prompt))
        if prompt.truncated_turns:
            summary += (f" The {prompt.truncated_turns} oldest turn(s) were left out to fit the model's "
                        "context window.")
        return prompt.text, pairs, summary, local_snippet(backend, messages, params, settings, prompt)

    def engine_of(value: Any) -> str:
        """The engine an event asked for; left out (an API client from before the engine existed): the default."""
        engine = (value or "").strip() if isinstance(value, str) else ""
        if not engine:
            return default_engine
        if engine not in ENGINES:
            raise gr.Error(f"Unknown engine {engine!r}: pick {' or '.join(ENGINES)}.")
        return engine

    # ------------------------------------------------------------------ handlers
    def answer(hist: list, spec: str, engine: str, system_prompt: str, p: dict[str, Any], table_rows: list,
               request: gr.Request | None, *, clear_input: bool) -> Iterator[tuple]:
        skip = gr.skip()
        wait = H.note("…", title=H.WAIT_TITLE, pending=True)
        yield (hist + [wait], hist, ("" if clear_input else skip)) + (skip,) * 8
        measured = None
        opener = None
        cancel = threading.Event()
        try:
            messages = H.to_messages(hist, system=system_prompt)
            params = runtime.check_request(request.session_hash if request else None, messages, p)
            # Loads the model on this engine if needed (its progress shows in the chat), then waits for
            # its turn in that engine's line; another engine's requests never wait for this load.
            opener = BackendOpener(runtime, runtime.local_option(engine), spec=spec, engine=engine)
            while not opener.wait(WAIT_POLL_S):  # each yield is also a point where Stop can end this
                note = H.note(opener.progress_text(), title=opener.progress_title(), pending=True)
                yield (hist + [note],) + (skip,) * 10
            backend = opener.result()
            info = _info(backend)
            from ..metrics import measure

            measured = measure(backend.stream(messages, params, cancel), backend=backend.name,
                               model=f"{backend.model} · {backend.engine}")
            panels = None
            with runtime.pacer.streaming() as pace:
                for _ in measured:
                    if pace.due():
                        turn = hist + [H.assistant(measured.text)]
                        yield (turn, turn) + (skip,) * 9
                    if panels is None and measured.text:
                        # Filled after the first token is on screen, so tokenizing and rendering them never
                        # delays it (the model keeps decoding in its own thread meanwhile).
                        panels = under_the_hood(backend, messages, params)
                        text, pairs, summary, code = panels
                        yield skip, skip, skip, skip, text, summary, pairs, code, skip, skip, info
            if panels is None:
                text, pairs, summary, code = under_the_hood(backend, messages, params)
            done = H.answered(hist, measured.text)
            mt = measured.metrics
            mem = I.memory_snapshot(backend.loaded.device)
            new_rows = list(table_rows or []) + [I.local_metrics_row(len(table_rows or []) + 1, mt, mem)]
            line = (f"**{backend.name}** on **{backend.loaded.label}** · {mt.summary()} · {_memory_text(mem)} · "
                    "free (your hardware)")
            # The last update repeats every panel, so an API client's final result holds all of them.
            yield (done, done, skip, line, text, summary, pairs, code,
                   pd.DataFrame(new_rows, columns=I.LOCAL_METRIC_COLUMNS), new_rows, info)
        except BackendError as e:
            partial = (measured.text if measured is not None else "") or e.partial_text
            failed = H.with_partial(hist, partial) + [H.note(str(e), title=H.ERROR_TITLE, log=e.kind)]
            yield (failed, failed, skip, f"not answered ({e.kind})") + (skip,) * 7
        except Exception as e:  # a bug, not a backend failure: keep the conversation on screen
            log.exception("local turn failed")
            failed = H.app_failure(hist, e, measured.text if measured is not None else "")
            yield (failed, failed, skip, "") + (skip,) * 7
        finally:
            cancel.set()  # Stop (Gradio closes this generator) lands here: the generate thread ends
            if measured is not None:
                measured.close()
            if opener is not None:
                opener.close()  # out of the line if it was still waiting (a stopped request never starts)

    def send(text: str, spec: str, system_prompt: str, sample: bool, temp: float, topk: float, topp: float,
             repp: float, max_tokens: float, seed_value: Any, engine: Any, hist: list, table_rows: list,
             request: gr.Request) -> Iterator[tuple]:
        """Send a message to the local model on the chosen engine and stream the answer; fills prompt,
        tokens, code, metrics."""
        if not (text or "").strip():
            raise gr.Error("Type a message first.")
        engine = engine_of(engine)
        base = H.without_pending(hist or [])
        p = checked(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        yield from answer(base + [H.user(text)], spec, engine, system_prompt, p, table_rows, request,
                          clear_input=True)

    def retry(spec: str, system_prompt: str, sample: bool, temp: float, topk: float, topp: float, repp: float,
              max_tokens: float, seed_value: Any, engine: Any, hist: list, table_rows: list,
              request: gr.Request) -> Iterator[tuple]:
        """Answer the last message again, on the engine chosen now (with sampling on, a new seed gives a new
        answer)."""
        engine = engine_of(engine)
        base = H.for_retry(H.without_pending(hist or []))
        if not base:
            raise gr.Error("Nothing to retry yet: send a message first.")
        p = checked(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
        yield from answer(base, spec, engine, system_prompt, p, table_rows, request, clear_input=False)

    def undo(hist: list) -> tuple:
        rest, text = H.undo(H.without_pending(hist or []))
        return rest, rest, text

    def clear() -> tuple:
        return [], [], "", "", "", "", [], pd.DataFrame(columns=I.LOCAL_METRIC_COLUMNS), []

    def load(spec_text: str, engine: Any, progress: gr.Progress = gr.Progress()) -> tuple[str, str]:
        """Load a model (embedded, folder or Hub id) on the chosen engine for this session; shows progress
        while it loads."""
        spec_text = (spec_text or "").strip()
        if not spec_text:
            raise gr.Error("Type a model: 'embedded', a folder or a Hub id.")
        engine = engine_of(engine)
        progress(0.0, desc=f"Loading {spec_text} on {engine}")
        try:
            runtime.models.get(spec_text, progress=lambda f, msg: progress(f, desc=msg), engine=engine)
        except BackendError as e:
            raise gr.Error(str(e)) from e
        return spec_text, _model_info(runtime, spec_text, engine)

    def render(text: str, spec: str, system_prompt: str, sample: bool, temp: float, topk: float, topp: float,
               repp: float, max_tokens: float, seed_value: Any, engine: Any, hist: list,
               progress: gr.Progress = gr.Progress()) -> tuple:
        """The prompt the model would read for this conversation plus the text box (nothing is generated),
        on the chosen engine (loading the model there first if needed, with its progress)."""
        engine = engine_of(engine)
        base = H.without_pending(hist or [])
        if (text or "").strip():
            base = base + [H.user(text)]
        messages = H.to_messages(base, system=system_prompt)
        if not messages:
            raise gr.Error("Type a message first: the prompt is built from the conversation.")
        try:
            params = GenParams.from_dict(params_from(sample, temp, topk, topp, repp, max_tokens, seed_value))
            # Only renders: no place in the engine's line is taken.
            opener = BackendOpener(runtime, runtime.local_option(engine), spec=spec, take_turn=False, engine=engine)
            while not opener.wait(WAIT_POLL_S):
                f = model_status_fields(runtime.models.status(spec, engine=engine))
                progress(f["fraction"] or 0.0, desc=opener.progress_title())
            backend = opener.result()
            return under_the_hood(backend, messages, params) + (_info(backend),)
        except BackendError as e:
            raise gr.Error(str(e)) from e

    # ------------------------------------------------------------------ wiring
    sampling = [system, do_sample, temperature, top_k, top_p, rep, max_new, seed]
    outputs = [chatbot, state, textbox, metrics_md, prompt_code, tokens_md, tokens_view, snippet, table, rows,
               model_info]
    # The tab's own lane; the local model's limit is the app's line, where waiting users see their place.
    gen_lane = lane("local-tab")
    # The engine comes after the API parameters that existed before it: a client that leaves it out gets
    # the default engine (gradio_client fills in a parameter's default).
    send_ev = gr.on([textbox.submit, send_btn.click], send,
                    inputs=[textbox, spec_state, *sampling, engine_radio, state, rows], outputs=outputs,
                    api_name="local_send", show_progress="minimal", **gen_lane)
    retry_ev = gr.on([retry_btn.click, chatbot.retry], retry,
                     inputs=[spec_state, *sampling, engine_radio, state, rows],
                     outputs=outputs, api_name="local_retry", show_progress="minimal", **gen_lane)
    running = [send_ev, retry_ev]
    stop_btn.click(None, None, None, cancels=running, api_visibility="private", queue=False)
    gr.on([undo_btn.click, chatbot.undo], undo, inputs=[state], outputs=[chatbot, state, textbox],
          api_name="local_undo", cancels=running, concurrency_limit=None, show_progress="hidden")
    gr.on([clear_btn.click, chatbot.clear], clear, inputs=None,
          outputs=[chatbot, state, textbox, metrics_md, prompt_code, tokens_md, tokens_view, table, rows],
          api_name="local_clear", cancels=running, concurrency_limit=None, show_progress="hidden")
    gr.on([load_btn.click, model_box.submit], load, inputs=[model_box, engine_radio],
          outputs=[spec_state, model_info], api_name="local_load_model", **local_queue(runtime))

    def refresh_info(spec: str, engine: Any) -> tuple[str, Any]:
        engine = engine if engine in ENGINES else default_engine
        state_now = model_status_fields(runtime.models.status(spec, engine=engine))["state"]
        # Only the default engine's model loads at start; another engine's loads when a request asks for it.
        keep = state_now == "loading" or (state_now == "idle" and settings.preload_model and engine == default_engine)
        return _model_info(runtime, spec, engine), gr.Timer(active=keep)

    info_timer.tick(refresh_info, [spec_state, engine_radio], [model_info, info_timer], api_visibility="private",
                    queue=False, show_progress="hidden")
    # Picking an engine loads nothing: the line says whether the model is ready there or loads on first use.
    engine_radio.change(refresh_info, [spec_state, engine_radio], [model_info, info_timer], api_visibility="private",
                        queue=False, show_progress="hidden")
    render_btn.click(render, inputs=[textbox, spec_state, *sampling, engine_radio, state],
                     outputs=[prompt_code, tokens_view, tokens_md, snippet, model_info],
                     api_name="local_render_prompt", concurrency_limit=None)


# ---------------------------------------------------------------------------------------------- helpers
def _slider(name: str, specs: dict, *, minimum: float | None = None, maximum: float | None = None) -> gr.Slider:
    spec = specs[name]
    lo = spec.minimum if minimum is None else minimum
    hi = spec.maximum if maximum is None else maximum
    return checked_slider(lo, hi, value=spec.default, step=spec.step, label=name, info=spec.description)


def _describe_loaded(loaded: Any) -> str:
    """The model-info line: the model, the engine that runs it, and how it runs there."""
    engine = getattr(loaded, "engine", TRANSFORMERS)
    head = f"**{loaded.display_name}** · engine **{engine}**"
    if engine == LLAMA_CPP:
        slots = loaded.parallel
        return (f"{head} · GGUF weights **{loaded.dtype}** · {loaded.threads} CPU thread"
                f"{'s' if loaded.threads != 1 else ''} · {slots} slot{'s' if slots != 1 else ''} (requests "
                f"decoded together) · context per request {loaded.context_window:,} tokens · "
                f"loaded in {loaded.load_s:.1f} s")
    ctx = f"{loaded.context_window:,} tokens" if loaded.context_window else "unknown"
    return (f"{head} · device **{loaded.device}** · dtype **{loaded.dtype}** · "
            f"{loaded.n_params / 1e6:,.1f} M parameters · context window {ctx} · loaded in {loaded.load_s:.1f} s"
            + (" (from the converted cache)" if loaded.from_cache else ""))


def _model_info(runtime: AppRuntime, spec: str, engine: str | None = None) -> str:
    engine = engine or runtime.settings.local_engine
    loaded = runtime.models.peek(spec, engine=engine)
    if loaded is not None:
        return _describe_loaded(loaded)
    f = model_status_fields(runtime.models.status(spec, engine=engine))
    if f["state"] == "loading":
        pct = f" {f['fraction'] * 100:.0f}%" if f["fraction"] is not None else ""
        return f"Loading **{spec}** on **{engine}**…{pct} ({f['message']})"
    if f["state"] == "error":
        return f"❌ Could not load **{spec}** on **{engine}**: {f['error']}"
    if engine == TRANSFORMERS:
        return (f"**{spec}** is not loaded on **transformers** yet: it loads on the first message (or press Load). "
                "The first time, a GGUF model is converted to float32 weights (tens of seconds); later loads read "
                "the converted copy.")
    return f"**{spec}** is not loaded on **{engine}** yet: it loads on the first message (or press Load)."


def _info(backend: Any) -> str:
    return _describe_loaded(backend.loaded)


def _prompt_tokens(backend: Any, prompt: Any) -> list[tuple[int, str]]:
    """(id, piece) for each prompt token, as the backend's own engine splits the text."""
    if getattr(backend, "engine", None) == LLAMA_CPP:
        pairs = backend.loaded.tokenize(prompt.text)
        if [i for i, _ in pairs] == list(prompt.ids):
            return pairs
        # Not the ids the engine was given (should not happen): show those, with llama.cpp's pieces for them.
        pieces = dict(pairs)
        return [(i, pieces.get(i, "")) for i in prompt.ids]
    tok = backend.tokenizer
    return [(i, tok.decode([i])) for i in prompt.ids]


def _memory_text(mem: dict[str, float | None]) -> str:
    parts = []
    if mem.get("rss_mb") is not None:
        parts.append(f"RSS {mem['rss_mb']:,.0f} MB")
    if mem.get("cuda_mb") is not None:
        parts.append(f"CUDA {mem['cuda_mb']:,.0f} MB")
    return " · ".join(parts) or "memory unknown"

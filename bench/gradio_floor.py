"""The floor of streaming through Gradio: what any Gradio app costs a consumer, measured on one that does nothing.

``python -m llm_levels bench`` reports how much later a consumer of the app's Gradio API sees the first
token than the app itself measured it (``TTFT extra``, the Local tab read as an event stream). Part of that is the app's own work (its handler,
its outputs), part is Gradio's queue and the consumer's client. To tell them apart, the bench also serves
this module's app — a chat whose "model" sleeps 50-100 ms before each answer, then yields one word
every 15 ms — and measures it with the same two consumers:

- ``gradio_client`` (the Python client): it posts each request with a new HTTP client, and its reader
  thread sleeps 50 ms whenever its inbox is empty (gradio_client/utils.py, ``stream_sse_v1plus``), so
  it adds up to ~70 ms of its own to any Gradio app's first token;
- a plain HTTP consumer of the queue's server-sent events (what the page's own JavaScript client does).

The app reports its own time to first token in a second output, measured from the moment its handler
starts: the most favourable clock for Gradio, so the floor is not overstated.

Run standalone (``python bench/gradio_floor.py``), it serves the app on
``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` until stopped.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

API_NAME = "floor"
WORDS = ["Once", "upon", "a", "time", ",", "a", "small", "robot", "learned", "to", "paint", "the", "sea", "."]


def build(ttft_s: float) -> Any:
    """The do-nothing chat app: a textbox, a chatbot, and a number with the handler's own TTFT."""
    import gradio as gr

    def answer(text: str):
        started = time.perf_counter()
        turn = [{"role": "user", "content": text}]
        # Stands in for a model's time to first token. Varied over one 50 ms period: gradio_client polls
        # its inbox every 50 ms, so a fixed delay would always hit the same phase of that poll.
        time.sleep(ttft_s + random.random() * 0.05)
        reply, own_ttft = "", None
        for word in WORDS:
            reply += ("" if not reply else " ") + word
            if own_ttft is None:
                own_ttft = time.perf_counter() - started
            yield turn + [{"role": "assistant", "content": reply}], gr.skip()
            time.sleep(0.015)
        yield turn + [{"role": "assistant", "content": reply}], own_ttft

    with gr.Blocks(title="Gradio floor") as demo:
        box = gr.Textbox()
        chat = gr.Chatbot()
        own = gr.Number()
        box.submit(answer, box, [chat, own], api_name=API_NAME)
    return demo.queue()


def measure(runs: int, ttft_s: float = 0.05, consumers: tuple[str, ...] = ("gradio_client", "http")) -> dict[str, Any]:
    """Serve :func:`build` in a subprocess and time ``runs`` turns with each of ``consumers``
    (``gradio_client``, ``http``: the event stream, as the page reads it).

    Returns, per consumer, the median, min and max of (client TTFT - the app's own TTFT) in ms.
    """
    here = Path(__file__).resolve()
    if str(here.parent) not in sys.path:
        sys.path.insert(0, str(here.parent))
    from served_app import AppProcess, client_turn, sse_turn

    def has_text(outputs: Any) -> bool:
        chat = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else None
        return bool(
            isinstance(chat, list) and chat and isinstance(chat[-1], dict) and chat[-1].get("role") == "assistant"
        )

    app = AppProcess(
        Path(os.devnull), 1, {"FLOOR_TTFT_S": str(ttft_s)}, command=[sys.executable, str(here)], cwd=here.parents[1]
    )
    try:
        app.wait_page(120)

        def via_client() -> float:
            from gradio_client import Client

            t0, first, _end, final = client_turn(Client(app.url, verbose=False), "/" + API_NAME, ["Hi"], has_text)
            return (first - t0 - float(final[1])) * 1000

        def via_http() -> float:
            t0, first, _end, final = sse_turn(app.url, API_NAME, ["Hi"], has_text)
            return (first - t0 - float(final[1])) * 1000

        chosen = [(name, fn) for name, fn in (("gradio_client", via_client), ("http", via_http)) if name in consumers]
        for _, fn in chosen:  # warm-up
            fn()
        out: dict[str, Any] = {"model_sleep_ms": [ttft_s * 1000, ttft_s * 1000 + 50], "runs": runs}
        for name, fn in chosen:
            extra = [fn() for _ in range(runs)]
            out[name] = {"extra_ttft_ms": statistics.median(extra), "min_ms": min(extra), "max_ms": max(extra)}
        return out
    finally:
        app.stop()


def main() -> None:
    build(float(os.environ.get("FLOOR_TTFT_S", "0.05"))).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7861")),
        quiet=True,
    )


if __name__ == "__main__":
    main()

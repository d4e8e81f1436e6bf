"""Where a gradio_client consumer's extra time to first token goes, turn by turn.

Starts the app (warm cache, like ``python -m llm_levels bench``) and makes ``--turns`` Local-tab turns,
each with a new ``gradio_client.Client``, timing inside the client (by wrapping two of its functions;
nothing in the app is changed):

- ``post``: when the client's POST to the queue returned (it builds a new HTTP client per request);
- ``inbox``: when the first message with answer text reached the client's inbox (its stream thread);
- ``seen``: when ``Job`` iteration gave it to the caller (the client's reader thread polls the inbox
  every 50 ms when empty);
- ``app``: the app's own time to first token for that turn (from its metrics row).

Then ``inbox - app`` is the time spent before the answer's first text reached the client beyond the
app's own TTFT (request set-up, Gradio's queue, the network), and ``seen - inbox`` is the client's reader.

    .venv/bin/python bench/gradio_client_timeline.py --turns 12           # the app
    .venv/bin/python bench/gradio_client_timeline.py --turns 12 --floor   # a do-nothing Gradio app
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PROMPT = "Write a long story about a robot who learns to paint."


def _floor_has_text(outputs) -> bool:
    chat = outputs[0] if outputs else None
    return bool(isinstance(chat, list) and chat and isinstance(chat[-1], dict) and chat[-1].get("role") == "assistant")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--turns", type=int, default=12)
    p.add_argument("--floor", action="store_true", help="time the do-nothing Gradio app instead of the app")
    args = p.parse_args(argv)

    import gradio_client.client as gc
    import gradio_floor
    import served_app
    from gradio_client.utils import apply_diff

    from llm_levels.config import Settings

    marks: dict[str, float] = {}
    original_send = gc.Client.send_data

    def send_data(self, *a, **k):
        out = original_send(self, *a, **k)
        marks.setdefault("post", time.perf_counter())
        return out

    class Inbox(collections.deque):
        """The per-event inbox gradio_client fills from its stream thread (``collections.deque``)."""

        outputs: list | None = None

        def append(self, msg):
            if isinstance(msg, dict) and msg.get("msg") == "process_generating" and "inbox" not in marks:
                # The server sends diffs of the outputs: rebuild them to see when the answer has text.
                diffs = list((msg.get("output") or {}).get("data") or [])
                self.outputs = (
                    diffs if self.outputs is None else [apply_diff(v, d) for v, d in zip(self.outputs, diffs)]
                )
                if served_app.answer_on_screen(self.outputs) or (args.floor and _floor_has_text(self.outputs)):
                    marks["inbox"] = time.perf_counter()
            super().append(msg)

    gc.Client.send_data = send_data
    gc.deque = Inbox
    if args.floor:  # the do-nothing Gradio app of bench/gradio_floor.py
        app = served_app.AppProcess(Path(os.devnull), 1, command=[sys.executable, gradio_floor.__file__])

        def one_turn(client):
            t0, first, end, final = served_app.client_turn(client, "/" + gradio_floor.API_NAME, ["Hi"], _floor_has_text)
            return t0, (first - t0) * 1000, float(final[1]) * 1000
    else:
        app = served_app.AppProcess(Path(Settings.from_env().cache_dir), 4)
        values: list = []

        def one_turn(client):
            if not values:
                values.extend(served_app.client_local_values(app.url, PROMPT, 16))
            t0 = time.perf_counter()
            turn = served_app.client_local_send(client, values)
            return t0, turn["client"]["ttft_s"] * 1000, float(turn["app"]["ttft_s"]) * 1000

    rows = []
    try:
        app.wait_page(120)
        if not args.floor:
            served_app.wait_ready(app, 300)
        one_turn(gc.Client(app.url, verbose=False))  # warm-up
        for _ in range(args.turns):
            marks.clear()
            t0, seen, own = one_turn(gc.Client(app.url, verbose=False))
            row = {"post": (marks["post"] - t0) * 1000, "inbox": (marks["inbox"] - t0) * 1000, "seen": seen, "app": own}
            rows.append(row)
            print(
                "  post {post:4.0f}  inbox {inbox:4.0f}  seen {seen:4.0f}  app {app:4.0f} ms  |  "
                "inbox-app {a:4.0f}  seen-inbox {b:4.0f}  extra {c:4.0f}".format(
                    **row, a=row["inbox"] - own, b=seen - row["inbox"], c=seen - own
                ),
                flush=True,
            )
    finally:
        app.stop()
    med = lambda f: statistics.median(f(r) for r in rows)  # noqa: E731
    print(
        f"median over {len(rows)} turns: POST returned {med(lambda r: r['post']):.0f} ms; first text in the inbox "
        f"{med(lambda r: r['inbox'] - r['app']):.0f} ms after the app's TTFT; reader "
        f"{med(lambda r: r['seen'] - r['inbox']):.0f} ms; extra TTFT {med(lambda r: r['seen'] - r['app']):.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

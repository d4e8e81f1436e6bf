"""``python -m llm_levels chat``: send one prompt to a backend and stream the answer.

``--backend local`` runs the model in this process on the default local engine (``LOCAL_ENGINE``:
llama.cpp unless set otherwise); ``--engine transformers`` (or ``llama.cpp``) picks the engine.

Without ``--json`` the answer's text goes to stdout as it arrives. With ``--json`` one JSON object is
printed at the end::

    {"text", "backend", "engine", "model", "usage": {"input_tokens", "output_tokens"} | null,
     "ttft_s", "total_s", "tokens_per_s", "finish_reason"}

(``engine`` is ``llama.cpp`` or ``transformers`` for ``--backend local``, null for ``openai``.)

Exit status: 0 on success, 1 when the request fails (one ``error: ...`` line on stderr; text already
printed stays), 2 for a usage error, 130 when interrupted with Ctrl-C. Settings come from the
environment as it is (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_MODEL``, ``LOCAL_MODEL``...):
the command line does not read ``.env`` (export it, or ``set -a; . ./.env; set +a``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Iterator
from typing import Any, TextIO

from ..core import Backend, BackendError, Message
from ..engine import ENGINES, TRANSFORMERS
from ..runtime import AppRuntime
from ..turns import Delta, Done, Event, Failed, Loading, Started, TurnRequest, run_turn

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=("local", "openai"),
        required=True,
        help="local: the model in this process; openai: an OpenAI-compatible server "
        "(OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL).",
    )
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help="local: the engine that runs the model (default: LOCAL_ENGINE, else llama.cpp). "
        "llama.cpp reads GGUF files; transformers also reads model folders and Hub ids.",
    )
    p.add_argument("--prompt", required=True, help="The user message ('-' reads it from stdin).")
    p.add_argument("--system", default=None, help="An optional system prompt.")
    p.add_argument(
        "--max-new-tokens", type=int, default=None, metavar="N", help="Most tokens to generate (default 256)."
    )
    p.add_argument(
        "--temperature", type=float, default=None, metavar="T", help="0 = greedy, higher = more varied (default 0.7)."
    )
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="Nucleus sampling (default 1.0).")
    p.add_argument("--seed", type=int, default=None, help="Fix the random choices (where supported).")
    p.add_argument(
        "--model",
        default=None,
        help="Model id (openai) or local model: 'embedded', a .gguf file, a folder, or a Hub id "
        "(default: OPENAI_MODEL / LOCAL_MODEL).",
    )
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (default: OPENAI_BASE_URL).")
    p.add_argument(
        "--no-stream", action="store_true", help="openai: ask for the whole answer in one response instead of a stream."
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object with text, usage and timings.")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Show model-loading progress (shown anyway when stderr is a terminal) and tracebacks.",
    )


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        params = _params(args)
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        messages = ([Message("system", args.system)] if args.system else []) + [Message("user", prompt)]
        runtime, request = _turn_request(args, messages, params)
        turn = run_turn(runtime, request)  # checks the request (a usage error) before anything starts
    except BackendError as e:  # bad settings or a refused request; a broken configuration is a failure
        _error(err, e.message)
        return EXIT_USAGE if e.kind == "bad_request" else EXIT_FAILED
    show = args.verbose or _isatty(err)
    try:
        return _generate(turn, as_json=args.json, out=sys.stdout, err=err, show_progress=show)
    except Exception as e:  # noqa: BLE001 - the command line shows one line, never a traceback
        if args.verbose:
            traceback.print_exc(file=err)
        _error(err, f"unexpected failure ({type(e).__name__}): {e}. Run again with --verbose for details.")
        return EXIT_FAILED


def _close(backend: Backend | None) -> None:
    """Stop the in-process engine before the interpreter exits (llama.cpp's server threads, its memory).

    The answer is complete (or cancelled, or failed) by now; stopping the engine here, while every
    module is still in place, is a clean and quick end for a short-lived process.
    """
    loaded = getattr(backend, "loaded", None)
    close = getattr(loaded, "close", None)
    worker = getattr(backend, "last_thread", None)
    if worker is not None and worker.is_alive():
        return  # the engine has not let go of the request yet: never pull the model out from under it
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - the answer is out; a failing shutdown must not change the exit status
            pass


def _params(args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    return {k: v for k, v in given.items() if v is not None}


def _turn_request(
    args: argparse.Namespace, messages: list[Message], params: dict[str, Any]
) -> tuple[AppRuntime, TurnRequest]:
    """The app's runtime (nothing loaded yet) and the turn this command asks for."""
    from ..config import Settings

    settings = dataclasses.replace(Settings.from_env(), preload_model=False)
    if args.backend == "openai" and args.base_url:
        # Whoever runs the CLI is the operator: their --base-url replaces OPENAI_BASE_URL and keeps the key
        # from their environment (unlike a URL typed into the web UI by a visitor).
        settings = dataclasses.replace(settings, openai_base_url=args.base_url)
    runtime = AppRuntime(settings)
    if args.backend == "openai":
        from ..backends import make_hosted

        backend = make_hosted(settings, model=args.model, stream=not args.no_stream)
        return runtime, TurnRequest("openai", messages, params, backend=backend)
    engine = args.engine or settings.local_engine
    if engine == TRANSFORMERS and not (args.verbose or _isatty(sys.stderr)):
        _quiet_transformers()
    return runtime, TurnRequest(runtime.local_option(engine), messages, params, spec=args.model, engine=engine)


def _quiet_transformers() -> None:
    """No progress bars or warnings from transformers on a stderr that a script reads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _generate(turn: Iterator[Event], *, as_json: bool, out: TextIO, err: TextIO, show_progress: bool) -> int:
    """Print the turn's events: progress on stderr, the answer on stdout (or one JSON object at the end)."""
    backend: Backend | None = None
    printed = False
    try:
        for event in turn:
            if isinstance(event, Loading) and show_progress:
                err.write(
                    f"[{event.fraction or 0:4.0%}] {event.message}\n"
                    if event.fraction is not None
                    else f"{event.message}\n"
                )
                err.flush()
            elif isinstance(event, Started):
                backend = event.backend
            elif isinstance(event, Delta) and event.text and not as_json:
                printed = True  # before writing: a Ctrl-C right after the write must still end the line
                out.write(event.text)
                out.flush()
            elif isinstance(event, Failed):
                _end_line(out, printed)
                _error(err, event.error.message)
                return EXIT_FAILED
            elif isinstance(event, Done):
                _finish(event, backend, as_json=as_json, out=out)
        return 0
    except KeyboardInterrupt:  # the turn's backend stops (closing the turn below); what was printed stays
        _end_line(out, printed)
        _error(err, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``| head``): stop; silence Python's own flush at exit
        _silence(out)
        return EXIT_FAILED
    finally:
        turn.close()  # stops the backend's work (the HTTP stream, the engine's request)
        _close(backend)


def _finish(done: Done, backend: Backend | None, *, as_json: bool, out: TextIO) -> None:
    if as_json:
        m = done.metrics
        local = backend is not None and backend.provider == "local"
        out.write(
            json.dumps(
                {
                    "text": done.text,
                    "backend": backend.provider if backend is not None else None,
                    "engine": getattr(backend, "engine", None) if local else None,
                    "model": m.model,
                    "usage": (
                        {"input_tokens": m.input_tokens, "output_tokens": m.output_tokens}
                        if m.input_tokens is not None
                        else None
                    ),
                    "ttft_s": _round(m.ttft_s),
                    "total_s": _round(m.total_s),
                    "tokens_per_s": _round(m.tokens_per_s),
                    "finish_reason": done.finish_reason,
                },
                ensure_ascii=False,
            )
            + "\n"
        )
    else:
        _end_line(out, True)
    out.flush()


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _end_line(out: TextIO, printed: bool) -> None:
    if printed:
        out.write("\n")
        out.flush()


def _error(err: TextIO, message: str) -> None:
    line = " ".join(str(message).split())  # always one line
    err.write(f"error: {line}\n")
    err.flush()


def _silence(out: TextIO) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False

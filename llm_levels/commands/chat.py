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
import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, TextIO

from ..core import Backend, BackendError, GenParams, Message, ReplyBuilder, check_conversation
from ..engine import ENGINES, LLAMA_CPP, TRANSFORMERS

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("local", "openai"), required=True,
                   help="local: the model in this process; openai: an OpenAI-compatible server "
                        "(OPENAI_API_KEY / OPENAI_BASE_URL / OPENAI_MODEL).")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="local: the engine that runs the model (default: LOCAL_ENGINE, else llama.cpp). "
                        "llama.cpp reads GGUF files; transformers also reads model folders and Hub ids.")
    p.add_argument("--prompt", required=True, help="The user message ('-' reads it from stdin).")
    p.add_argument("--system", default=None, help="An optional system prompt.")
    p.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="Most tokens to generate (default 256).")
    p.add_argument("--temperature", type=float, default=None, metavar="T",
                   help="0 = greedy, higher = more varied (default 0.7).")
    p.add_argument("--top-p", type=float, default=None, metavar="P", help="Nucleus sampling (default 1.0).")
    p.add_argument("--seed", type=int, default=None, help="Fix the random choices (where supported).")
    p.add_argument("--model", default=None,
                   help="Model id (openai) or local model: 'embedded', a .gguf file, a folder, or a Hub id "
                        "(default: OPENAI_MODEL / LOCAL_MODEL).")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server URL (default: OPENAI_BASE_URL).")
    p.add_argument("--no-stream", action="store_true",
                   help="openai: ask for the whole answer in one response instead of a stream.")
    p.add_argument("--json", action="store_true", help="Print one JSON object with text, usage and timings.")
    p.add_argument("--verbose", action="store_true",
                   help="Show model-loading progress (shown anyway when stderr is a terminal) and tracebacks.")


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        params = _params(args)
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        messages = ([Message("system", args.system)] if args.system else []) + [Message("user", prompt)]
        check_conversation(messages)
    except BackendError as e:
        _error(err, e.message)
        return EXIT_USAGE
    backend: Backend | None = None
    try:
        backend = _backend(args, err)
        return _generate(backend, messages, params, as_json=args.json, out=sys.stdout, err=err)
    except KeyboardInterrupt:  # while the model loads
        _error(err, "interrupted")
        return EXIT_INTERRUPTED
    except BackendError as e:
        _error(err, e.message)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - the command line shows one line, never a traceback
        if args.verbose:
            traceback.print_exc(file=err)
        _error(err, f"unexpected failure ({type(e).__name__}): {e}. Run again with --verbose for details.")
        return EXIT_FAILED
    finally:
        _close(backend)


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


def _params(args: argparse.Namespace) -> GenParams:
    given = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    return GenParams.from_dict({k: v for k, v in given.items() if v is not None})


def _backend(args: argparse.Namespace, err: TextIO) -> Backend:
    from ..config import Settings

    settings = Settings.from_env()
    if args.backend == "openai":
        import dataclasses

        from ..backends import make_hosted

        # Whoever runs the CLI is the operator: their --base-url replaces OPENAI_BASE_URL and keeps
        # the key from their environment (unlike a URL typed into the web UI by a visitor).
        if args.base_url:
            settings = dataclasses.replace(settings, openai_base_url=args.base_url)
        return make_hosted(settings, model=args.model, stream=not args.no_stream)
    from ..models import load_local_model

    engine = args.engine or settings.local_engine
    show = args.verbose or _isatty(err)
    if not show and engine == TRANSFORMERS:
        _quiet_transformers()
    loaded = load_local_model(args.model or settings.local_model, engine, settings,
                              progress=_progress_printer(err) if show else None)
    if engine == LLAMA_CPP:
        from ..backends.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(loaded)
    from ..backends.local_hf import LocalBackend

    return LocalBackend(loaded)


def _quiet_transformers() -> None:
    """No progress bars or warnings from transformers on a stderr that a script reads."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _generate(backend: Backend, messages: list[Message], params: GenParams, *, as_json: bool,
              out: TextIO, err: TextIO) -> int:
    cancel = threading.Event()
    builder = ReplyBuilder(time.perf_counter())
    gen = backend.stream(messages, params, cancel)
    printed = False
    try:
        for chunk in gen:
            builder.add(chunk)
            if chunk.text and not as_json:
                printed = True  # before writing: a Ctrl-C right after the write must still end the line
                out.write(chunk.text)
                out.flush()
    except KeyboardInterrupt:
        # Stop the backend's work (the HTTP stream, the engine's request), keep what was printed.
        cancel.set()
        gen.close()
        _end_line(out, printed)
        _error(err, "interrupted")
        return EXIT_INTERRUPTED
    except BackendError as e:
        _end_line(out, printed)
        _error(err, e.message)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (``| head``): stop generating; silence Python's own flush at exit.
        cancel.set()
        gen.close()
        _silence(out)
        return EXIT_FAILED
    finally:
        gen.close()
    reply = builder.reply()
    if as_json:
        out.write(json.dumps({
            "text": reply.text,
            "backend": backend.kind,
            "engine": getattr(backend, "engine", None) if backend.kind == "local" else None,
            "model": backend.model,
            "usage": reply.usage.to_dict() if reply.usage else None,
            "ttft_s": _round(reply.ttft_s),
            "total_s": _round(reply.total_s),
            "tokens_per_s": _round(reply.tokens_per_s),
            "finish_reason": reply.finish_reason,
        }, ensure_ascii=False) + "\n")
    else:
        _end_line(out, True)
    out.flush()
    return 0


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


def _progress_printer(err: TextIO) -> Callable[[float, str], None]:
    def progress(fraction: float, message: str) -> None:
        err.write(f"[{fraction:4.0%}] {message}\n")
        err.flush()

    return progress

"""llama.cpp in this process: the embedded GGUF (or any GGUF) served by the ``xllamacpp`` wheel.

``xllamacpp.Server`` is llama.cpp's own server, linked in: ``handle_chat_completions(request, callback)``
takes an OpenAI-shaped request and calls ``callback`` with each stream chunk (returning True from it
stops the generation within a token). Its ``n_parallel`` slots decode concurrent requests together
(continuous batching). The same server also listens on a random loopback port for llama.cpp's
``/apply-template`` and ``/tokenize`` routes, which this module uses to show the prompt exactly as the
engine renders and tokenizes it; that port is protected by a random per-process key, so nothing else
on the machine can use the model through it.

Loading reads the GGUF as is: no conversion, no torch, no transformers.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import BackendError, Message
from . import LLAMA_CPP

log = logging.getLogger(__name__)

#: ``progress(fraction 0..1, message)``, as for the transformers engine.
Progress = Callable[[float, str], None]

_HTTP_TIMEOUT_S = 30.0


@dataclass
class LlamaCppModel:
    """A GGUF model running in llama.cpp, with the facts the UI shows about it.

    Shared by every session (the server is thread-safe: concurrent requests share its slots).
    """

    spec: str
    display_name: str
    source: str
    gguf_path: Path
    model_id: str
    #: Tokens one request may use (prompt + answer): llama.cpp's context per slot.
    context_window: int
    #: Requests decoded together (llama.cpp's slots).
    parallel: int
    threads: int
    #: The GGUF's weight format, e.g. ``Q4_1``.
    dtype: str
    load_s: float
    server: Any = field(repr=False)
    _address: str = field(repr=False, default="")
    _key: str = field(repr=False, default="")
    engine: str = LLAMA_CPP
    device: str = "cpu"
    from_cache: bool = False

    @property
    def label(self) -> str:
        """The engine and where it runs, for status lines: ``llama.cpp · Q4_1 · 2 threads``."""
        return f"{LLAMA_CPP} · {self.dtype} · {self.threads} thread{'s' if self.threads != 1 else ''}"

    # ------------------------------------------------------------------ llama.cpp's own routes
    def chat(self, request: Mapping[str, Any], callback: Callable[[dict], bool] | None = None) -> Any:
        """One chat completion (OpenAI shape); with ``callback`` it streams, chunk by chunk."""
        if callback is None:
            return self.server.handle_chat_completions(dict(request))
        return self.server.handle_chat_completions(dict(request), callback)

    def complete(self, request: Mapping[str, Any], callback: Callable[[dict], bool] | None = None) -> Any:
        """One raw completion of a prompt (``request["prompt"]``: text or token ids), llama.cpp's own
        parameters (``n_predict``, ``n_probs``...), answered in OpenAI's completion shape; streams with ``callback``.
        """
        if callback is None:
            return self.server.handle_completions(dict(request))
        return self.server.handle_completions(dict(request), callback)

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ids, special tokens by name (``[2]`` → ``<|im_end|>`` for the bundled model)."""
        return str(self._post("/detokenize", {"tokens": [int(i) for i in ids]}).get("content", ""))

    def apply_template(self, messages: Sequence[Message]) -> str:
        """The prompt text llama.cpp builds from ``messages`` with the GGUF's own chat template."""
        out = self._post("/apply-template", {"messages": [m.to_dict() for m in messages]})
        return str(out.get("prompt", ""))

    def tokenize(self, text: str) -> list[tuple[int, str]]:
        """``text``'s token ids with their pieces, special tokens parsed as the engine does for a prompt."""
        out = self._post(
            "/tokenize", {"content": text, "with_pieces": True, "add_special": False, "parse_special": True}
        )
        pairs: list[tuple[int, str]] = []
        for t in out.get("tokens", []):
            piece = t.get("piece", "")
            if isinstance(piece, list):  # bytes of a piece that is not valid UTF-8 on its own
                piece = bytes(piece).decode("utf-8", errors="replace")
            pairs.append((int(t["id"]), str(piece)))
        return pairs

    def close(self) -> None:
        """Stop the server (its threads and memory go with it)."""
        server, self.server = self.server, None
        del server

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            self._address + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT_S) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise BackendError(
                f"llama.cpp could not prepare the prompt ({type(e).__name__}: {e}).", kind="internal", status=500
            ) from e


def gguf_dtype(path: Path) -> str:
    """The weight format named in a GGUF file name (``….Q4_1.gguf`` → ``Q4_1``), else ``GGUF``."""
    stem = path.stem
    for sep in (".", "-", "_"):
        tail = stem.rsplit(sep, 1)[-1] if sep in stem else ""
        if tail and tail[:1].upper() in ("Q", "F", "B", "I") and any(c.isdigit() for c in tail):
            return tail.upper() if tail[:1] in ("q", "Q") else tail
    return "GGUF"


def default_threads() -> int:
    """One thread per core this process may use.

    On a quiet machine that decodes concurrent requests fastest. llama.cpp's threads wait for each other at
    every step, though, so a core taken by another process slows all of them: on a shared machine
    LOCAL_THREADS=1 (or cores - 1) is steadier (make bench measures both).
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_LOAD_LOCK = threading.Lock()


def engine_params(gguf: Path, *, context_window: int, parallel: int, threads: int) -> Any:
    """llama.cpp's settings as the app runs it (the bench starts the standalone engine with the same ones)."""
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel = parallel
    p.n_ctx = context_window * parallel  # split evenly: every slot gets context_window tokens
    p.use_jinja = True  # the GGUF's own chat template
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    # llama.cpp's own defaults otherwise (a 16-bit attention cache, its choice of attention kernel): an
    # 8-bit cache would halve the cache's memory, and flash attention shortens the prompt's reading, but
    # both change this small model's greedy answers.
    p.verbosity = -1  # llama.cpp's log lines are not an operator's business; errors reach the caller
    return p


def load_llama_cpp(
    gguf: Path,
    *,
    spec: str,
    display_name: str,
    source: str,
    model_id: str,
    context_window: int,
    parallel: int,
    threads: int | None = None,
    progress: Progress | None = None,
) -> LlamaCppModel:
    """Start llama.cpp on ``gguf``: ``parallel`` slots of ``context_window`` tokens each.

    Raises :class:`BackendError` (kind ``model_load``) with the reason when the engine or the file fails.
    """
    report = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    try:
        import xllamacpp
    except ImportError as e:  # pragma: no cover - it is in requirements.txt
        raise BackendError(
            "The llama.cpp engine is not installed (pip install xllamacpp), or pick the "
            "transformers engine (LOCAL_ENGINE=transformers).",
            kind="config",
            status=500,
        ) from e
    threads = threads or default_threads()
    report(0.1, f"Starting llama.cpp on {gguf.name}")
    p = engine_params(gguf, context_window=context_window, parallel=parallel, threads=threads)
    key = secrets.token_urlsafe(24)
    p.api_keys = [key]  # its loopback HTTP routes answer only this process
    try:
        with _LOAD_LOCK:
            server = xllamacpp.Server(p)
    except Exception as e:
        raise BackendError(
            f"llama.cpp could not load {gguf.name} ({type(e).__name__}: {e}). Is it a valid "
            "GGUF file? Try the transformers engine for other model formats.",
            kind="model_load",
            status=500,
        ) from e
    model = LlamaCppModel(
        spec=spec,
        display_name=display_name,
        source=source,
        gguf_path=gguf,
        model_id=model_id,
        context_window=context_window,
        parallel=parallel,
        threads=threads,
        dtype=gguf_dtype(gguf),
        load_s=0.0,
        server=server,
        _address=str(server.listening_address).rstrip("/"),
        _key=key,
    )
    model.load_s = time.perf_counter() - t0
    report(1.0, f"Ready: {display_name} on llama.cpp in {model.load_s:.1f} s")
    log.info(
        "llama.cpp ready: %s (%s, %d slots x %d tokens, %d threads) in %.2f s",
        display_name,
        model.dtype,
        parallel,
        context_window,
        threads,
        model.load_s,
    )
    return model

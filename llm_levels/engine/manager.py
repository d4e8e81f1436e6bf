"""The local models in memory, shared by every session: each (model, engine) loaded once, on first use.

:class:`ModelManager` loads a model on either engine (:func:`load_local_model`), keeps at most a few in
memory, makes concurrent requests for the same model wait for one load, and reports loading progress
(:class:`ModelStatus`) for the UI. Nothing loads at import time.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import Settings
from ..core import BackendError
from . import ENGINES, TRANSFORMERS
from .progress import Progress, safe_progress
from .resolve import adapter_name, resolve_gguf
from .transformers_loader import load_model

log = logging.getLogger("llm_levels.models")


#: A model in memory on either engine.
LocalModel = Any
#: (spec, engine, device, dtype)
ModelKey = tuple[str, str, str, str]


def load_local_model(spec: str, engine: str, settings: Settings, progress: Progress | None = None) -> LocalModel:
    """Load ``spec`` on ``engine``: a :class:`~llm_levels.engine.llama_cpp.LlamaCppModel` or a :class:`LoadedModel`;
    ``adapter:<name>`` is a saved fine-tuned adapter on its base model (:func:`load_adapter`)."""
    name = adapter_name(spec)
    if name is not None:
        return load_adapter(name, engine, settings, progress)
    if engine == TRANSFORMERS:
        return load_model(spec, settings, progress=progress)
    return load_llama_cpp_model(spec, settings, progress=progress)


def load_adapter(name: str, engine: str, settings: Settings, progress: Progress | None = None) -> LocalModel:
    """The saved adapter ``name`` (under the cache's ``adapters`` folder) applied to its base model, on the
    transformers engine (peft adapters have no llama.cpp form here); shown as "SmolLM2 + <name> adapter"."""
    from ..finetune import adapters_root, find_adapter, load_adapter_model

    if not name:
        raise BackendError("Name the adapter: adapter:<name>, as saved by a fine-tune.", kind="config", status=400)
    if engine != TRANSFORMERS:
        raise BackendError(
            f"The fine-tuned adapter {name!r} runs on the transformers engine only: pick transformers to load it.",
            kind="config",
            status=400,
        )
    info = find_adapter(adapters_root(settings), name)
    loaded = load_adapter_model(info, settings, progress=progress)
    return dataclasses.replace(loaded, display_name=adapter_display_name(info.name, info.base_name))


def adapter_display_name(name: str, base_name: str) -> str:
    """``SmolLM2 + financial-sentiment adapter``: the name as saved when it already says so, else built from
    the base model's family and the name."""
    if name.lower().endswith("adapter"):
        return name
    family = re.split(r"[-\s(]", base_name.strip(), maxsplit=1)[0] or "model"
    return f"{family} + {name} adapter"


def load_llama_cpp_model(spec: str, settings: Settings, progress: Progress | None = None) -> LocalModel:
    """Start llama.cpp on ``spec``'s GGUF file (see :func:`resolve_gguf`), read as is."""
    from .llama_cpp import load_llama_cpp

    report = safe_progress(progress)
    report(0.0, f"Resolving model {spec!r}")
    resolved = resolve_gguf(spec, settings, progress=report)
    return load_llama_cpp(
        Path(resolved.location) / str(resolved.gguf_file),
        spec=spec,
        display_name=resolved.display_name,
        source=resolved.source,
        model_id=resolved.model_id,
        context_window=settings.local_context,
        parallel=settings.local_concurrency,
        threads=settings.local_threads or None,
        progress=report,
    )


# ---------------------------------------------------------------------------------------- the manager
@dataclass(frozen=True)
class ModelStatus:
    """Where loading a model stands, for the UI's progress bar."""

    state: Literal["idle", "loading", "ready", "error"]
    fraction: float
    message: str
    error: str | None = None
    display_name: str | None = None
    spec: str = ""
    engine: str = ""


class ModelManager:
    """Loaded models shared by all sessions: each (spec, engine, device, dtype) is loaded once.

    Thread-safe: a lock per model key makes concurrent ``get`` calls for the same model wait for one
    load (and receive its progress) instead of loading twice. At most ``max_loaded`` models stay in
    memory; the least recently used one other than the default model is dropped first (sessions that
    still hold it keep it alive until they let go). ``engine`` is ``llama.cpp`` or ``transformers``
    (default: ``settings.local_engine``); the default model on the default engine is preloaded at start,
    any other loads on first use.
    """

    def __init__(self, settings: Settings, *, max_loaded: int = 3) -> None:
        self.settings = settings
        self.max_loaded = max(1, max_loaded)
        self._lock = threading.Lock()
        self._models: OrderedDict[ModelKey, LocalModel] = OrderedDict()
        self._key_locks: dict[ModelKey, threading.Lock] = {}
        self._listeners: dict[ModelKey, list[Progress]] = {}
        self._status: dict[ModelKey, ModelStatus] = {}
        self._preload: threading.Thread | None = None

    def _key(self, spec: str | None, engine: str | None = None) -> ModelKey:
        engine = engine or self.settings.local_engine
        if engine not in ENGINES:
            raise BackendError(
                f"Unknown engine {engine!r}: use {' or '.join(ENGINES)}.", kind="bad_request", status=400
            )
        return (
            (spec or self.settings.local_model).strip(),
            engine,
            self.settings.local_device,
            self.settings.local_dtype,
        )

    def get(
        self, spec: str | None = None, progress: Progress | None = None, *, engine: str | None = None
    ) -> LocalModel:
        """The loaded model for ``spec`` (default ``settings.local_model``) on ``engine``, loading it if needed."""
        key = self._key(spec, engine)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
            if progress is not None:
                self._listeners.setdefault(key, []).append(progress)
                current = self._status.get(key)
                if current is not None and current.state == "loading":
                    safe_progress(progress)(current.fraction, current.message)
        try:
            with key_lock:
                with self._lock:
                    if key in self._models:  # loaded by another caller while we waited
                        self._models.move_to_end(key)
                        return self._models[key]
                self._set_status(key, ModelStatus("loading", 0.0, "Starting", spec=key[0], engine=key[1]))
                try:
                    loaded = load_local_model(
                        key[0], key[1], self.settings, progress=lambda f, m: self._on_progress(key, f, m)
                    )
                except BackendError as e:
                    self._set_status(
                        key, ModelStatus("error", 0.0, "Loading failed", str(e), spec=key[0], engine=key[1])
                    )
                    raise
                except Exception as e:
                    self._set_status(
                        key, ModelStatus("error", 0.0, "Loading failed", str(e), spec=key[0], engine=key[1])
                    )
                    raise BackendError(f"Could not load {key[0]!r}: {type(e).__name__}: {e}", kind="model_load") from e
                with self._lock:
                    self._models[key] = loaded
                    self._evict()
                self._set_status(
                    key,
                    ModelStatus(
                        "ready",
                        1.0,
                        f"{loaded.display_name} ready ({loaded.label}, {loaded.load_s:.1f} s)",
                        display_name=loaded.display_name,
                        spec=key[0],
                        engine=key[1],
                    ),
                )
                return loaded
        finally:
            if progress is not None:
                with self._lock:
                    listeners = self._listeners.get(key, [])
                    if progress in listeners:
                        listeners.remove(progress)

    def peek(self, spec: str | None = None, *, engine: str | None = None) -> LocalModel | None:
        """The model if it is already loaded, without loading it."""
        with self._lock:
            return self._models.get(self._key(spec, engine))

    def loaded(self) -> list[LocalModel]:
        """Every model in memory now, oldest use first."""
        with self._lock:
            return list(self._models.values())

    def start_preload(self) -> threading.Thread | None:
        """Begin loading the default model on the default engine in a background daemon thread (idempotent)."""
        with self._lock:
            if self._key(None) in self._models or (self._preload is not None and self._preload.is_alive()):
                return self._preload
            self._preload = threading.Thread(target=self._run_preload, name="llm-levels-preload", daemon=True)
            self._preload.start()
            return self._preload

    def status(self, spec: str | None = None, *, engine: str | None = None) -> ModelStatus:
        """The loading state of ``spec`` on ``engine`` (default: the default model on the default engine)."""
        key = self._key(spec, engine)
        with self._lock:
            return self._status.get(key) or ModelStatus("idle", 0.0, "Not loaded yet", spec=key[0], engine=key[1])

    # ------------------------------------------------------------------ internals
    def _run_preload(self) -> None:
        try:
            self.get()
        except BackendError as e:  # the status carries the error for the UI
            log.warning("Preloading the local model failed: %s", e)
        except Exception:
            log.exception("Preloading the local model failed")

    def _on_progress(self, key: ModelKey, fraction: float, message: str) -> None:
        self._set_status(key, ModelStatus("loading", fraction, message, spec=key[0], engine=key[1]))
        with self._lock:
            listeners = list(self._listeners.get(key, []))
        for listener in listeners:
            try:
                listener(fraction, message)
            except Exception:
                log.exception("progress listener failed")

    def _set_status(self, key: ModelKey, status: ModelStatus) -> None:
        with self._lock:
            self._status[key] = status

    def _evict(self) -> None:
        """Drop least recently used models beyond ``max_loaded`` (never the default). Caller holds the lock."""
        default = self._key(None)
        while len(self._models) > self.max_loaded:
            victim = next((k for k in self._models if k != default), None)
            if victim is None:
                return
            del self._models[victim]
            self._status.pop(victim, None)
            log.info("Unloaded %s (%s) to stay within %d models in memory", victim[0], victim[1], self.max_loaded)

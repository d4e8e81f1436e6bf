"""Local models, as the rest of the app asks for them: one import for resolving, loading and managing.

The pieces live in :mod:`llm_levels.engine`: :mod:`~llm_levels.engine.resolve` (where the files are),
:mod:`~llm_levels.engine.transformers_loader` and :mod:`~llm_levels.engine.llama_cpp` (loading on each
engine), :mod:`~llm_levels.engine.converted_cache` (the transformers engine's disk cache) and
:mod:`~llm_levels.engine.manager` (the models in memory, shared by every session).
"""

from __future__ import annotations

from .engine.converted_cache import (
    CACHE_FORMAT,
    CACHE_MARKER,
    HASH_INDEX,
    cache_is_complete,
    converted_dir,
    file_sha256,
    save_converted,
)
from .engine.manager import LocalModel, ModelKey, ModelManager, ModelStatus, load_llama_cpp_model, load_local_model
from .engine.progress import Progress
from .engine.resolve import (
    EMBEDDED_GGUF,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    ResolvedModel,
    Source,
    embedded_gguf_path,
    is_valid_hub_id,
    resolve,
    resolve_gguf,
)
from .engine.transformers_loader import LoadedModel, load_model, pick_device, pick_dtype

__all__ = [
    "CACHE_FORMAT",
    "CACHE_MARKER",
    "EMBEDDED_GGUF",
    "EMBEDDED_NAME",
    "EMBEDDED_PACKAGE",
    "HASH_INDEX",
    "LoadedModel",
    "LocalModel",
    "ModelKey",
    "ModelManager",
    "ModelStatus",
    "Progress",
    "ResolvedModel",
    "Source",
    "cache_is_complete",
    "converted_dir",
    "embedded_gguf_path",
    "file_sha256",
    "is_valid_hub_id",
    "load_llama_cpp_model",
    "load_local_model",
    "load_model",
    "pick_device",
    "pick_dtype",
    "resolve",
    "resolve_gguf",
    "save_converted",
]

"""The model ids ``/v1`` accepts and lists, and the engine each one runs on.

``local`` is the local model on the default engine (llama.cpp unless ``LOCAL_ENGINE`` says otherwise);
``local-llama.cpp`` / ``local-transformers`` name each engine (the other one loads on first use). The
model's own name (e.g. ``SmolLM2-135M-Instruct``) and the ``LOCAL_MODEL`` setting are aliases of ``local``,
unless the setting is a folder path: a path would tell strangers about the server's disk.
"""

from __future__ import annotations

from typing import Any

from openai.types import Model

from ..engine import ENGINES
from .openai_errors import ApiError

#: The id every client can use for the local model (its aliases are listed by ``GET /v1/models``).
LOCAL_MODEL_ID = "local"
#: ``local-<engine>``: the local model on that engine.
ENGINE_MODEL_IDS = {f"local-{e}": e for e in ENGINES}


def model_ids(runtime: Any) -> list[str]:
    """Ids accepted for the local model: ``local``, one per engine, its name, and ``LOCAL_MODEL`` unless that
    is a path."""
    ids = [LOCAL_MODEL_ID, *ENGINE_MODEL_IDS]
    for name in (_model_name(runtime), runtime.settings.local_model):
        if name and name not in ids and not _looks_like_path(name):
            ids.append(name)
    return ids


def engine_for(model_id: str, runtime: Any) -> str:
    """The engine a known model id runs on; :class:`ApiError` 404 for an id this server does not have."""
    if model_id not in model_ids(runtime):
        raise unknown_model(model_id, runtime)
    return ENGINE_MODEL_IDS.get(model_id, runtime.settings.local_engine)


def model_card(model_id: str) -> dict[str, Any]:
    """One entry of ``GET /v1/models``, as OpenAI's own :class:`openai.types.Model`."""
    return Model(id=model_id, created=0, object="model", owned_by="llm-levels").model_dump(exclude_unset=True)


def unknown_model(model: str, runtime: Any) -> ApiError:
    return ApiError(
        404,
        f"The model {model[:80]!r} does not exist on this server. Use one of: "
        f"{', '.join(model_ids(runtime))} (GET /v1/models lists them).",
        param="model",
        code="model_not_found",
    )


def _model_name(runtime: Any) -> str | None:
    """The default local model's own id (e.g. ``SmolLM2-135M-Instruct``), loaded or not, without loading it."""
    try:
        loaded = runtime.models.peek()
        if loaded is not None and loaded.model_id:
            return loaded.model_id
        from ..models import resolve  # cheap: finds files or checks the id, never loads

        return resolve(runtime.settings.local_model, runtime.settings).model_id or None
    except Exception:  # noqa: BLE001 - informative only: never fail a request on it
        return None


def _looks_like_path(name: str) -> bool:
    # A folder path would tell strangers about the server's disk; Hub ids have exactly one "/".
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1

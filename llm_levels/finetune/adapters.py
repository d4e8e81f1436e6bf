"""Saved adapters: written beside the app's model cache, listed, and loaded onto their base model.

An adapter lives in ``<cache_dir>/adapters/<slug>/`` (``LLM_LEVELS_CACHE_DIR``, the folder that also holds
the converted GGUF model): peft's ``adapter_config.json`` and ``adapter_model.safetensors``, plus
``llm-levels-adapter.json`` with its name ("SmolLM2 + financial-sentiment adapter"), the base model it was
trained on, its labels and prompt template, how it was trained and its metrics on the evaluated rows.

Saving is atomic: everything goes into a temporary sibling folder, the metadata file last, then one rename;
a crash or Stop leaves no half-written adapter (a folder without the metadata is never listed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import BackendError
from ..engine.converted_cache import remove_dir

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings
    from ..engine.progress import Progress
    from ..engine.transformers_loader import LoadedModel

ADAPTERS = "adapters"
META_FILE = "llm-levels-adapter.json"
META_FORMAT = 1


@dataclass(frozen=True)
class AdapterInfo:
    """A saved adapter: its name and folder, the base model, labels and template, training and metrics."""

    name: str
    folder: Path
    base_spec: str
    base_name: str
    labels: tuple[str, ...]
    template: str
    #: sha256 of the base model's weights file (GGUF), when it was read from one: checked on loading.
    base_key: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0

    @property
    def slug(self) -> str:
        return self.folder.name

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(folder=str(self.folder), labels=list(self.labels))
        return out


def adapters_root(settings: Settings) -> Path:
    """The folder saved adapters live in: ``adapters`` inside the app's cache dir."""
    return Path(settings.cache_dir) / ADAPTERS


def default_name(base_name: str, labels: tuple[str, ...] | list[str]) -> str:
    """``SmolLM2 + financial-sentiment adapter``: the base model's family and the task."""
    family = re.split(r"[-\s(]", base_name.strip(), maxsplit=1)[0] or "model"
    task = (
        "financial-sentiment"
        if set(labels) == {"negative", "neutral", "positive"}
        else "-".join(labels)[:40] + " classifier"
    )
    return f"{family} + {task} adapter"


def slugify(name: str) -> str:
    """A folder name for an adapter name: lower-case letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:80]
    if not slug:
        raise BackendError("Give the adapter a name with at least one letter or digit.", kind="bad_request")
    return slug


def save_adapter(clf: Any, root: Path, *, name: str, metrics: dict[str, Any], training: dict[str, Any]) -> AdapterInfo:
    """Write ``clf``'s adapter and its metadata to ``root/<slug of name>`` atomically (an adapter of the same
    name is replaced); returns its :class:`AdapterInfo`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / slugify(name)
    tmp = root / f".tmp-{target.name[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    loaded = clf.loaded
    info = AdapterInfo(
        name=name,
        folder=target,
        base_spec=loaded.spec,
        base_name=loaded.display_name,
        labels=tuple(clf.labels),
        template=clf.template,
        base_key=getattr(loaded, "weights_key", "") or "",
        metrics=metrics,
        training=training,
        created=time.time(),
    )
    try:
        clf.save(str(tmp))
        doc = {"format": META_FORMAT, **info.to_dict()}
        doc.pop("folder")
        (tmp / META_FILE).write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
        if target.exists():
            remove_dir(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            remove_dir(tmp)
    return info


def read_adapter(folder: Path) -> AdapterInfo | None:
    """The adapter saved in ``folder``, or None when it is not a complete one."""
    try:
        doc = json.loads((Path(folder) / META_FILE).read_text(encoding="utf-8"))
        if doc.get("format") != META_FORMAT or not (Path(folder) / "adapter_config.json").is_file():
            return None
        return AdapterInfo(
            name=str(doc["name"]),
            folder=Path(folder),
            base_spec=str(doc["base_spec"]),
            base_name=str(doc.get("base_name", "")),
            labels=tuple(doc["labels"]),
            template=str(doc["template"]),
            base_key=str(doc.get("base_key", "")),
            metrics=dict(doc.get("metrics") or {}),
            training=dict(doc.get("training") or {}),
            created=float(doc.get("created", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_adapters(root: Path) -> list[AdapterInfo]:
    """Every complete adapter under ``root``, newest first (temporary and broken folders are skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [read_adapter(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted((a for a in found if a is not None), key=lambda a: a.created, reverse=True)


def find_adapter(root: Path, name: str) -> AdapterInfo:
    """The adapter called ``name`` (its name, or its folder's name) under ``root``; BackendError if none."""
    for a in list_adapters(root):
        if name in (a.name, a.slug):
            return a
    raise BackendError(f"No saved adapter called {name!r} in {root}.", kind="not_found", status=404)


def load_adapter_model(
    adapter: AdapterInfo, settings: Settings, *, merge: bool = True, progress: Progress | None = None
) -> LoadedModel:
    """The adapter's base model, loaded afresh on the transformers engine, with the adapter applied.

    ``merge`` folds the low-rank weights into the base weights (``merge_and_unload``): generation then
    runs at the plain model's speed. The base is its own copy (never the shared model of the app), so
    merging changes nothing else. Raises BackendError when the base model's weights are not the ones the
    adapter was trained on.
    """
    from peft import PeftModel

    from ..engine.transformers_loader import load_model

    base = load_model(adapter.base_spec, settings, progress=progress)
    if adapter.base_key and base.weights_key and adapter.base_key != base.weights_key:
        raise BackendError(
            f"The adapter {adapter.name!r} was trained on other weights than {base.display_name} has now.",
            kind="model_load",
            status=409,
        )
    try:
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(base.model, str(adapter.folder))
        model = model.merge_and_unload() if merge else model
    except Exception as e:
        raise BackendError(f"Could not load the adapter {adapter.name!r}: {e}", kind="model_load") from e
    model.eval()
    # The spec stays the base model's (its files, its snippets); the name says which adapter is on it.
    return dataclasses.replace(base, model=model, display_name=f"{base.display_name} + {adapter.name}")

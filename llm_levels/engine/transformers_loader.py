"""The transformers engine's loading: a model folder, a Hub id or a GGUF file into ``transformers``.

:func:`load_model` loads a resolved model (see :mod:`.resolve`) on the chosen device and dtype and returns
a :class:`LoadedModel`. A GGUF file is converted to float32 once and the converted copy is kept on disk
(:mod:`.converted_cache`), so later loads take seconds instead of half a minute. Never with remote code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import EMBEDDED, Settings
from ..core import BackendError
from . import TRANSFORMERS
from .converted_cache import cache_is_complete, converted_dir, file_sha256, remove_dir, save_converted
from .progress import Progress, safe_progress
from .resolve import ResolvedModel, Source, resolve

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ device and dtype
def pick_device(setting: str) -> str:
    """``LOCAL_DEVICE`` to a torch device name: ``auto`` is CUDA when torch sees a GPU, else the CPU."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise BackendError(
            "LOCAL_DEVICE is cuda but this torch build sees no CUDA GPU. Set LOCAL_DEVICE=auto or cpu.",
            kind="config",
            status=500,
        )
    if setting == "mps" and not torch.backends.mps.is_available():
        raise BackendError(
            "LOCAL_DEVICE is mps but Apple's Metal backend is not available here. Set LOCAL_DEVICE=auto or cpu.",
            kind="config",
            status=500,
        )
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
    report = safe_progress(progress)
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
    except Exception as e:
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


def _load_pretrained(
    resolved: ResolvedModel, settings: Settings, torch_dtype: torch.dtype, report: Progress
) -> tuple[Any, Any]:
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
        names
        & {
            "LocalEntryNotFoundError",
            "RepositoryNotFoundError",
            "OfflineModeIsEnabled",
            "GatedRepoError",
            "RevisionNotFoundError",
            "HFValidationError",
            "ConnectionError",
        }
        or "couldn't connect" in text
        or "not a valid model identifier" in text
    ):
        gated = "GatedRepoError" in names
        return BackendError(
            f"Could not download {resolved.location!r}: "
            + (
                "it is a gated model that needs an access token. "
                if gated
                else "no network (or HF_HUB_OFFLINE is set) or unknown model id. "
            )
            + "Check the id on huggingface.co, or point LOCAL_MODEL at a local folder.",
            kind="not_found",
            status=404,
        )
    if "trust_remote_code" in text:
        return BackendError(
            f"{resolved.location!r} needs its own Python code (trust_remote_code), which this "
            "app never runs. Pick another model.",
            kind="model_load",
            status=400,
        )
    if isinstance(e, MemoryError) or "out of memory" in text.lower():
        return BackendError(
            f"Not enough memory to load {resolved.display_name}. Pick a smaller model or LOCAL_DTYPE=bfloat16.",
            kind="model_load",
            status=507,
        )
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


# ------------------------------------------------------------------------ GGUF and its disk cache
def _load_gguf(
    resolved: ResolvedModel, settings: Settings, torch_dtype: torch.dtype, report: Progress
) -> tuple[Any, Any, bool, str]:
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
            log.warning(
                "The converted copy in %s is unreadable (%s: %s); converting again.", cached, type(e).__name__, e
            )
            remove_dir(cached)
    elif cached.exists():
        log.warning("The converted copy in %s is incomplete; converting again.", cached)
        remove_dir(cached)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(0.05, "Converting the tokenizer from GGUF (first start only)")
    tokenizer = AutoTokenizer.from_pretrained(resolved.location, gguf_file=resolved.gguf_file, trust_remote_code=False)
    report(0.25, "Converting the GGUF weights to float32 (first start only, ~30 s)")
    model = AutoModelForCausalLM.from_pretrained(
        resolved.location, gguf_file=resolved.gguf_file, trust_remote_code=False
    )
    # The weights are plain float32 now, but the model still carries the GGUF quantizer marker, and
    # save_pretrained refuses a "quantized, not serializable" model: clear it.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers' own attribute, typed too narrowly
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report(0.8, "Saving the converted model for faster starts")
    try:
        save_converted(model, tokenizer, cached, gguf=gguf, sha=sha)
    except Exception as e:  # noqa: BLE001 - no cache (read-only disk, full disk) only costs time
        log.warning(
            "Could not save the converted model to %s (%s: %s); the next start converts again.",
            cached,
            type(e).__name__,
            e,
        )
    if torch_dtype != model.dtype:
        model = model.to(dtype=torch_dtype)  # type: ignore[call-arg]  # transformers' decorated .to
    return model, tokenizer, False, sha

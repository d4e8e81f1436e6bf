"""The fast path's int8 matrices on disk, so a warm start neither quantizes nor re-checks them.

Building the int8 copies reads every float32 projection (540 MB for SmolLM2-135M) and the self-check
runs the float32 model a few times: 1-2 s on an idle 2-core machine, 5-10 s on a busy one (the float
pages are read from disk). The result depends only on the weights, the quantization kind, the torch
build and the CPU's int8 features, so it is saved once, next to the converted model, and loaded on
later starts (137 MB of int8, packed again for fbgemm: ~0.2 s idle, 0.8 s as the app starts, read in
the background while the model loads: :class:`Prefetch`). The file is written only after the self-check
passed, and its name carries everything it depends on, so a file that exists was checked with this
torch on this kind of CPU.

Format: one ``safetensors`` file. ``layers.<i>.<matrix>.q`` (int8 ``[out, in]``) and ``.scale`` (float32
``[out]``) for ``qkv``, ``o``, ``gate_up`` and ``down`` of every layer, ``lm_head.q``/``lm_head.scale``;
metadata ``format``, ``quantize``, ``reduce_range``, ``layers``. Only the ``int8`` kind is stored.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

from .qlinear import DynamicInt8Linear, has_vnni

log = logging.getLogger(__name__)

FORMAT = "1"
MATRICES = ("qkv", "o", "gate_up", "down")


def store_path(cache_dir: Path, weights_key: str, quantize: str) -> Path:
    """Where the fast weights of the model whose weights file has ``weights_key`` (its sha256) live."""
    build = re.sub(r"[^A-Za-z0-9.]+", "_", torch.__version__)
    cpu = "vnni" if has_vnni() else "novnni"
    return Path(cache_dir) / "fast" / f"{weights_key[:32]}-{quantize}-torch{build}-{cpu}-v{FORMAT}.safetensors"


def save(impl: Any, path: Path) -> None:
    """Write the int8 matrices of ``impl`` (a :class:`~.llama.LlamaFast` with ``quantize="int8"``) to ``path``.

    Atomic: written to a temporary file in the same folder, then renamed, so a reader never sees half.
    """
    from safetensors.torch import save_file

    if impl.quantize != "int8" or impl.head_quantize != "int8":
        raise ValueError("only the int8 kind is stored")
    tensors: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(impl.layers):
        for name in MATRICES:
            q, scale = getattr(layer, name).int8()
            tensors[f"layers.{i}.{name}.q"] = q
            tensors[f"layers.{i}.{name}.scale"] = scale
    tensors["lm_head.q"], tensors["lm_head.scale"] = impl.lm_head.int8()
    reduce_range = impl.lm_head.reduce_range
    meta = {"format": FORMAT, "quantize": "int8", "reduce_range": str(bool(reduce_range)),
            "layers": str(len(impl.layers))}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, n_layers: int) -> dict[str, DynamicInt8Linear] | None:
    """The stored int8 layers (``"layers.<i>.<matrix>"`` and ``"lm_head"``), or ``None`` when ``path`` is
    missing, unreadable or for another layout (the caller then builds them again)."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("quantize") != "int8" or meta.get("layers") != str(n_layers):
                log.warning("Ignoring fast weights in %s: another format or model layout", path)
                return None
            reduce_range = meta.get("reduce_range") == "True"
            names = [f"layers.{i}.{m}" for i in range(n_layers) for m in MATRICES] + ["lm_head"]
            return {name: DynamicInt8Linear.from_int8(f.get_tensor(f"{name}.q"), f.get_tensor(f"{name}.scale"),
                                                      reduce_range=reduce_range)
                    for name in names}
    except Exception as e:  # noqa: BLE001 - a damaged file is rebuilt, never fatal
        log.warning("Ignoring unreadable fast weights in %s (%s: %s)", path, type(e).__name__, e)
        return None


class Prefetch:
    """:func:`load` run in a background thread, started as soon as the weights' key is known.

    Reading and packing the int8 matrices happens in torch with the GIL released, so it overlaps the
    tokenizer's and the model's Python-bound loading (imports, JSON) instead of following it: measured
    on 2 cores, a store load beside a tokenizer load took 2.1-2.3 s for both instead of 2.7-2.9 s one
    after the other. :meth:`result` waits for it and returns what :func:`load` would have.
    """

    def __init__(self, path: Path, n_layers: int) -> None:
        self.path = Path(path)
        self.n_layers = n_layers
        self._result: dict[str, DynamicInt8Linear] | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name="fast-store-prefetch", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = load(self.path, self.n_layers)
        finally:
            self._done.set()

    def result(self) -> dict[str, DynamicInt8Linear] | None:
        """The stored layers (or ``None``, as from :func:`load`), once the background read has ended."""
        self._done.wait()
        return self._result

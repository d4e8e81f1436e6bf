"""Linear layers for the fast CPU decode path: the same ``y = x @ W.T`` with fewer bytes per weight.

Decoding one token of a small model on a CPU is bound by memory traffic: every weight is read once
per token. Storing weights as int8 (1 byte instead of 4) is where the speed comes from. Each class
here is built once from a float weight matrix ``[out, in]`` and then called on float32 activations
``[rows, in]``, returning float32 ``[rows, out]``. None keeps a reference to the float weight.

Kinds (see :func:`make_linear`):

- ``"int8"`` — :class:`DynamicInt8Linear`: weights int8 per output channel; activations quantized to
  8 bits per call (one range per row) and multiplied with integer kernels (fbgemm / oneDNN through
  ``torch.ops.quantized.linear_dynamic``). Fastest on x86 for both one token and a whole prompt.
- ``"int8wo"`` — :class:`WeightOnlyInt8Linear`: int8 weights, bfloat16 activations
  (``torch._weight_int8pack_mm``); activations keep more precision, prompts are slower.
- ``"float32"`` — :class:`FloatLinear`: a plain float32 copy; the exact reference.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F

# Quantize big matrices a slice of rows at a time, so building never holds a second float copy.
_ROWS_PER_SLICE = 4096


def has_vnni() -> bool:
    """Whether this x86 CPU has VNNI int8 dot products (``avx512_vnni`` or ``avx_vnni`` in /proc/cpuinfo)."""
    global _VNNI
    if _VNNI is None:
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line for line in f if line.startswith("flags")), "").split()
            _VNNI = "avx512_vnni" in flags or "avx_vnni" in flags
        except OSError:
            _VNNI = False
    return _VNNI


_VNNI: bool | None = None


def int8_per_row(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization, one scale per output row: ``weight ≈ q * scale[:, None]``."""
    rows = weight.shape[0]
    q = torch.empty(weight.shape, dtype=torch.int8)
    scale = torch.empty(rows, dtype=torch.float32)
    for start in range(0, rows, _ROWS_PER_SLICE):
        w = weight[start:start + _ROWS_PER_SLICE].detach().float()
        s = (w.abs().amax(dim=1) / 127.0).clamp_(min=1e-12)
        q[start:start + _ROWS_PER_SLICE] = torch.round(w / s[:, None]).clamp_(-127, 127).to(torch.int8)
        scale[start:start + _ROWS_PER_SLICE] = s
    return q, scale


class FloatLinear:
    """float32 ``F.linear`` on a private contiguous copy of the weight (the exact reference)."""

    kind = "float32"

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.detach().to(torch.float32).contiguous().clone()
        self.out_features, self.in_features = self.weight.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * 4


class DynamicInt8Linear:
    """int8 weights (per output row) × activations quantized on the fly, integer matmul (fbgemm/oneDNN).

    ``reduce_range`` keeps fbgemm's 7-bit activation range, which avoids int16 overflow inside its
    kernels on CPUs without VNNI (it is what ``torch.ao`` dynamic quantization uses). On CPUs with VNNI
    (int32 accumulation) the full 8 bits are used: measured on SmolLM2, half the prefill error and faster.
    """

    kind = "int8"

    def __init__(self, weight: torch.Tensor | None, *, reduce_range: bool | None = None,
                 int8: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        if reduce_range is None:
            reduce_range = not has_vnni()
        q, scale = int8 if int8 is not None else int8_per_row(weight)
        self.out_features, self.in_features = q.shape
        self.reduce_range = reduce_range
        with warnings.catch_warnings():
            # Quantized-tensor constructors warn that they are deprecated; they still work in 2.13,
            # and :func:`available_kinds` checks at run time before this kind is offered.
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(
                q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0
            )
            self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        self._probe = torch.zeros(1, self.in_features)
        self._probe[0, 0] = 1.0
        self._probe[0, min(1, self.in_features - 1)] = -1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 1:
            # One row (a single request's decode step, the common case): fbgemm's own range for the input,
            # [min, max] of this row, is already a per-row quantization. One tensor operation: on a 2-core
            # CPU every extra small op costs ~1 % of a token (measured: 68 vs 55 tok/s against the form
            # below), and its logits are as close to float32 (mean relative error 0.128 vs 0.157 over
            # 8 prompts x 24 steps; top-1 agreement 0.91 vs 0.92).
            return torch.ops.quantized.linear_dynamic(x2, self.packed, self.reduce_range).reshape(
                *shape[:-1], self.out_features)
        # Several rows (a prompt, a batch): fbgemm quantizes the whole input with one range, so a row's
        # result would depend on the other rows (and a prompt's outlier tokens would ruin the rest).
        # Scaling every row to absolute maximum 1 and adding a probe row [1, -1, 0...] pins the range to
        # exactly [-1, 1]: each row is then quantized on its own, identically in any batch.
        # (+1e-30 keeps an all-zero row finite; it changes no other value.)
        # (abs().amax() rather than an inf-norm: the same value, 3-10x faster on several rows.)
        amax = x2.abs().amax(dim=1, keepdim=True) + 1e-30
        y = torch.ops.quantized.linear_dynamic(torch.cat([x2 / amax, self._probe]), self.packed,
                                               self.reduce_range)
        return (y[:-1] * amax).reshape(*shape[:-1], self.out_features)

    @classmethod
    def from_int8(cls, q: torch.Tensor, scale: torch.Tensor, *, reduce_range: bool) -> "DynamicInt8Linear":
        """The layer from already quantized weights (``q`` int8 ``[out, in]``, ``scale`` ``[out]``), e.g. stored."""
        if q.dtype != torch.int8 or q.dim() != 2 or scale.shape != (q.shape[0],):
            raise ValueError("expected int8 weights [out, in] and one scale per output row")
        return cls(None, reduce_range=reduce_range, int8=(q, scale.float()))

    def int8(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The int8 weights ``[out, in]`` and their per-row scales (float32), unpacked from fbgemm's layout."""
        w, _ = torch.ops.quantized.linear_unpack(self.packed)
        return w.int_repr().contiguous(), w.q_per_channel_scales().float().contiguous()

    @property
    def nbytes(self) -> int:
        return self.out_features * self.in_features  # the packed int8 matrix (plus small scales)


class WeightOnlyInt8Linear:
    """int8 weights (per output row), bfloat16 activations: ``torch._weight_int8pack_mm``."""

    kind = "int8wo"

    def __init__(self, weight: torch.Tensor) -> None:
        self.q, scale = int8_per_row(weight)
        self.scale = scale.to(torch.bfloat16)
        self.out_features, self.in_features = self.q.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(torch.bfloat16), self.q, self.scale)
        return y.to(torch.float32).reshape(*shape[:-1], self.out_features)

    @property
    def nbytes(self) -> int:
        return self.q.numel() + self.scale.numel() * 2


class Int4Linear:
    """4-bit weights in groups of 32 along the input, each group with its own scale and offset.

    ``w ≈ (q - 8) * scale + zero`` with ``q`` in 0..15 (``torch._weight_int4pack_mm_for_cpu``, bfloat16
    activations, scales and offsets). Asymmetric groups of 32 are exactly GGUF's ``Q4_1`` format, so a
    model dequantized from a Q4_1 file gets its original weights back (up to the bfloat16 scales).
    """

    kind = "int4"
    group = 32

    def __init__(self, weight: torch.Tensor) -> None:
        n, k = weight.shape
        g = self.group
        if k % g:
            raise ValueError(f"int4 needs in_features divisible by {g}")
        q = torch.empty(n, k, dtype=torch.int32)
        sz = torch.empty(k // g, n, 2, dtype=torch.float32)
        for start in range(0, n, _ROWS_PER_SLICE):
            w = weight[start:start + _ROWS_PER_SLICE].detach().float().reshape(-1, k // g, g)
            lo = w.amin(dim=-1)
            scale = ((w.amax(dim=-1) - lo) / 15.0).clamp_(min=1e-12)
            codes = torch.round((w - lo[..., None]) / scale[..., None]).clamp_(0, 15)
            q[start:start + _ROWS_PER_SLICE] = codes.reshape(-1, k).to(torch.int32)
            sz[:, start:start + _ROWS_PER_SLICE, 0] = scale.t()
            sz[:, start:start + _ROWS_PER_SLICE, 1] = (lo + 8.0 * scale).t()
        self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        self.scales_zeros = sz.to(torch.bfloat16)
        self.out_features, self.in_features = n, k

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch._weight_int4pack_mm_for_cpu(
            x.reshape(-1, shape[-1]).to(torch.bfloat16), self.packed, self.group, self.scales_zeros
        )
        return y.to(torch.float32).reshape(*shape[:-1], self.out_features)

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales_zeros.numel() * 2


_KINDS: dict[str, Callable[[torch.Tensor], object]] = {
    "int8": DynamicInt8Linear,
    "int8wo": WeightOnlyInt8Linear,
    "int4": Int4Linear,
    "float32": FloatLinear,
}


def available_kinds() -> list[str]:
    """The kinds that build and run on this torch build (a tiny smoke test per kind)."""
    out = []
    w = torch.randn(16, 32)
    x = torch.randn(2, 32)
    for name, cls in _KINDS.items():
        try:
            y = cls(w)(x)
            if y.shape == (2, 16) and torch.isfinite(y).all():
                out.append(name)
        except Exception:  # noqa: BLE001 - a kind this build lacks is simply not offered
            continue
    return out


def make_linear(weight: torch.Tensor, kind: str):
    """Build the linear layer of ``kind`` (``int8``, ``int8wo`` or ``float32``) from ``weight [out, in]``."""
    try:
        cls = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown quantization {kind!r}: use one of {', '.join(_KINDS)}") from None
    return cls(weight)

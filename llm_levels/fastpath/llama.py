"""A lean forward pass of a Llama-architecture decoder, on weights copied out of a transformers model.

Why not the model's own ``forward``: a token of a 135 M model is ~25 ms of arithmetic on two cores,
and transformers' generic machinery (cache objects, masks, hooks, logits processors) adds as much again
per token in Python. This module does only what a Llama decoder needs, with everything that can be
prepared once prepared once:

- q/k/v and gate/up projections fused into one matrix each, quantized (see :mod:`.qlinear`);
- rotary position embedding as one complex multiply: the rows of the q and k projections are
  permuted from transformers' "half-split" layout to interleaved pairs (q·k is unchanged by the same
  permutation of both), and the rotations are a precomputed complex table;
- a pre-allocated key/value cache per request (:class:`KVCache`), written in place;
- grouped-query attention without copying keys: during decoding the query heads that share a
  key/value head are laid out as that head's "query rows";
- logits for the last position only.

Supported: ``LlamaForCausalLM`` (and configs of the same shape) with no biases, SiLU MLP, and a
rotary embedding whose table does not depend on the sequence length (``default``, ``linear``,
``llama3``, ``yarn``). Batches: rows of one call may sit at different positions (:meth:`decode`
takes a position per row), which is what a scheduler batching concurrent requests needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .qlinear import make_linear

# Rotary types whose inverse frequencies do not change with the sequence length.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def unsupported_reason(model: Any) -> str | None:
    """Why this fast path cannot run ``model``, or ``None`` when it can."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return "not a Llama-architecture model"
    if type(model).__name__ != "LlamaForCausalLM":
        return f"{type(model).__name__} is not LlamaForCausalLM"
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        return "projections with biases"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in STATIC_ROPE_TYPES:
        return f"rotary embedding type {rope.get('rope_type')!r}"
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if head_dim % 2 or cfg.num_attention_heads % cfg.num_key_value_heads:
        return "unusual attention head layout"
    try:
        if next(model.parameters()).device.type != "cpu":
            return "model is not on the CPU"
    except StopIteration:
        return "model has no weights"
    if getattr(getattr(model, "model", None), "layers", None) is None:
        return "unexpected module layout"
    return None


def _interleave_rows(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Reorder each head's output rows from half-split (x0..x31, y0..y31) to pairs (x0, y0, x1, y1...)."""
    half = head_dim // 2
    perm = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)
    return w.reshape(n_heads, head_dim, -1)[:, perm].reshape(n_heads * head_dim, -1)


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    qkv: Any
    o: Any
    mlp_norm: torch.Tensor
    gate_up: Any
    down: Any


class KVCache:
    """Keys and values of every layer for ``batch`` rows of up to ``capacity`` positions each.

    Row ``b`` holds one sequence; position ``p`` of it lives at index ``p``. ``lengths[b]`` is how
    many positions of row ``b`` are filled. The tensors are allocated once, uninitialised.
    """

    def __init__(self, n_layers: int, batch: int, n_kv: int, capacity: int, head_dim: int) -> None:
        shape = (n_layers, batch, n_kv, capacity, head_dim)
        self.k = torch.empty(shape, dtype=torch.float32)
        self.v = torch.empty(shape, dtype=torch.float32)
        self.capacity = capacity
        self.lengths = [0] * batch

    @property
    def nbytes(self) -> int:
        return self.k.numel() * 4 * 2


class LlamaFast:
    """The weights and forward pass (see the module docstring). Read-only after construction."""

    def __init__(self, model: Any, *, quantize: str = "int8", head_quantize: str | None = None) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"the fast path cannot run this model: {reason}")
        cfg = model.config
        inner = model.model
        self.quantize = quantize
        self.head_quantize = head_quantize or quantize
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.groups = self.n_heads // self.n_kv
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.eps = float(cfg.rms_norm_eps)
        self.vocab = cfg.vocab_size
        self.max_positions = int(cfg.max_position_embeddings)
        self.scale = self.head_dim ** -0.5

        with torch.no_grad():
            self.layers = [self._layer(layer, quantize) for layer in inner.layers]
            self.norm = inner.norm.weight.detach().float().clone()
            embed = inner.embed_tokens.weight.detach()
            # The token embedding as int8 with one scale per 32 values: exact for GGUF Q8_0 tables, and
            # a quarter of float32's memory; a lookup dequantizes only the rows it needs.
            self.embed_q, self.embed_scale = _int8_groups(embed, 32)
            self.lm_head = make_linear(model.lm_head.weight.detach(), self.head_quantize)
            rotary = inner.rotary_emb
            inv_freq = rotary.inv_freq.detach().float()
            scaling = float(getattr(rotary, "attention_scaling", 1.0))
        # cos + i·sin of position × frequency, exactly as transformers computes them (float32).
        pos = torch.arange(self.max_positions, dtype=torch.float32)
        freqs = pos[:, None] * inv_freq[None, :]
        self.rope = torch.complex(freqs.cos() * scaling, freqs.sin() * scaling)  # [positions, head_dim/2]

    def _layer(self, layer: Any, quantize: str) -> _Layer:
        att, mlp = layer.self_attn, layer.mlp
        q = _interleave_rows(att.q_proj.weight.detach(), self.n_heads, self.head_dim)
        k = _interleave_rows(att.k_proj.weight.detach(), self.n_kv, self.head_dim)
        qkv = torch.cat([q, k, att.v_proj.weight.detach()], dim=0)
        gate_up = torch.cat([mlp.gate_proj.weight.detach(), mlp.up_proj.weight.detach()], dim=0)
        return _Layer(
            attn_norm=layer.input_layernorm.weight.detach().float().clone(),
            qkv=make_linear(qkv, quantize),
            o=make_linear(att.o_proj.weight.detach(), quantize),
            mlp_norm=layer.post_attention_layernorm.weight.detach().float().clone(),
            gate_up=make_linear(gate_up, quantize),
            down=make_linear(mlp.down_proj.weight.detach(), quantize),
        )

    # ------------------------------------------------------------------------------------- pieces
    def new_cache(self, batch: int, capacity: int) -> KVCache:
        return KVCache(self.n_layers, batch, self.n_kv, min(capacity, self.max_positions), self.head_dim)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        q = self.embed_q[ids].float()  # [..., groups, 32]
        return (q * self.embed_scale[ids][..., None]).reshape(*ids.shape, self.hidden)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.hidden,), w, self.eps)

    def _rotate(self, qkv: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """Rotate the q and k parts of ``qkv [B, T, (H+Hkv)*D + ...]``; ``rope`` is ``[B or 1, T, 1, D/2]``."""
        b, t = qkv.shape[:2]
        qk = qkv[..., : (self.n_heads + self.n_kv) * self.head_dim]
        pairs = torch.view_as_complex(qk.unflatten(-1, (self.n_heads + self.n_kv, self.head_dim // 2, 2)))
        return torch.view_as_real(pairs * rope).reshape(b, t, self.n_heads + self.n_kv, self.head_dim)

    # ------------------------------------------------------------------------------------ forward
    @torch.inference_mode()
    def prefill(self, ids: list[int], cache: KVCache, row: int = 0) -> torch.Tensor:
        """Run the prompt ``ids`` into row ``row`` of ``cache`` (from its current length); last logits ``[V]``."""
        start = cache.lengths[row]
        t = len(ids)
        end = start + t
        if end > cache.capacity:
            raise ValueError(f"{end} positions do not fit a cache of {cache.capacity}")
        tok = torch.tensor([ids], dtype=torch.long)
        x = self.embed(tok)  # [1, T, H]
        rope = self.rope[start:end][None, :, None, :]
        h, d, hk = self.n_heads, self.head_dim, self.n_kv
        mask = None
        if start:
            # Later rows attend to everything before them in the cache and causally among themselves.
            mask = torch.ones(t, end, dtype=torch.bool).tril_(diagonal=start)
        for i, L in enumerate(self.layers):
            qkv = L.qkv(self._rms(x, L.attn_norm))  # [1, T, (H+2Hkv)*D]
            qk = self._rotate(qkv, rope)
            q = qk[:, :, :h].transpose(1, 2)  # [1, H, T, D]
            kc = cache.k[i, row:row + 1]
            vc = cache.v[i, row:row + 1]
            kc[:, :, start:end] = qk[:, :, h:].transpose(1, 2)
            vc[:, :, start:end] = qkv[..., (h + hk) * d:].unflatten(-1, (hk, d)).transpose(1, 2)
            a = F.scaled_dot_product_attention(
                q, kc[:, :, :end], vc[:, :, :end], attn_mask=mask, is_causal=mask is None, enable_gqa=True,
                scale=self.scale,
            )
            x = x + L.o(a.transpose(1, 2).reshape(1, t, h * d))
            x = x + self._mlp(L, x)
        cache.lengths[row] = end
        return self.lm_head(self._rms(x[0, -1:], self.norm))[0]

    @torch.inference_mode()
    def decode(self, tokens: list[int], cache: KVCache, rows: list[int] | None = None) -> torch.Tensor:
        """One step: append ``tokens[j]`` to row ``rows[j]`` of ``cache``; logits ``[len(tokens), V]``.

        Rows may be at different lengths; each attends only to its own filled positions.
        """
        rows = list(range(len(tokens))) if rows is None else rows
        b = len(tokens)
        pos = [cache.lengths[r] for r in rows]
        if max(pos) >= cache.capacity:
            raise ValueError("the cache is full")
        h, d, hk, g = self.n_heads, self.head_dim, self.n_kv, self.groups
        x = self.embed(torch.tensor(tokens, dtype=torch.long)[:, None])  # [B, 1, H]
        span = max(pos) + 1
        if b == 1:
            rope = self.rope[pos[0]:pos[0] + 1][None, :, None, :]
            mask = None
            r0 = rows[0]
            row_sel = slice(r0, r0 + 1)
        else:
            pos_t = torch.tensor(pos, dtype=torch.long)
            rope = self.rope[pos_t][:, None, None, :]
            # Row j sees positions 0..pos[j]; later slots of a shorter row are masked out.
            mask = (torch.arange(span)[None, :] <= pos_t[:, None])[:, None, None, :]
            rows_t = torch.tensor(rows, dtype=torch.long)
            contiguous = rows == list(range(rows[0], rows[0] + b))
            row_sel = slice(rows[0], rows[0] + b) if contiguous else rows_t
        for i, L in enumerate(self.layers):
            qkv = L.qkv(self._rms(x, L.attn_norm))  # [B, 1, (H+2Hkv)*D]
            qk = self._rotate(qkv, rope)  # [B, 1, H+Hkv, D]
            k_new = qk[:, 0, h:]  # [B, Hkv, D]
            v_new = qkv[:, 0, (h + hk) * d:].unflatten(-1, (hk, d))
            if b == 1:
                cache.k[i, r0, :, pos[0]] = k_new[0]
                cache.v[i, r0, :, pos[0]] = v_new[0]
            else:
                cache.k[i, rows_t, :, pos_t] = k_new
                cache.v[i, rows_t, :, pos_t] = v_new
            # The g query heads sharing a key/value head act as g query rows of that head.
            q = qk[:, 0, :h].reshape(b, hk, g, d)
            kc = cache.k[i, row_sel, :, :span]
            vc = cache.v[i, row_sel, :, :span]
            a = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, scale=self.scale)  # [B, Hkv, g, D]
            x = x + L.o(a.reshape(b, 1, h * d))
            x = x + self._mlp(L, x)
        for r in rows:
            cache.lengths[r] += 1
        return self.lm_head(self._rms(x[:, 0], self.norm))

    def _mlp(self, L: _Layer, x: torch.Tensor) -> torch.Tensor:
        gu = L.gate_up(self._rms(x, L.mlp_norm))
        gate, up = gu.chunk(2, dim=-1)
        return L.down(F.silu(gate) * up)

    @property
    def nbytes(self) -> int:
        """Bytes of the fast weights (quantized matrices, embedding table, norms, rotary table)."""
        mats = sum(m.nbytes for L in self.layers for m in (L.qkv, L.o, L.gate_up, L.down)) + self.lm_head.nbytes
        return mats + self.embed_q.numel() + self.embed_scale.numel() * 4 + self.rope.numel() * 8


def _int8_groups(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 with one float32 scale per ``group`` consecutive values of a row: ``[R, C/group, group]``."""
    rows, cols = w.shape
    if cols % group:
        group = cols  # falls back to one scale per row
    q = torch.empty(rows, cols // group, group, dtype=torch.int8)
    s = torch.empty(rows, cols // group, dtype=torch.float32)
    for start in range(0, rows, 4096):
        blk = w[start:start + 4096].float().reshape(-1, cols // group, group)
        sc = (blk.abs().amax(dim=-1) / 127.0).clamp_(min=1e-12)
        q[start:start + 4096] = torch.round(blk / sc[..., None]).clamp_(-127, 127).to(torch.int8)
        s[start:start + 4096] = sc
    return q, s

"""A lean Llama decode step on int8 copies of a transformers model's weights.

Why not the model's own ``forward`` for every token: decoding one token of a small model on a CPU is
bound by reading the weights (540 MB in float32 for SmolLM2-135M), and transformers' generic machinery
(cache objects, masks, hooks, logits processors) adds Python work per token. This module does only what
a Llama decoder step needs, with everything that can be prepared once prepared once:

- q/k/v and gate/up projections fused into one matrix each, quantized (see :mod:`.qlinear`);
- rotary position embedding as one complex multiply: the rows of the q and k projections are
  permuted from transformers' "half-split" layout to interleaved pairs (q·k is unchanged by the same
  permutation of both), and the rotations are a precomputed complex table;
- a pre-allocated key/value cache per request (:class:`KVCache`), written in place;
- grouped-query attention without copying keys: the query heads that share a key/value head are laid
  out as that head's "query rows";
- logits for the last position only.

The prompt (prefill) takes the same quantized matrices, all positions in one call. The int8 layers
quantize each row (token) with its own scale (see :class:`.qlinear.DynamicInt8Linear`): with one scale
for a whole prompt, the large outlier activations of small models ruined the rest (measured: the first
answer token differed from the plain model's on 3 of 4 prompts; per row, greedy answers agree with
the plain model for the first 6 to 32 tokens on 6 prompts, like a float32 prefill would). A single
row (one request decoding alone) takes fbgemm's own range for that row, a batch the scaled form: a row
never depends on its batch companions, but alone and batched round slightly differently.

Batches: :meth:`LlamaFast.decode` takes one token and one cache per row; rows may sit at different
positions. The weight matrices are read once for all rows; attention runs per row on its own cache.

Supported: ``LlamaForCausalLM`` with no biases, SiLU MLP, and a rotary embedding whose table does not
depend on the sequence length (``default``, ``linear``, ``llama3``, ``yarn``), on the CPU, float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

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
        p = next(model.parameters())
    except StopIteration:
        return "model has no weights"
    if p.device.type != "cpu":
        return "model is not on the CPU"
    if p.dtype != torch.float32:
        return f"model weights are {str(p.dtype).replace('torch.', '')}, not float32"
    if getattr(getattr(model, "model", None), "layers", None) is None:
        return "unexpected module layout"
    return None


def _projection_weights(layer: Any) -> list[torch.Tensor]:
    """The float32 matrices of a decoder layer that the fast path replaces with int8 copies."""
    att, mlp = layer.self_attn, layer.mlp
    return [m.weight for m in (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj,
                               mlp.down_proj)]


def release_layer_pages(fast: "LlamaFast", layer: Any) -> int:
    """Give back the file-mapped pages of ``layer``'s float32 projections (they fault back in when read)."""
    return fast.pages.release(_projection_weights(layer))


def _perm(head_dim: int) -> torch.Tensor:
    """Half-split (x0..x31, y0..y31) to interleaved pairs (x0, y0, x1, y1...): ``new[j] = old[perm[j]]``."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)


def _interleave_rows(w: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Reorder each head's output rows of a projection weight to the interleaved layout."""
    return w.reshape(n_heads, head_dim, -1)[:, _perm(head_dim)].reshape(n_heads * head_dim, -1)


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    qkv: Any
    o: Any
    mlp_norm: torch.Tensor
    gate_up: Any
    down: Any


class KVCache:
    """Keys and values of every layer for one sequence of up to ``capacity`` positions.

    Keys are stored rotated, in the interleaved layout; ``length`` positions are filled. The tensors are
    allocated once, uninitialised: ``[layers, kv heads, capacity, head dim]`` each.
    """

    def __init__(self, n_layers: int, n_kv: int, capacity: int, head_dim: int) -> None:
        shape = (n_layers, n_kv, capacity, head_dim)
        self.k = torch.empty(shape, dtype=torch.float32)
        self.v = torch.empty(shape, dtype=torch.float32)
        self.capacity = capacity
        self.length = 0

    @property
    def nbytes(self) -> int:
        return self.k.numel() * 4 * 2


class LlamaFast:
    """The fast weights and the decode step (see the module docstring). Read-only after construction.

    Keeps a reference to ``model`` (for its embedding table, shared, and for checks against it); the
    quantized copies of the projection and output matrices are its only extra memory.
    """

    def __init__(self, model: Any, *, quantize: str = "int8", head_quantize: str | None = None,
                 stored: Mapping[str, Any] | None = None) -> None:
        reason = unsupported_reason(model)
        if reason:
            raise ValueError(f"the fast path cannot run this model: {reason}")
        cfg = model.config
        inner = model.model
        self.model = model
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
        self.key_perm = _perm(self.head_dim)

        from .pages import PageReleaser

        #: Drops float32 pages this path no longer needs (only file-mapped ones; see :mod:`.pages`).
        self.pages = PageReleaser()
        if stored is not None and (quantize, self.head_quantize) != ("int8", "int8"):
            raise ValueError("stored fast weights are int8")
        with torch.no_grad():
            self.layers = []
            for i, layer in enumerate(inner.layers):
                if stored is not None:  # int8 matrices saved by an earlier start (see .store): no float read
                    self.layers.append(self._stored_layer(layer, {m: stored[f"layers.{i}.{m}"]
                                                                  for m in ("qkv", "o", "gate_up", "down")}))
                else:
                    self.layers.append(self._layer(layer, quantize))
                    self.pages.release(_projection_weights(layer))
            self.norm = inner.norm.weight.detach().float().clone()
            # The embedding table is shared with the model (a lookup reads one row: no need for a copy).
            self.embed_weight = inner.embed_tokens.weight.detach()
            self.lm_head = (stored["lm_head"] if stored is not None
                            else make_linear(model.lm_head.weight.detach(), self.head_quantize))
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

    def _stored_layer(self, layer: Any, mats: Mapping[str, Any]) -> _Layer:
        expected = {"qkv": (self.n_heads + 2 * self.n_kv) * self.head_dim, "o": self.hidden,
                    "gate_up": 2 * layer.mlp.gate_proj.weight.shape[0], "down": self.hidden}
        for name, rows in expected.items():
            if mats[name].out_features != rows:
                raise ValueError(f"stored {name} has {mats[name].out_features} rows, the model needs {rows}")
        return _Layer(
            attn_norm=layer.input_layernorm.weight.detach().float().clone(),
            qkv=mats["qkv"], o=mats["o"],
            mlp_norm=layer.post_attention_layernorm.weight.detach().float().clone(),
            gate_up=mats["gate_up"], down=mats["down"],
        )

    # ------------------------------------------------------------------------------------- pieces
    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(self.n_layers, self.n_kv, min(capacity, self.max_positions), self.head_dim)

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (self.hidden,), w, self.eps)

    # ------------------------------------------------------------------------------------ forward
    @torch.inference_mode()
    def prefill(self, ids: Sequence[int], cache: KVCache) -> torch.Tensor:
        """Run the prompt into an empty ``cache`` (all positions in one pass); the last position's logits ``[V]``."""
        t = len(ids)
        if cache.length:
            raise ValueError("prefill needs an empty cache")
        if t > cache.capacity:
            raise ValueError(f"{t} positions do not fit a cache of {cache.capacity}")
        h, d, hk = self.n_heads, self.head_dim, self.n_kv
        nqk = (h + hk) * d
        x = F.embedding(torch.tensor(list(ids), dtype=torch.long), self.embed_weight)  # [T, H]
        rope = self.rope[:t][:, None, :]  # [T, 1, D/2]
        for i, L in enumerate(self.layers):
            qkv = L.qkv(self._rms(x, L.attn_norm))  # [T, (H+2Hkv)*D]
            pairs = torch.view_as_complex(qkv[:, :nqk].unflatten(-1, (h + hk, d // 2, 2)))
            qk = torch.view_as_real(pairs * rope).reshape(t, h + hk, d)
            cache.k[i, :, :t] = qk[:, h:].transpose(0, 1)
            cache.v[i, :, :t] = qkv[:, nqk:].unflatten(-1, (hk, d)).transpose(0, 1)
            a = F.scaled_dot_product_attention(
                qk[:, :h].transpose(0, 1)[None], cache.k[i, :, :t][None], cache.v[i, :, :t][None],
                is_causal=True, enable_gqa=True, scale=self.scale)[0]  # [H, T, D]
            x = x + L.o(a.transpose(0, 1).reshape(t, h * d))
            x = x + self._mlp(L, x)
        cache.length = t
        return self.lm_head(self._rms(x[-1:], self.norm))[0]

    @torch.inference_mode()
    def decode(self, tokens: Sequence[int], caches: Sequence[KVCache]) -> torch.Tensor:
        """One step: append ``tokens[j]`` to ``caches[j]``; logits ``[len(tokens), V]``.

        The matrices are applied to all rows at once; each row attends only to its own cache.
        """
        b = len(tokens)
        if b != len(caches) or b == 0:
            raise ValueError("one cache per token is needed")
        pos = [c.length for c in caches]
        if any(p >= c.capacity for p, c in zip(pos, caches)):
            raise ValueError("the cache is full")
        h, d, hk, g = self.n_heads, self.head_dim, self.n_kv, self.groups
        x = F.embedding(torch.tensor(tokens, dtype=torch.long), self.embed_weight)  # [B, H]
        rope = self.rope[torch.tensor(pos, dtype=torch.long)][:, None, :]  # [B, 1, D/2]
        nqk = (h + hk) * d
        for i, L in enumerate(self.layers):
            qkv = L.qkv(self._rms(x, L.attn_norm))  # [B, (H+2Hkv)*D]
            pairs = torch.view_as_complex(qkv[:, :nqk].unflatten(-1, (h + hk, d // 2, 2)))
            qk = torch.view_as_real(pairs * rope).reshape(b, h + hk, d)  # rotated q and k
            v_new = qkv[:, nqk:].unflatten(-1, (hk, d))
            outs = []
            for j, c in enumerate(caches):
                p = pos[j]
                c.k[i, :, p] = qk[j, h:]
                c.v[i, :, p] = v_new[j]
                # The g query heads sharing a key/value head act as g query rows of that head.
                q = qk[j, :h].reshape(hk, g, d)
                outs.append(F.scaled_dot_product_attention(q, c.k[i, :, :p + 1], c.v[i, :, :p + 1],
                                                           scale=self.scale))
            a = outs[0].reshape(1, h * d) if b == 1 else torch.stack(outs).reshape(b, h * d)
            x = x + L.o(a)
            x = x + self._mlp(L, x)
        for c in caches:
            c.length += 1
        return self.lm_head(self._rms(x, self.norm))

    def _mlp(self, L: _Layer, x: torch.Tensor) -> torch.Tensor:
        gu = L.gate_up(self._rms(x, L.mlp_norm))
        gate, up = gu.chunk(2, dim=-1)
        return L.down(F.silu(gate) * up)

    @property
    def nbytes(self) -> int:
        """Bytes of the fast copies (quantized matrices, norms, rotary table); the embedding is shared."""
        mats = sum(m.nbytes for L in self.layers for m in (L.qkv, L.o, L.gate_up, L.down)) + self.lm_head.nbytes
        return mats + self.rope.numel() * 8

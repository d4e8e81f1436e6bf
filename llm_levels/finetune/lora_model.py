"""The model a fine-tune trains: low-rank adapters (LoRA, via ``peft``) on the top layers of a local model.

:class:`LoraClassifier` wraps a model loaded on the transformers engine (a
:class:`~llm_levels.engine.transformers_loader.LoadedModel`) without changing it: it builds a second module
tree that *shares* the loaded model's weight tensors (no second copy in memory) and puts the adapters into
that tree only, so Chat and the Lab's score method keep running the plain model meanwhile.

Why it is cheap on a CPU:

- **Only the top layers learn.** Adapters go into the last ``layers`` decoder layers; the layers below
  them are frozen, so their output for a sentence never changes during training. It is computed once per
  sentence (:meth:`LoraClassifier.encode`, under ``inference_mode``) and every epoch runs only the top
  layers, forward and backward.
- **The shared prompt is computed once per batch.** Every row's prompt starts with the same instructions;
  a batch is packed into one sequence ``[shared prefix, row 1, row 2, ...]`` whose attention mask lets
  each row see the prefix and itself only, with each row's positions continuing the prefix's (as if it
  were its own prompt). The rows cost only their own tokens.
- **Logits only where the answer is.** The prompt ends where the assistant's answer starts; the output
  layer is applied at that one position per row, never at the prompt's own tokens. Its rows for the labels'
  first tokens (3 rows instead of the whole vocabulary) are the classifier: predictions and metrics. The
  training loss (see :mod:`.train`) is the cross-entropy of the gold label's token there.

Models with the Llama layout (``model.model.layers`` and ``model.model.norm``: Llama, SmolLM, Qwen,
Mistral...) are supported; others, and seq2seq models, are refused with a clear message.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import BackendError, Message
from ..icl.data import Example
from ..icl.prompts import get_template

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..engine.transformers_loader import LoadedModel


@dataclass(frozen=True)
class LoraSettings:
    """The adapters' shape: rank, scale, how many top layers get them, dropout."""

    rank: int = 8
    alpha: int = 16
    #: Adapters in the last ``layers`` decoder layers (0 or more than the model has: all of them).
    layers: int = 6
    dropout: float = 0.0


def shared_copy(model: Any) -> Any:
    """A new module tree over the same parameter and buffer tensors as ``model`` (no weights copied).

    Adapters injected into the copy replace the copy's modules only; the original tree is untouched. (peft
    marks the shared weights as needing no gradient, which the app's inference never asks for anyway.)
    """
    memo: dict[int, Any] = {id(p): p for p in model.parameters()}
    memo.update({id(b): b for b in model.buffers()})
    return copy.deepcopy(model, memo)


def _layer_linears(model: Any) -> list[str]:
    """The names of the linear maps inside the decoder layers (``q_proj``, ``up_proj``...), or [] when the
    model does not keep its layers at ``model.model.layers``."""
    import torch

    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return []
    return sorted({name.rsplit(".", 1)[-1] for name, m in layers[0].named_modules() if isinstance(m, torch.nn.Linear)})


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> list[int]:
    """The first token of each label as the answer's first word; raises when two labels share it."""
    ids: list[int] = []
    for lab in labels:
        toks = list(tokenizer(lab, add_special_tokens=False)["input_ids"])
        if not toks:
            raise BackendError(f"The label {lab!r} has no tokens for this model.", kind="bad_request", status=400)
        ids.append(int(toks[0]))
    if len(set(ids)) < len(ids):
        raise BackendError(
            "Two labels start with the same token for this model, so one answer position cannot tell them "
            "apart: rename the labels so that their first words differ.",
            kind="bad_request",
            status=400,
        )
    return ids


@dataclass
class Encoded:
    """Sentences ready for the trained layers: the shared prompt prefix and each row's own part (token ids,
    or the frozen layers' output for them)."""

    prefix: Any
    rows: list[Any]
    #: Each row ends with its gold label's token (training): the answer position is one before the end.
    with_answers: bool = False

    def take(self, index: Sequence[int]) -> Encoded:
        return Encoded(self.prefix, [self.rows[i] for i in index], self.with_answers)


class LoraClassifier:
    """A loaded causal model with fresh LoRA adapters, read as a classifier over ``labels``.

    ``template`` is the Lab's prompt template (zero-shot) the sentences are asked with, in training and
    after: the adapter learns to answer that prompt.
    """

    def __init__(self, loaded: LoadedModel, labels: Sequence[str], lora: LoraSettings, template: str) -> None:
        from peft import LoraConfig, get_peft_model

        names = _layer_linears(loaded.model)
        if getattr(loaded, "is_seq2seq", False) or not names or getattr(loaded.model.model, "norm", None) is None:
            raise BackendError(
                "Fine-tuning here needs a decoder-only model with the usual layout (model.layers: Llama, "
                f"SmolLM, Qwen, Mistral...); {loaded.display_name} is not one.",
                kind="bad_request",
                status=400,
            )
        from ..backends.local_hf import LocalBackend

        self.loaded, self.labels, self.lora, self.template = loaded, tuple(labels), lora, template
        self._renderer = LocalBackend(loaded)  # renders prompts exactly as chat does (the chat template)
        self.label_ids = label_token_ids(loaded.tokenizer, self.labels)
        n_layers = len(loaded.model.model.layers)
        top = n_layers if lora.layers <= 0 or lora.layers > n_layers else lora.layers
        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=names,  # the layers' linear maps (attention and MLP) ...
            layers_to_transform=list(range(n_layers - top, n_layers)),  # ... in the top layers only
            bias="none",
        )
        with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            self.peft = get_peft_model(shared_copy(loaded.model), config)
        inner = self.peft.base_model.model
        self._decoder = inner.model
        self._layers = self._decoder.layers
        self.split = n_layers - top
        # The label rows of the output layer (tied to the input embeddings in small models): frozen.
        self._vocab = inner.get_output_embeddings().weight.detach()
        self._head = self._vocab[self.label_ids]
        # What ends the assistant's reply (``<|im_end|>`` in ChatML): learnt after the label.
        self.end_id = _end_token(loaded.tokenizer)

    # ------------------------------------------------------------------ prompts
    def messages(self, text: str) -> list[Message]:
        """The zero-shot prompt for one sentence (the template the adapter is trained and used with)."""
        return get_template(self.template).messages(text, [], self.labels)

    def prompt_ids(self, text: str) -> list[int]:
        """The prompt's token ids, ending where the answer starts."""
        return list(self._renderer.prepare(self.messages(text)).ids)

    @property
    def trainable_parameters(self) -> list[Any]:
        return [p for p in self.peft.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ the split forward
    @contextmanager
    def _only(self, part: str) -> Iterator[None]:
        """Run the decoder on the frozen bottom layers (no final norm) or on the top layers only."""
        import torch

        dec = self._decoder
        layers, norm = self._layers, dec.norm
        dec.layers = torch.nn.ModuleList(list(layers)[: self.split] if part == "bottom" else list(layers)[self.split :])
        if part == "bottom":
            dec.norm = torch.nn.Identity()
        try:
            yield
        finally:
            dec.layers, dec.norm = layers, norm

    def encode(self, examples: Sequence[Example], batch_size: int = 8, *, with_answers: bool = False) -> Encoded:
        """The sentences' prompts split into the shared prefix and each row's part, run through the frozen
        layers once (token ids when every layer is trained).

        ``with_answers`` (training) appends each row's gold label token after its prompt, so the position
        after the answer can learn to end the reply; causal attention keeps the answer position blind to it.
        """
        import torch

        ids = [self.prompt_ids(e.text) for e in examples]
        if with_answers:
            ids = [x + [self.label_ids[self.labels.index(e.label)]] for x, e in zip(ids, examples)]
        # Keep at least one token of every row outside the prefix: its output is the answer position.
        p_len = min(len(_common_prefix(ids)), min(len(x) for x in ids) - 1)
        as_tensor = [torch.tensor(x, dtype=torch.long, device=self._device()) for x in ids]
        prefix, rows = as_tensor[0][:p_len], [x[p_len:] for x in as_tensor]
        if self.split == 0:
            return Encoded(prefix, rows, with_answers)
        states: list[Any] = []
        prefix_state = None
        with torch.inference_mode(), self._only("bottom"):
            for i in range(0, len(rows), batch_size):
                x, mask, pos, spans = pack(prefix, rows[i : i + batch_size])
                hidden = self._decoder(input_ids=x, attention_mask=mask, position_ids=pos).last_hidden_state[0]
                if prefix_state is None:
                    prefix_state = hidden[:p_len].clone()
                states.extend(hidden[a:b].clone() for a, b in spans)
        return Encoded(prefix_state, states, with_answers)

    def answer_states(self, enc: Encoded, *, after: bool = False) -> torch.Tensor:
        """(rows, hidden) the model's last hidden state at each row's answer position; with ``after`` (rows
        encoded ``with_answers`` only), also at the answer token itself: (2, rows, hidden)."""
        import torch

        x, mask, pos, spans = pack(enc.prefix, enc.rows)
        if self.split == 0:
            hidden = self._decoder(input_ids=x, attention_mask=mask, position_ids=pos).last_hidden_state
        else:
            with self._only("top"):
                hidden = self._decoder(inputs_embeds=x, attention_mask=mask, position_ids=pos).last_hidden_state
        back = 2 if enc.with_answers else 1
        answer = hidden[0, torch.tensor([b - back for _, b in spans], device=hidden.device)]
        if not after:
            return answer
        return torch.stack([answer, hidden[0, torch.tensor([b - 1 for _, b in spans], device=hidden.device)]])

    def label_logits(self, enc: Encoded) -> torch.Tensor:
        """(rows, labels) logits at each row's answer position: the output layer's label rows only."""
        return self.answer_states(enc) @ self._head.T

    @property
    def label_rows(self) -> torch.Tensor:
        """(labels, hidden) the output layer's rows of the labels' first tokens (frozen)."""
        return self._head

    def vocab_logits(self, states: torch.Tensor) -> torch.Tensor:
        """(rows, vocabulary) logits of answer states (:meth:`answer_states`): the whole output layer, at
        the answer positions only."""
        return states @ self._vocab.T

    def _device(self) -> Any:
        return self._head.device

    def save(self, folder: str) -> None:
        """Write the adapter (peft's ``adapter_config.json`` + ``adapter_model.safetensors``) into ``folder``."""
        self.peft.save_pretrained(folder)


def pack(prefix: Any, rows: Sequence[Any]) -> tuple[Any, Any, Any, list[tuple[int, int]]]:
    """One sequence ``[prefix, row 1, row 2, ...]`` (token ids or hidden states), its attention mask, its
    position ids and each row's (start, end) in it.

    The mask (a boolean 4-d mask, which transformers' attention takes as it is) lets a row's tokens see the
    prefix and the row's earlier tokens, never another row; a row's positions continue the prefix's. So
    each row is computed exactly as its own ``prefix + row`` prompt would be, and the prefix only once.
    """
    import torch

    dev = prefix.device
    p_len = prefix.shape[0]
    seq = torch.cat([prefix, *rows], dim=0).unsqueeze(0)
    seg = [torch.full((p_len,), -1, dtype=torch.long, device=dev)]
    pos = [torch.arange(p_len, device=dev)]
    spans: list[tuple[int, int]] = []
    start = p_len
    for i, r in enumerate(rows):
        n = r.shape[0]
        seg.append(torch.full((n,), i, dtype=torch.long, device=dev))
        pos.append(torch.arange(p_len, p_len + n, device=dev))
        spans.append((start, start + n))
        start += n
    segment = torch.cat(seg)
    total = segment.shape[0]
    causal = torch.ones(total, total, dtype=torch.bool, device=dev).tril()
    visible = (segment.unsqueeze(1) == segment.unsqueeze(0)) | (segment.unsqueeze(0) == -1)
    return seq, (causal & visible)[None, None], torch.cat(pos).unsqueeze(0), spans


def _common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    i = 0
    while i < n and all(s[i] == first[i] for s in seqs):
        i += 1
    return list(first[:i])


def _end_token(tokenizer: Any) -> int | None:
    """The token that ends an assistant turn (the tokenizer's eos), or None."""
    eos = getattr(tokenizer, "eos_token_id", None)
    return int(eos) if isinstance(eos, int) else None

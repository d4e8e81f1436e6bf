"""The *score* method: read a label off a local model by comparing the log-likelihood of each label word.

Instead of letting the model write an answer and parsing it, the prompt (rendered by the model's own chat
template, ending with the assistant's turn) is continued with each label word in turn, and the label whose
tokens the model finds most likely wins. Every row gets a valid label, and no tokens are generated.

Speed (a 2-core CPU is the target):

- **One shared prefix.** In a run every row's prompt starts the same way (the instructions and the same
  few-shot examples); only the sentence at the end differs. The common token prefix is run through the
  model once, and its key/value cache is reused for every batch, so each row costs only its own tokens.
- **One batched pass per batch of rows.** The row suffixes are right-padded into one tensor (padding comes
  after the real tokens, so under causal attention no real token ever sees a pad; the attention mask covers
  them anyway). When every label is a single token (true for negative/neutral/positive on SmolLM2), the
  logits at each row's last real position give every label's log-probability in that same pass; otherwise
  each (row, label) pair is one sequence of the batch and the label's token log-probabilities are summed.
- ``torch.inference_mode`` throughout.

Each label is scored in a few surface forms (``positive``, ``Positive``) and the forms' probabilities are
added (log-sum-exp): a chat model often starts its answer with a capital letter, and that should count for
the label too.

Seq2seq models (Flan-T5) are scored with the prompt as the encoder input and the label as the decoder's
target (no prefix sharing: the encoder reads the whole prompt in both directions).
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core import BackendError, Message

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Scored:
    """The label a row got and the log-likelihood of every label (natural log, summed over its tokens)."""

    label: str
    logprobs: dict[str, float]


def surface_forms(label: str) -> list[str]:
    """The spellings a label is scored in: as written, and capitalised (``positive``, ``Positive``)."""
    forms = [label]
    cap = label[:1].upper() + label[1:]
    if cap != label:
        forms.append(cap)
    return forms


def _logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


class LabelScorer:
    """Scores label words after prompts with a model loaded in this process (see :mod:`llm_levels.models`).

    ``slots`` (the app's local-generation semaphore), when given, is held for each batch, so chat
    requests for the same model can run between two batches of a long lab run.
    """

    def __init__(
        self, loaded: LoadedModel, *, slots: threading.Semaphore | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        from ..backends.local_hf import LocalBackend

        self.loaded = loaded
        self.slots = slots
        self.batch_size = max(1, int(batch_size))
        # The backend renders prompts exactly as chat does (chat template, or the seq2seq fallback).
        self._renderer = LocalBackend(loaded)
        self._prefix_ids: list[int] | None = None
        self._prefix_cache: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def is_seq2seq(self) -> bool:
        return bool(self.loaded.is_seq2seq)

    # ------------------------------------------------------------------ public
    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The prompt's token ids as the model reads them, ending where the assistant's answer starts."""
        return list(self._renderer.prepare(list(messages)).ids)

    def label_ids(self, labels: Sequence[str]) -> dict[str, list[list[int]]]:
        """Token ids of each label's surface forms (as the answer's first tokens, no special tokens)."""
        tok = self.tokenizer
        out: dict[str, list[list[int]]] = {}
        for lab in labels:
            forms = []
            for form in surface_forms(lab):
                ids = list(tok(form, add_special_tokens=False)["input_ids"])
                if ids and ids not in forms:
                    forms.append(ids)
            if not forms:
                raise BackendError(f"The label {lab!r} has no tokens for this model.", kind="bad_request", status=400)
            out[lab] = forms
        return out

    def score(self, prompts: Sequence[Sequence[Message]], labels: Sequence[str]) -> list[Scored]:
        """Score every label after every prompt; one :class:`Scored` per prompt, in order.

        Call it with batches of a run (the caller reports progress and can stop between batches); the
        shared prefix is computed on the first call and reused while later prompts still start with it.
        """
        if not prompts:
            return []
        ids = [self.prompt_ids(p) for p in prompts]
        lab_ids = self.label_ids(labels)
        out: list[Scored] = []
        for start in range(0, len(ids), self.batch_size):
            chunk = ids[start : start + self.batch_size]
            self._acquire()
            try:
                if self.is_seq2seq:
                    out.extend(self._score_seq2seq(chunk, labels, lab_ids))
                else:
                    out.extend(self._score_causal(chunk, labels, lab_ids))
            finally:
                if self.slots is not None:
                    self.slots.release()
        return out

    def set_prefix(self, prompts: Sequence[Sequence[Message]]) -> int:
        """Fix the shared prefix to the tokens common to ``prompts`` (e.g. all rows of a run); returns its length.

        Optional: without it, :meth:`score` shares the prefix common to the rows of its first batch.
        """
        if self.is_seq2seq or not prompts:
            return 0
        ids = [self.prompt_ids(p) for p in prompts]
        self._set_prefix(_common_prefix(ids)[: min(len(r) for r in ids) - 1])
        return len(self._prefix_ids or [])

    # ------------------------------------------------------------------ causal LM
    def _acquire(self) -> None:
        if self.slots is not None:
            self.slots.acquire()

    def _set_prefix(self, prefix: list[int]) -> None:
        import torch

        # Keep at least one token of each prompt outside the prefix: its logits are what we read.
        if prefix == self._prefix_ids:
            return
        self._prefix_ids, self._prefix_cache = None, None
        if len(prefix) < 2:
            return
        with torch.inference_mode():
            out = self.loaded.model(
                input_ids=torch.tensor([prefix], device=self._device()),
                attention_mask=torch.ones(1, len(prefix), dtype=torch.long, device=self._device()),
                use_cache=True,
                logits_to_keep=1,
            )
        self._prefix_ids, self._prefix_cache = list(prefix), out.past_key_values

    def _device(self) -> Any:
        import torch

        try:
            return next(self.loaded.model.parameters()).device
        except (StopIteration, AttributeError):
            return torch.device("cpu")

    def _score_causal(
        self, ids: list[list[int]], labels: Sequence[str], lab_ids: dict[str, list[list[int]]]
    ) -> list[Scored]:
        import torch

        prefix = self._prefix_ids
        if prefix is None or any(len(r) <= len(prefix) or r[: len(prefix)] != prefix for r in ids):
            common = _common_prefix(ids) if len(ids) > 1 else ids[0][:-1]
            self._set_prefix(common[: min(len(r) for r in ids) - 1])
            prefix = self._prefix_ids
        p_len = len(prefix) if prefix else 0
        suffixes = [r[p_len:] for r in ids]
        n = len(suffixes)
        dev = self._device()
        pad = self._pad_id()
        width = max(len(s) for s in suffixes)
        lengths = torch.tensor([len(s) for s in suffixes], device=dev)

        # Pass 1: every row's suffix, right-padded, after the shared prefix's cache. The log-probs after
        # the last real token give the first token of every label form.
        input_ids = torch.full((n, width), pad, dtype=torch.long, device=dev)
        mask = torch.zeros((n, p_len + width), dtype=torch.long, device=dev)
        mask[:, :p_len] = 1
        for i, s in enumerate(suffixes):
            input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, p_len : p_len + len(s)] = 1
        multi = [(lab, fi, f) for lab in labels for fi, f in enumerate(lab_ids[lab]) if len(f) > 1]
        cache = None
        if p_len:
            cache = copy.deepcopy(self._prefix_cache)
            cache.batch_repeat_interleave(n)
        elif multi:
            from transformers import DynamicCache

            cache = DynamicCache()
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "use_cache": bool(multi) or p_len > 0,
            "position_ids": torch.arange(p_len, p_len + width, device=dev).unsqueeze(0).expand(n, -1),
        }
        if cache is not None:
            kwargs["past_key_values"] = cache
        with torch.inference_mode():
            first, cache = self._read_logprobs(kwargs, torch.arange(n, device=dev), lengths - 1)
            rest = self._continue_forms(cache, mask, lengths, p_len, multi, pad) if multi else None
        results: list[Scored] = []
        m_index = {(lab, fi): j for j, (lab, fi, _) in enumerate(multi)}
        for i in range(n):
            scores: dict[str, float] = {}
            for lab in labels:
                forms = []
                for fi, f in enumerate(lab_ids[lab]):
                    total = float(first[i, f[0]])
                    if len(f) > 1:
                        j = m_index[(lab, fi)]
                        total += sum(float(rest[i * len(multi) + j, t, tok]) for t, tok in enumerate(f[1:]))
                    forms.append(total)
                scores[lab] = _logsumexp(forms)
            results.append(_best(scores))
        return results

    def _continue_forms(
        self, cache: Any, mask: Any, lengths: Any, p_len: int, multi: list[tuple[str, int, list[int]]], pad: int
    ) -> Any:
        """Pass 2, for label forms of several tokens: feed each form's tokens but the last after each row.

        The new tokens sit after the padding in the cache, but the mask hides the pads and the position ids
        continue each row's own count, so the model sees ``suffix + form`` exactly. Returns log-probs of
        shape (rows x forms, tokens, vocabulary): entry t predicts the form's token t + 1.
        """
        import torch

        n, total = mask.shape
        m = len(multi)
        dev = mask.device
        steps = max(len(f) - 1 for _, _, f in multi)
        if m > 1:
            cache.batch_repeat_interleave(m)
        rows = n * m
        inp = torch.full((rows, steps), pad, dtype=torch.long, device=dev)
        new_mask = torch.zeros((rows, steps), dtype=torch.long, device=dev)
        for r in range(n):
            for j, (_, _, f) in enumerate(multi):
                cont = f[:-1]
                inp[r * m + j, : len(cont)] = torch.tensor(cont, dtype=torch.long)
                new_mask[r * m + j, : len(cont)] = 1
        full_mask = torch.cat([mask.repeat_interleave(m, dim=0), new_mask], dim=1)
        starts = (lengths + p_len).repeat_interleave(m)
        pos = starts.unsqueeze(1) + torch.arange(steps, device=dev).unsqueeze(0)
        logp, _ = self._read_logprobs(
            {
                "input_ids": inp,
                "attention_mask": full_mask,
                "position_ids": pos,
                "past_key_values": cache,
                "use_cache": True,
            },
            None,
            None,
        )
        return logp

    def _read_logprobs(self, kwargs: dict[str, Any], seq_idx: Any, pos_idx: Any) -> tuple[Any, Any]:
        """Log-probabilities of the next token at the (sequence, position) pairs asked for (all positions when
        ``seq_idx`` is None), and the updated cache.

        The output layer (vocabulary x hidden, a fifth of SmolLM2's weights) is applied only at those
        positions, not at every token of the batch: the decoder runs, then the head on the gathered states.
        """
        import torch

        model = self.loaded.model
        decoder = getattr(model, "model", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if decoder is not None and head is not None and callable(decoder):
            out = decoder(**kwargs)
            hidden = out.last_hidden_state
            logits = head(hidden if seq_idx is None else hidden[seq_idx, pos_idx])
        else:  # an unusual model class: the full forward (logits at every position)
            out = model(**kwargs)
            logits = out.logits if seq_idx is None else out.logits[seq_idx, pos_idx]
        return torch.log_softmax(logits.float(), dim=-1), getattr(out, "past_key_values", None)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for cand in (tok.pad_token_id, tok.eos_token_id, 0):
            if cand is not None:
                return int(cand)
        return 0

    # ------------------------------------------------------------------ seq2seq
    def _score_seq2seq(
        self, ids: list[list[int]], labels: Sequence[str], lab_ids: dict[str, list[list[int]]]
    ) -> list[Scored]:
        import torch

        model = self.loaded.model
        start = model.config.decoder_start_token_id
        start = self._pad_id() if start is None else int(start)
        pairs = [(r, lab, f) for r in range(len(ids)) for lab in labels for f in lab_ids[lab]]
        pad = self._pad_id()
        dev = self._device()
        enc_w = max(len(x) for x in ids)
        dec_w = max(len(f) for _, _, f in pairs)
        enc = torch.full((len(pairs), enc_w), pad, dtype=torch.long, device=dev)
        enc_mask = torch.zeros_like(enc)
        dec = torch.full((len(pairs), dec_w), pad, dtype=torch.long, device=dev)
        for i, (r, _, f) in enumerate(pairs):
            enc[i, : len(ids[r])] = torch.tensor(ids[r])
            enc_mask[i, : len(ids[r])] = 1
            dec_in = [start] + f[:-1]
            dec[i, : len(dec_in)] = torch.tensor(dec_in)
        with torch.inference_mode():
            logits = model(input_ids=enc, attention_mask=enc_mask, decoder_input_ids=dec).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        per_row: list[dict[str, list[float]]] = [{lab: [] for lab in labels} for _ in ids]
        for i, (r, lab, f) in enumerate(pairs):
            per_row[r][lab].append(sum(float(logp[i, t, tok]) for t, tok in enumerate(f)))
        return [_best({lab: _logsumexp(v) for lab, v in row.items()}) for row in per_row]


def _best(scores: dict[str, float]) -> Scored:
    label = max(scores, key=lambda lab: scores[lab])  # ties: the first label in order
    return Scored(label, {k: round(v, 4) for k, v in scores.items()})


def _common_prefix(seqs: Sequence[Sequence[int]]) -> list[int]:
    if not seqs:
        return []
    first = seqs[0]
    n = min(len(s) for s in seqs)
    i = 0
    while i < n and all(s[i] == first[i] for s in seqs):
        i += 1
    return list(first[:i])
